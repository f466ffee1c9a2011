package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/patterns"
)

func newPatternCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pattern",
		Short: "Work with patterns",
	}
	cmd.AddCommand(newPatternTestCmd())
	return cmd
}

func newPatternTestCmd() *cobra.Command {
	var path string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "test NAME ADDRESS",
		Short: "Say whether an address is in a pattern, and why",
		Long: `test says whether ADDRESS (an IP address or a mail address) is in the pattern
NAME, naming the item that holds it — or the "!" item that excludes it — with
its file and line. For a pattern with host masks it looks the client's name
up as the gateway does (PTR, confirmed by A/AAAA, through dns.resolver) and
says which name was used, or why there is none. --json prints the same as
JSON.

Exit status: 0 in the pattern, 1 not in it, 2 error.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := strings.TrimSuffix(strings.TrimPrefix(args[0], "["), "]")
			snap, err := loadSnapshot(cmd.Context(), cmd, path)
			if err != nil {
				return err
			}
			set := snap.Patterns.Lookup(name)
			if set == nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "no pattern [%s] in %s (patterns: %s)\n", name, path, strings.Join(snap.Patterns.Names(), ", "))
				return exitCode(exitError)
			}
			w := cmd.OutOrStdout()
			ans := patternAnswer{Subject: args[1], Pattern: set.String()}
			var m patterns.Match
			if addr, perr := netip.ParseAddr(args[1]); perr == nil {
				m = set.ExplainClient(cmd.Context(), addr)
				ans.GeoIP = explain.Country(snap, addr)
			} else if strings.Contains(args[1], "@") {
				m = set.ExplainMail(args[1])
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "%q is neither an IP address nor a mail address\n", args[1])
				return exitCode(exitError)
			}
			ans.In = m.In
			ans.Items, ans.ClientName = explain.Items(m)
			if asJSON {
				if err := printJSON(w, ans); err != nil {
					return err
				}
			} else {
				printCountry(w, args[1], ans.GeoIP)
				printMatch(w, &ans)
			}
			if !m.In {
				return exitCode(exitNo)
			}
			return nil
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the answer as JSON")
	return cmd
}

// patternAnswer is what `postern pattern test` finds, as --json prints it.
type patternAnswer struct {
	Subject string `json:"subject"`
	Pattern string `json:"pattern"`
	In      bool   `json:"in"`
	// Items are the items that decided, outermost pattern first: the item
	// holding the subject, or the exclusion that removed it.
	Items      []explain.Item      `json:"items"`
	ClientName *explain.ClientName `json:"client_name,omitempty"`
	GeoIP      *explain.GeoIP      `json:"geoip,omitempty"`
}

// printMatch prints a membership answer and the chain of items behind it.
func printMatch(w io.Writer, a *patternAnswer) {
	switch {
	case a.In:
		fmt.Fprintf(w, "%s is in %s\n", a.Subject, a.Pattern)
	case len(a.Items) > 0:
		fmt.Fprintf(w, "%s is not in %s: excluded\n", a.Subject, a.Pattern)
	default:
		fmt.Fprintf(w, "%s is not in %s: no item matches\n", a.Subject, a.Pattern)
	}
	printItems(w, "  ", a.Items, a.ClientName)
}

// printCountry says where the GeoIP data places addr (nothing without a
// GeoIP database).
func printCountry(w io.Writer, addr string, g *explain.GeoIP) {
	switch {
	case g == nil:
	case g.Country != "":
		fmt.Fprintf(w, "geoip: %s is in %s (%s, built %s)\n", addr, g.Country, g.Database, g.Built.Format("2006-01-02"))
	default:
		fmt.Fprintf(w, "geoip: %s is in no country of the configured databases\n", addr)
	}
}
