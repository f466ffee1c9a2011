package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/passes"
)

func newPassCmd() *cobra.Command {
	var o adminOptions
	cmd := &cobra.Command{
		Use:   "pass",
		Short: "Add, list and remove travel passes of a running postern",
		Long: `pass manages travel passes through the administration API of a running
postern (the same --admin, --token-file and -c as "postern blocks").

A travel pass lets one account (alice@example.com) or every account of a
domain (@example.com) log in from an extra list — addresses, networks,
country:XX, asn:N or [pattern], as a login restriction's list is written —
until it ends, on top of the account's login IP restriction. It ends by
itself: from its end on it allows nothing, and it is no longer listed.

Exit status: 0 done; 1 not found (no such pass); 2 any other error: bad
arguments (nothing is sent), a pass the server refuses (an account no login
restriction applies to, an unknown country, ...), postern not reachable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	pf := cmd.PersistentFlags()
	pf.StringVarP(&o.config, "config", "c", "postern.yaml", "configuration file (for admin.listen and admin.token_file)")
	pf.StringVar(&o.listen, "admin", "", "admin API address: unix:/path/admin.sock or tcp:host:port")
	pf.StringVar(&o.tokenFile, "token-file", "", "file holding the admin API token")
	cmd.AddCommand(newPassAddCmd(&o), newPassListCmd(&o), newPassRemoveCmd(&o))
	return cmd
}

func newPassAddCmd(o *adminOptions) *cobra.Command {
	var from []string
	var dur, until, comment string
	cmd := &cobra.Command{
		Use:   "add ACCOUNT --from LIST (--for DURATION | --until TIME)",
		Short: "Let an account (or @domain) log in from an extra list for a while",
		Long: `add gives ACCOUNT (alice@example.com, or @example.com for the whole
domain) a travel pass: it may log in from the --from list (repeatable; the
items are joined as with ';') until the pass ends.

--for takes 14d, 2w, 36h or 90m (at most 365d); --until an RFC 3339 time or
a date (2026-12-17, midnight UTC). Example:

  postern pass add alice@example.com --from country:TH --for 14d --comment "holiday"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rq := passes.AddRequest{Account: strings.TrimSpace(args[0]), Comment: comment}
			if err := passes.CheckAccount(strings.ToLower(rq.Account)); err != nil {
				return err
			}
			var items []string
			for _, f := range from {
				if f = strings.TrimSpace(f); f != "" {
					items = append(items, f)
				}
			}
			if len(items) == 0 {
				return fmt.Errorf("--from: want the extra list, e.g. --from country:TH")
			}
			rq.From = strings.Join(items, ";")
			switch {
			case dur != "" && until != "":
				return fmt.Errorf("give --for or --until, not both")
			case dur != "":
				if _, err := passes.ParseDuration(dur); err != nil {
					return fmt.Errorf("--for: %w", err)
				}
				rq.For = dur
			case until != "":
				t, err := parseUntil(until)
				if err != nil {
					return err
				}
				rq.Until = t
			default:
				return fmt.Errorf("give how long the pass lasts (--for 14d) or when it ends (--until 2026-12-17)")
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			p, err := c.AddPass(cmd.Context(), rq)
			if err != nil {
				return apiFailure(cmd, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pass %s: %s may log in from %s until %s UTC\n", p.ID, p.Account, p.From, shortTime(p.Until))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&from, "from", nil, "extra list: an address, network, country:XX, asn:N or [pattern] (repeatable)")
	fl.StringVar(&dur, "for", "", "how long the pass lasts: 14d, 2w, 36h (at most 365d)")
	fl.StringVar(&until, "until", "", "when the pass ends: RFC 3339 time or a date (midnight UTC)")
	fl.StringVar(&comment, "comment", "", "why (kept in the pass and the audit log)")
	return cmd
}

// parseUntil reads --until: an RFC 3339 time or a date, midnight UTC.
func parseUntil(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--until %q: want an RFC 3339 time (2026-12-17T09:00:00Z) or a date (2026-12-17)", s)
}

func newPassListCmd(o *adminOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the travel passes in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			ps, err := c.ListPasses(cmd.Context())
			if err != nil {
				return apiFailure(cmd, err)
			}
			if asJSON {
				if ps == nil {
					ps = []passes.Pass{}
				}
				return printJSON(cmd.OutOrStdout(), map[string]any{"passes": ps})
			}
			printPasses(cmd.OutOrStdout(), ps)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON as the API answers")
	return cmd
}

func printPasses(w io.Writer, ps []passes.Pass) {
	if len(ps) == 0 {
		fmt.Fprintln(w, "no travel passes")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tACCOUNT\tFROM\tUNTIL\tBY\tCOMMENT")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, cell(p.Account, 60), cell(p.From, 60), shortTime(p.Until), cell(p.By, 20), cell(p.Comment, 40))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d pass%s; times UTC\n", len(ps), map[bool]string{true: "", false: "es"}[len(ps) == 1])
}

func newPassRemoveCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a travel pass (its ID from pass list)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			p, err := c.RemovePass(cmd.Context(), args[0])
			if err != nil {
				return apiFailure(cmd, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed pass %s for %s\n", p.ID, p.Account)
			return nil
		},
	}
}
