package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/doctor"
)

func newDoctorCmd() *cobra.Command {
	var (
		path    string
		asJSON  bool
		timeout time.Duration
		client  string
	)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that every backend, the spam scanner, the resolver and the admin API answer as postern needs",
		Long: `doctor connects to every backend of the configuration exactly as the
gateways do (PROXY v1/v2 header, XCLIENT, STARTTLS or implicit TLS) and says
what it saw: the greeting, the capabilities (IMAP CAPABILITY, POP3 CAPA, SMTP
EHLO), the AUTH mechanisms and STARTTLS offered; the web backends' HTTP
answer; whether rspamd or spamd, the DNS resolver (when configured) and the
admin API answer. A failure comes with what to change, for example the
Dovecot or Postfix setting that makes the backend accept postern's PROXY
header.

Exit status: 0 every check passed, 1 a check failed, 2 the configuration
could not be read or the command line is wrong.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := doctor.Options{Timeout: timeout}
			if client != "" {
				a, err := netip.ParseAddr(client)
				if err != nil {
					return fmt.Errorf("--client %q: %w", client, err)
				}
				o.Client = netip.AddrPortFrom(a, doctor.ClientPort)
			}
			f, err := config.Load(path)
			if err != nil {
				return err
			}
			rep := doctor.Run(cmd.Context(), f, o)
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printDoctor(w, rep)
			}
			if !rep.OK {
				return exitCode(exitNo)
			}
			return nil
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	cmd.Flags().DurationVar(&timeout, "timeout", doctor.DefaultTimeout, "time allowed for each check")
	cmd.Flags().StringVar(&client, "client", "", "client address to send in PROXY headers and XCLIENT (default 127.0.0.1)")
	return cmd
}

// printDoctor writes the report in plain words, one block per check.
func printDoctor(w io.Writer, rep doctor.Report) {
	failed := 0
	for _, r := range rep.Results {
		mark := "ok  "
		if !r.OK {
			mark = "FAIL"
			failed++
		}
		head := fmt.Sprintf("%s %-10s %s at %s", mark, r.Check, r.Server, r.Target)
		if r.Via != "" {
			head += " (" + r.Via + ")"
		}
		fmt.Fprintln(w, head)
		if r.Greeting != "" {
			fmt.Fprintf(w, "     greeting: %s\n", r.Greeting)
		}
		if len(r.Capabilities) > 0 {
			fmt.Fprintf(w, "     capabilities: %s\n", strings.Join(r.Capabilities, ", "))
		}
		if r.OK && r.StartTLS != nil {
			auth := "none"
			if len(r.Auth) > 0 {
				auth = strings.Join(r.Auth, " ")
			}
			fmt.Fprintf(w, "     AUTH offered: %s\n", auth)
			fmt.Fprintf(w, "     STARTTLS offered: %s\n", yesNo(*r.StartTLS))
		}
		if r.HTTPStatus != "" {
			fmt.Fprintf(w, "     answer: %s\n", r.HTTPStatus)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "     %s\n", n)
		}
		if r.Problem != "" {
			fmt.Fprintf(w, "     problem: %s\n", r.Problem)
		}
		if r.Error != "" {
			fmt.Fprintf(w, "     error: %s\n", r.Error)
		}
	}
	if failed == 0 {
		fmt.Fprintf(w, "all %d checks passed\n", len(rep.Results))
	} else {
		fmt.Fprintf(w, "%d of %d checks failed\n", failed, len(rep.Results))
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
