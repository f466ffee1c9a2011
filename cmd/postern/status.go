package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/admin"
)

// statusTimeout bounds the question to the running gateway (which dials
// each backend within a few seconds before it answers).
const statusTimeout = 30 * time.Second

func newStatusCmd() *cobra.Command {
	var (
		o      adminOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the state of the running postern: version, uptime, configuration, services and backends, blocks, store",
		Long: `status asks the running postern through its administration API (the socket
and token as for postern blocks): its version and uptime, the configuration
file and when it was loaded, the last reload (when, applied or why not, the
keys it changed), each service (the address it listens on, open sessions,
and for each backend whether it accepts a TCP connection now), the blocks in
force by reason, and the block store (file, size, last write).

Each backend is dialed when status is asked (a TCP connect, closed at once).

Exit status: 0 healthy; 1 something is down (a backend unreachable, a
service not listening where configured, the last reload failed, the last
store write failed: the problems are listed); 2 postern could not be asked
(not running, the token refused, …).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client(cmd)
			if err != nil {
				var code exitCode
				if errors.As(err, &code) {
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "postern:", err)
				return exitCode(exitError)
			}
			defer c.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(cmd.Context(), statusTimeout)
			defer cancel()
			st, err := c.Status(ctx)
			if err != nil {
				w := cmd.ErrOrStderr()
				var ae *admin.APIError
				switch {
				case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
					fmt.Fprintln(w, "postern:", ae.Message)
					fmt.Fprintln(w, "postern: the token was refused: check --token-file or admin.token_file")
				case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
					fmt.Fprintln(w, "postern:", ae.Message, "(a postern older than the status command?)")
				default:
					fmt.Fprintln(w, "postern:", err)
				}
				return exitCode(exitError)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, st); err != nil {
					return err
				}
			} else {
				printStatus(out, &st)
			}
			if !st.Healthy {
				return exitCode(exitNo)
			}
			return nil
		},
	}
	configFlag(cmd, &o.config)
	fl := cmd.Flags()
	fl.StringVar(&o.listen, "admin", "", "admin API address of the running gateway: unix:/path/admin.sock or tcp:host:port")
	fl.StringVar(&o.tokenFile, "token-file", "", "file holding the admin API token")
	fl.BoolVar(&asJSON, "json", false, "print the answer as JSON (the admin API's status answer)")
	return cmd
}

// printStatus writes a status for people. Text that came from outside
// (error messages, keys) goes through cell, so no control character
// reaches the terminal.
func printStatus(w io.Writer, st *admin.Status) {
	version := cell(st.Version, 80)
	if st.Revision != "" {
		version += " (" + cell(st.Revision, 60) + ")"
	}
	health := "healthy"
	if !st.Healthy {
		health = fmt.Sprintf("NOT HEALTHY: %d problem%s", len(st.Problems), plural(len(st.Problems)))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "status\t%s\n", health)
	fmt.Fprintf(tw, "version\tpostern %s, %s\n", version, cell(st.GoVersion, 40))
	fmt.Fprintf(tw, "node\t%s\n", cell(st.Node, 80))
	fmt.Fprintf(tw, "uptime\t%s (since %s)\n", formatUptime(time.Duration(st.Uptime)*time.Second), shortTime(st.Started))
	fmt.Fprintf(tw, "config\t%s, loaded %s\n", cell(st.Config.File, 200), shortTime(st.Config.Loaded))
	fmt.Fprintf(tw, "last reload\t%s\n", reloadText(st.LastReload))
	s := st.Store
	last := "no write since start"
	if s.LastWrite != nil {
		last = "last write " + shortTime(*s.LastWrite) + " ok"
		if !s.LastWriteOK {
			last = "last write " + shortTime(*s.LastWrite) + " FAILED: " + cell(s.LastWriteError, 200)
		}
	}
	fmt.Fprintf(tw, "store\t%s, %s, %s\n", cell(s.Path, 200), formatBytes(s.SizeBytes), last)
	fmt.Fprintf(tw, "blocks\t%s\n", blocksText(st.Blocks))
	tw.Flush()

	fmt.Fprintln(w)
	if len(st.Services) == 0 {
		fmt.Fprintln(w, "no services")
	} else {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tLISTEN\tBOUND\tSESSIONS\tBACKEND\tSTATE")
		for _, svc := range st.Services {
			bound := svc.Bound
			if bound == "" {
				bound = "NOT LISTENING"
			}
			row := fmt.Sprintf("%s\t%s\t%s\t%d", svc.Name, cell(svc.Listen, 60), bound, svc.Sessions)
			if len(svc.Backends) == 0 {
				fmt.Fprintf(tw, "%s\t-\t-\n", row)
			}
			for i, b := range svc.Backends {
				if i > 0 {
					row = "\t\t\t"
				}
				state := fmt.Sprintf("up (%.1f ms)", b.DialMS)
				if !b.Reachable {
					state = "DOWN: " + cell(b.Error, 120)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", row, cell(b.Address, 80), state)
			}
		}
		tw.Flush()
	}
	if len(st.Problems) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "problems:")
		for _, p := range st.Problems {
			fmt.Fprintf(w, "  %s\n", cell(p, 400))
		}
	}
	fmt.Fprintln(w, "times UTC")
}

// reloadText says how the last reload went.
func reloadText(r *admin.ReloadStatus) string {
	if r == nil {
		return "none since start"
	}
	if !r.OK {
		return shortTime(r.Time) + " FAILED (the running configuration stayed): " + cell(r.Error, 300)
	}
	var b strings.Builder
	b.WriteString(shortTime(r.Time) + " applied")
	if len(r.Applied) == 0 {
		b.WriteString(": no settings changed")
	} else {
		b.WriteString(": " + cell(strings.Join(r.Applied, ", "), 300))
	}
	if len(r.Restart) > 0 {
		b.WriteString("; at the next restart: " + cell(strings.Join(r.Restart, ", "), 200))
	}
	for _, p := range r.Problems {
		b.WriteString("; problem: " + cell(p, 200))
	}
	return b.String()
}

// blocksText counts the blocks in force by reason.
func blocksText(c admin.BlockCounts) string {
	s := fmt.Sprintf("%d in force, %d expired", c.Active, c.Expired)
	var parts []string
	for _, r := range c.ByReason {
		parts = append(parts, fmt.Sprintf("%s %s %d", cell(r.Reason, 1), cell(r.Name, 30), r.Active))
	}
	if len(parts) > 0 {
		s += ": " + strings.Join(parts, ", ")
	}
	return s
}

// formatUptime writes a duration in days, hours and minutes.
func formatUptime(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	days := int(d / (24 * time.Hour))
	d -= time.Duration(days) * 24 * time.Hour
	h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
	if days > 0 {
		return fmt.Sprintf("%dd %dh %dm", days, h, m)
	}
	if h > 0 {
		return fmt.Sprintf("%dh %dm", h, m)
	}
	return fmt.Sprintf("%dm", m)
}

// formatBytes writes a size in B, KiB, MiB or GiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n), []string{"KiB", "MiB", "GiB", "TiB"}
	i := -1
	for v >= unit && i < len(suffix)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, suffix[i])
}
