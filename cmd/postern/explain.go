package main

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/service"
)

func newExplainCmd() *cobra.Command {
	var (
		path, ip, account, svcName, reqPath string
	)
	cmd := &cobra.Command{
		Use:   "explain --ip ADDRESS --service SERVICE [--account USER] [--path /admin]",
		Short: "Say whether an address may use a service (and log in as an account), and why",
		Long: `explain decides as the gateway would for a client at --ip connecting to
--service (and, with --account, logging in as that account; with --path,
requesting that web path), and prints every rule consulted with its file and
line, the item that matched, and where the GeoIP data places the address.
Lists with host masks look the client's name up as the gateway does (PTR,
confirmed by A/AAAA, through dns.resolver): the output says which name was
used, or why there is none (no PTR record, not confirmed, timeout).

Exit status: 0 allow, 1 deny, 2 error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr, err := netip.ParseAddr(ip)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "--ip %q: not an IP address\n", ip)
				return exitCode(exitError)
			}
			svc, ok := service.Parse(svcName)
			if !ok {
				fmt.Fprintf(cmd.ErrOrStderr(), "--service %q: want one of %s\n", svcName, service.Names)
				return exitCode(exitError)
			}
			if reqPath != "" && svc != service.Web {
				fmt.Fprintln(cmd.ErrOrStderr(), "--path applies to --service web only")
				return exitCode(exitError)
			}
			snap, err := loadSnapshot(cmd.Context(), cmd, path)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "address   %s\n", addr)
			printCountry(w, snap, addr)
			v, err := snap.Policy.ExplainService(svc, addr)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "%v in %s\n", err, path)
				return exitCode(exitError)
			}
			allow := v.Allow
			fmt.Fprintf(w, "service   %s\n", svc)
			printVerdict(w, v, "every address may connect (no grant or deny list)")
			if reqPath != "" {
				pv, _ := snap.Policy.ExplainPath(svc, reqPath, addr)
				fmt.Fprintf(w, "path      %s (cleaned: %s)\n", reqPath, policy.CleanPath(reqPath))
				printVerdict(w, pv, "no path rule applies")
				allow = allow && pv.Allow
			}
			if account != "" {
				lv := snap.Policy.ExplainLogin(account, addr)
				fmt.Fprintf(w, "login     %s\n", account)
				printVerdict(w, lv, "no login restriction applies to this account")
				allow = allow && lv.Allow
			}
			if allow {
				fmt.Fprintln(w, "decision  allow")
				return nil
			}
			fmt.Fprintln(w, "decision  deny")
			return exitCode(exitNo)
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().StringVar(&ip, "ip", "", "client IP address (required)")
	cmd.Flags().StringVar(&svcName, "service", "", "service: "+service.Names+" (required)")
	cmd.Flags().StringVar(&account, "account", "", "account logging in, e.g. alice@example.com")
	cmd.Flags().StringVar(&reqPath, "path", "", "web request path, e.g. /admin")
	_ = cmd.MarkFlagRequired("ip")
	_ = cmd.MarkFlagRequired("service")
	return cmd
}

func printVerdict(w io.Writer, v policy.Verdict, none string) {
	if len(v.Rules) == 0 {
		fmt.Fprintf(w, "  %s\n", none)
		return
	}
	width := 0
	for _, r := range v.Rules {
		width = max(width, len(r.Rule))
	}
	for _, r := range slices.Clone(v.Rules) {
		fmt.Fprintf(w, "  %-*s  %q at %s: %s\n", width, r.Rule, r.Text, r.Pos, r.Effect)
		printSteps(w, "  "+strings.Repeat(" ", width)+"    ", r.Match)
	}
}
