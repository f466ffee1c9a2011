package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/preflight"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

func newCheckCmd() *cobra.Command {
	var (
		path   string
		asJSON bool
		bind   bool
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate a configuration and everything it loads",
		Long: `check reads the configuration, its pattern and include files and its GeoIP
databases, and compiles every rule. It then checks what would bite once
postern runs (the preflight checks serve also runs before it binds): a
service no client can log in through, networks written with host bits,
trusted upstreams that take in ordinary clients, a run_as user that does
not exist or cannot read the files a reload reads, two services on one
port, addresses that cannot be bound (privileged ports without root or
CAP_NET_BIND_SERVICE, addresses in use or not on this machine),
certificates that do not load, have expired or expire soon, and GeoIP data
older than 30 days.

It prints each problem with file:line:column. Exit status: 0 when there
are no errors (warnings do not count), 2 when there is any.

It also warns about intrusion-prevention settings that do less than they
seem: a trigger that can never fire (no service of its group, spam_score
without a scanner, content_rules without rules, failed_logins where no
password is taken or no login form is known, …), which the summary lists
under "never fire" rather than as active, and blocks that neither refuse
nor close (refuse_blocked and close_blocked_connection both off).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			snap, err := snapshot.Load(cmd.Context(), path, time.Now())
			if asJSON {
				return checkJSON(cmd, path, snap, err, time.Since(start))
			}
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				n := snapshot.ErrorCount(err)
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d error%s\n", path, n, plural(n))
				return exitCode(exitError)
			}
			for _, w := range snap.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			for _, w := range ipsWarnings(snap.Config) {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			diags := preflight.Check(cmd.Context(), snap, preflight.Options{Mode: preflight.ModeCheck, Bind: bind})
			errs := 0
			for _, d := range diags {
				if d.Severity == preflight.Error {
					errs++
					fmt.Fprintln(cmd.ErrOrStderr(), d.Error())
				} else {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning:", d.Error())
				}
			}
			if errs > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d error%s\n", path, errs, plural(errs))
				return exitCode(exitError)
			}
			printSummary(cmd.OutOrStdout(), snap, time.Since(start))
			return nil
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the outcome as JSON (errors and warnings with their positions, and the summary)")
	cmd.Flags().BoolVar(&bind, "bind", true, "try to bind every listen address (without listening); --bind=false on a machine that will not serve it")
	return cmd
}

func printSummary(w io.Writer, s *snapshot.Snapshot, took time.Duration) {
	fmt.Fprintf(w, "%s: ok (loaded in %s)\n", s.Config.Path, took.Round(time.Millisecond))
	if s.GeoIP != nil {
		for _, src := range s.GeoIP.Sources() {
			fmt.Fprintf(w, "  geoip     %s: %s, %d networks, %d countries, built %s\n",
				src.Path, src.Description, src.Networks, src.Countries, src.BuildTime.UTC().Format(time.DateOnly))
		}
	}
	for _, name := range s.Patterns.Names() {
		set := s.Patterns.Lookup(name)
		n := len(set.Items())
		fmt.Fprintf(w, "  pattern   [%s] %d item%s, %d networks\n", name, n, plural(n), set.Networks())
	}
	for _, name := range service.All {
		svc := s.Config.Services[name]
		if svc == nil {
			continue
		}
		var rules []string
		if svc.Grant.IsSet() {
			rules = append(rules, "grant "+svc.Grant.Value)
		}
		if svc.Deny.IsSet() {
			rules = append(rules, "deny "+svc.Deny.Value)
		}
		for _, p := range svc.PathRules() {
			rules = append(rules, "path "+p.Prefix.Value)
		}
		if len(rules) == 0 {
			rules = append(rules, "open to all")
		}
		fmt.Fprintf(w, "  service   %-10s %s -> %s; %s\n", name, svc.Listen.Value, strings.Join(svc.WebBackends(), ", "), strings.Join(rules, "; "))
	}
	if g := s.Guard; g != nil {
		for _, t := range triggersOn(s) {
			live := t.On
			if live == "" {
				live = "none"
			}
			fmt.Fprintf(w, "  ips       %-10s triggers %s; block %s", t.Group, live, g.BlockTime)
			if t.NeverFire != "" {
				fmt.Fprintf(w, "; never fire: %s (see the warnings)", t.NeverFire)
			}
			fmt.Fprintln(w)
		}
		if g.Bypass != nil {
			fmt.Fprintf(w, "  bypass    %s: which conditions can bypass which triggers\n", s.Config.IntrusionPrevention.BypassFile.Value)
			for _, row := range guard.BypassTable() {
				fmt.Fprintf(w, "            %-58s %-48s bypasses %s\n", row.Condition, "(known "+row.Known+")", row.Triggers)
			}
		}
	}
	subjects := make([]string, 0, len(s.Config.LoginRestrictions))
	for _, lr := range s.Config.LoginRestrictions {
		subjects = append(subjects, lr.Value)
	}
	sort.Strings(subjects)
	for _, l := range subjects {
		fmt.Fprintf(w, "  login     %s\n", l)
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// loadSnapshot loads a configuration for the query commands, mapping a bad
// configuration to the "could not tell" exit status.
func loadSnapshot(ctx context.Context, cmd *cobra.Command, path string) (*snapshot.Snapshot, error) {
	snap, err := snapshot.Load(ctx, path, time.Now())
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), err)
		return nil, exitCode(exitError)
	}
	return snap, nil
}
