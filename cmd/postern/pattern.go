package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/snapshot"
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
	cmd := &cobra.Command{
		Use:   "test NAME ADDRESS",
		Short: "Say whether an address is in a pattern, and why",
		Long: `test says whether ADDRESS (an IP address or a mail address) is in the pattern
NAME, naming the item that holds it — or the "!" item that excludes it — with
its file and line. For a pattern with host masks it looks the client's name
up as the gateway does (PTR, confirmed by A/AAAA, through dns.resolver) and
says which name was used, or why there is none.

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
			var m patterns.Match
			if addr, perr := netip.ParseAddr(args[1]); perr == nil {
				m = set.ExplainClient(cmd.Context(), addr)
				printCountry(w, snap, addr)
			} else if strings.Contains(args[1], "@") {
				m = set.ExplainMail(args[1])
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "%q is neither an IP address nor a mail address\n", args[1])
				return exitCode(exitError)
			}
			printMatch(w, args[1], set, m)
			if !m.In {
				return exitCode(exitNo)
			}
			return nil
		},
	}
	configFlag(cmd, &path)
	return cmd
}

// printMatch prints a membership answer and the chain of items behind it.
func printMatch(w io.Writer, subject string, set *patterns.Set, m patterns.Match) {
	switch {
	case m.In:
		fmt.Fprintf(w, "%s is in %s\n", subject, set)
	case len(m.Steps) > 0:
		fmt.Fprintf(w, "%s is not in %s: excluded\n", subject, set)
	default:
		fmt.Fprintf(w, "%s is not in %s: no item matches\n", subject, set)
	}
	printSteps(w, "  ", m)
}

func printSteps(w io.Writer, indent string, m patterns.Match) {
	byName := false
	for _, st := range m.Steps {
		note := ""
		if st.Item.Kind == patterns.KindHost && m.Client != nil && m.Client.Name != "" {
			note = " (client name " + m.Client.Name + ", forward-confirmed)"
			byName = true
		}
		if st.Set.Name() == "" {
			fmt.Fprintf(w, "%sitem %s at %s%s\n", indent, st.Item, st.Item.Pos(), note)
			continue
		}
		fmt.Fprintf(w, "%s%s item %s at %s%s\n", indent, st.Set, st.Item, st.Item.Pos(), note)
	}
	switch c := m.Client; {
	case c == nil || byName:
	case c.Err != nil:
		fmt.Fprintf(w, "%shost masks matched nothing: no verified client name (%v)\n", indent, c.Err)
	default:
		fmt.Fprintf(w, "%sclient name %s (forward-confirmed) decided nothing here\n", indent, c.Name)
	}
}

// printCountry says where the GeoIP data places addr.
func printCountry(w io.Writer, snap *snapshot.Snapshot, addr netip.Addr) {
	if snap.GeoIP == nil {
		return
	}
	if cc, src, ok := snap.GeoIP.Country(addr); ok {
		fmt.Fprintf(w, "geoip: %s is in %s (%s, built %s)\n", addr, cc, src.Path, src.BuildTime.UTC().Format("2006-01-02"))
	} else {
		fmt.Fprintf(w, "geoip: %s is in no country of the configured databases\n", addr)
	}
}
