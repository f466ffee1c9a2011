package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/explain"
	servicepkg "github.com/postern/postern/internal/service"
)

// explainTimeout bounds the question to the running gateway (its answer
// may wait for a client name lookup).
const explainTimeout = 30 * time.Second

func newExplainCmd() *cobra.Command {
	var (
		o                             adminOptions
		ip, account, service, reqPath string
		offline, asJSON               bool
	)
	cmd := &cobra.Command{
		Use:   "explain --ip ADDRESS --service SERVICE [--account USER] [--path /admin]",
		Short: "Say whether an address may use a service (and log in as an account), and why",
		Long: `explain decides as the gateway would for a client at --ip connecting to
--service (and, with --account, logging in as that account; with --path,
requesting that web path), and prints every rule consulted with its file and
line, the item that matched, where the GeoIP data places the address, the
block holding it and the bypass list entry naming it.

It asks the running gateway through the administration API (admin.listen
and admin.token_file of -c, or --admin and --token-file, as postern blocks
does), so the answer is the running configuration's and the blocks in force
count. When the gateway cannot be asked (not running, the token unreadable
or refused), or with --offline, it explains from the configuration file
alone and says so: a note on standard error, "blocks    not consulted" in
the output, "source": "configuration" and a "note" in --json.

Lists with host masks look the client's name up as the gateway does (PTR,
confirmed by A/AAAA, through dns.resolver): the output says which name was
used, or why there is none (no PTR record, not confirmed, timeout).

Exit status: 0 allow, 1 deny, 2 error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr, err := netip.ParseAddr(ip)
			if err != nil || addr.Zone() != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "--ip %q: not an IP address\n", ip)
				return exitCode(exitError)
			}
			if _, ok := servicepkg.Parse(service); !ok {
				fmt.Fprintf(cmd.ErrOrStderr(), "--service %q: want one of %s\n", service, servicepkg.Names)
				return exitCode(exitError)
			}
			if reqPath != "" && service != "web" {
				fmt.Fprintln(cmd.ErrOrStderr(), "--path applies to --service web only")
				return exitCode(exitError)
			}
			q := explain.Query{Addr: addr.Unmap(), Service: service, Account: account, Path: reqPath}
			ans, note, err := askGateway(cmd, &o, q, offline)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "postern: explaining from the configuration alone: %s\n", note)
				fmt.Fprintln(cmd.ErrOrStderr(), "postern: blocks in force on the running gateway are not shown")
				snap, err := loadSnapshot(cmd.Context(), cmd, o.config)
				if err != nil {
					return err
				}
				if ans, err = explain.Explain(snap, nil, q); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "postern: %v (%s)\n", err, o.config)
					return exitCode(exitError)
				}
				ans.Note = note
			}
			w := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(w, ans); err != nil {
					return err
				}
			} else {
				printAnswer(w, &ans)
			}
			if !ans.Allowed() {
				return exitCode(exitNo)
			}
			return nil
		},
	}
	configFlag(cmd, &o.config)
	fl := cmd.Flags()
	fl.StringVar(&ip, "ip", "", "client IP address (required)")
	fl.StringVar(&service, "service", "", "service: "+servicepkg.Names+" (required)")
	fl.StringVar(&account, "account", "", "account logging in, e.g. alice@example.com")
	fl.StringVar(&reqPath, "path", "", "web request path, e.g. /admin")
	fl.StringVar(&o.listen, "admin", "", "admin API address of the running gateway: unix:/path/admin.sock or tcp:host:port")
	fl.StringVar(&o.tokenFile, "token-file", "", "file holding the admin API token")
	fl.BoolVar(&offline, "offline", false, "explain from the configuration file alone; do not ask the running gateway")
	fl.BoolVar(&asJSON, "json", false, "print the answer as JSON (the admin API's explain answer)")
	_ = cmd.MarkFlagRequired("ip")
	_ = cmd.MarkFlagRequired("service")
	return cmd
}

// askGateway asks the running gateway. It returns its answer, or a note
// saying why the answer must come from the configuration alone, or an
// error ending the command (a bad configuration; a question the gateway
// refuses as malformed).
func askGateway(cmd *cobra.Command, o *adminOptions, q explain.Query, offline bool) (explain.Answer, string, error) {
	if offline {
		return explain.Answer{}, "--offline: the running gateway was not asked", nil
	}
	c, err := o.client(cmd)
	var code exitCode
	if errors.As(err, &code) {
		return explain.Answer{}, "", err // the configuration is broken; said on stderr
	}
	if err != nil {
		return explain.Answer{}, err.Error(), nil
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(cmd.Context(), explainTimeout)
	defer cancel()
	ans, err := c.Explain(ctx, q)
	if err == nil {
		return ans, "", nil
	}
	var ae *admin.APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusBadRequest:
			fmt.Fprintln(cmd.ErrOrStderr(), "postern:", ae.Message)
			return explain.Answer{}, "", exitCode(exitError)
		case http.StatusUnauthorized:
			return explain.Answer{}, "the running gateway refused the admin token (check --token-file or admin.token_file)", nil
		}
		return explain.Answer{}, "the running gateway did not explain: " + ae.Message, nil
	}
	return explain.Answer{}, err.Error(), nil
}

// printAnswer writes an explanation for people.
func printAnswer(w io.Writer, a *explain.Answer) {
	if a.Source == explain.SourceGateway {
		fmt.Fprintln(w, "source    the running gateway: its running configuration and live blocks")
	} else {
		fmt.Fprintln(w, "source    the configuration file alone")
	}
	fmt.Fprintf(w, "address   %s\n", a.Address)
	printCountry(w, a.Address, a.GeoIP)
	if a.Service != "" {
		fmt.Fprintf(w, "service   %s\n", a.Service)
		printRules(w, a, explain.KindService, "every address may connect (no grant or deny list)")
	}
	if a.Path != "" {
		fmt.Fprintf(w, "path      %s (cleaned: %s)\n", a.Path, a.CleanPath)
		printRules(w, a, explain.KindPath, "no path rule applies")
	}
	if a.Account != "" {
		fmt.Fprintf(w, "login     %s\n", a.Account)
		printRules(w, a, explain.KindLogin, "no login restriction applies to this account")
		for _, s := range a.Steps {
			if s.Kind == explain.KindPass && s.Pass != nil {
				fmt.Fprintf(w, "  travel pass %s for %s from %q until %s UTC, by %s (%s): allows\n",
					s.Pass.ID, s.Pass.Account, s.Pass.From, shortTime(s.Pass.Until), cell(s.Pass.By, 40), cell(s.Pass.Comment, 60))
			}
		}
	}
	blocked := false
	for _, s := range a.Steps {
		switch {
		case s.Kind == explain.KindBlock && s.Block != nil:
			blocked = true
			b := s.Block
			until := "never expires"
			if !b.Expires.IsZero() {
				until = "until " + shortTime(b.Expires) + " UTC"
			}
			fmt.Fprintf(w, "block     %s: %s %s, %s", b.Target, b.Reason, b.ReasonName, until)
			if b.By != "" {
				fmt.Fprintf(w, ", by %s", cell(b.By, 40))
			}
			if b.Detail != "" {
				fmt.Fprintf(w, " (%s)", cell(b.Detail, 60))
			}
			fmt.Fprintf(w, "\n  %s\n", s.Effect)
		case s.Kind == explain.KindBypass:
			fmt.Fprintf(w, "bypass    %s\n", s.Effect)
			printItems(w, "  ", s.Items, nil)
		case s.Kind == explain.KindUpstream:
			fmt.Fprintf(w, "upstream  %s (trusted_upstreams at %s)\n", s.Effect, s.Pos)
		}
	}
	switch {
	case a.Source != explain.SourceGateway:
		fmt.Fprintf(w, "blocks    not consulted: explained from the configuration alone (%s)\n", a.Note)
	case !blocked:
		fmt.Fprintln(w, "blocks    none holds this address on the running gateway")
	}
	fmt.Fprintf(w, "decision  %s\n", a.Verdict)
}

// printRules writes the steps of one kind, or none when there are none.
func printRules(w io.Writer, a *explain.Answer, k explain.Kind, none string) {
	width := 0
	for _, s := range a.Steps {
		if s.Kind == k {
			width = max(width, len(s.Rule))
		}
	}
	if width == 0 {
		fmt.Fprintf(w, "  %s\n", none)
		return
	}
	for _, s := range a.Steps {
		if s.Kind != k {
			continue
		}
		pos := ""
		if s.Pos != nil {
			pos = s.Pos.String()
		}
		fmt.Fprintf(w, "  %-*s  %q at %s: %s\n", width, s.Rule, s.Text, pos, s.Effect)
		printItems(w, "  "+strings.Repeat(" ", width)+"    ", s.Items, s.ClientName)
	}
}

// printItems writes the chain of pattern items behind a match and what
// the client name lookup for host masks found.
func printItems(w io.Writer, indent string, items []explain.Item, client *explain.ClientName) {
	byName := false
	for _, it := range items {
		note := ""
		if it.ByName != "" {
			note = " (client name " + it.ByName + ", forward-confirmed)"
			byName = true
		}
		if it.Pattern == "" {
			fmt.Fprintf(w, "%sitem %s at %s%s\n", indent, it.Text, it.Pos, note)
			continue
		}
		fmt.Fprintf(w, "%s%s item %s at %s%s\n", indent, it.Pattern, it.Text, it.Pos, note)
	}
	switch c := client; {
	case c == nil || byName:
	case c.Error != "":
		fmt.Fprintf(w, "%shost masks matched nothing: no verified client name (%s)\n", indent, c.Error)
	default:
		fmt.Fprintf(w, "%sclient name %s (forward-confirmed) decided nothing here\n", indent, c.Name)
	}
}
