package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/config"
	reasoncode "github.com/postern/postern/internal/reason"
)

// maxImportFile matches the server's limit on an import body.
const maxImportFile = 256 << 20

// adminOptions are the flags every blocks subcommand takes: where the admin
// API is and which token to use.
type adminOptions struct {
	config    string
	listen    string
	tokenFile string
}

func newBlocksCmd() *cobra.Command {
	var o adminOptions
	cmd := &cobra.Command{
		Use:   "blocks",
		Short: "List, add, remove, export and import blocked addresses of a running postern",
		Long: `blocks manages the Blocked IPs queue of a running postern through its
administration API: the unix socket admin.listen (default ` + admin.DefaultListen + `)
or a tcp: listener, with the token in admin.token_file (default
` + admin.DefaultTokenFile + `). --admin and --token-file override the
configuration; without -c, ./postern.yaml is read if it exists.

Addresses and prefixes are checked before anything is sent. Times are UTC.

Exit status: 0 done; 1 not found or refused (no such block; a block of your
own address over TCP without --force); 2 any other error: bad arguments
(nothing is sent), postern not reachable, a refused token, a server error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	pf := cmd.PersistentFlags()
	pf.StringVarP(&o.config, "config", "c", "postern.yaml", "configuration file (for admin.listen and admin.token_file)")
	pf.StringVar(&o.listen, "admin", "", "admin API address: unix:/path/admin.sock or tcp:host:port")
	pf.StringVar(&o.tokenFile, "token-file", "", "file holding the admin API token")
	cmd.AddCommand(
		newBlocksListCmd(&o),
		newBlocksAddCmd(&o),
		newBlocksRemoveCmd(&o),
		newBlocksPurgeCmd(&o),
		newBlocksRemoveAllCmd(&o),
		newBlocksExportCmd(&o),
		newBlocksImportCmd(&o),
		newBlocksAuditCmd(&o),
	)
	return cmd
}

// client returns a client for the configured API. Nothing is sent yet.
func (o *adminOptions) client(cmd *cobra.Command) (*admin.Client, error) {
	listen, tokenFile := o.listen, o.tokenFile
	if listen == "" || tokenFile == "" {
		f, err := o.loadConfig(cmd)
		if err != nil {
			return nil, err
		}
		if f != nil && listen == "" {
			listen = f.Admin.Listen.Value
		}
		if f != nil && tokenFile == "" {
			tokenFile = f.Admin.TokenFile.Value
		}
	}
	if listen == "" {
		listen = admin.DefaultListen
	}
	if tokenFile == "" {
		tokenFile = admin.DefaultTokenFile
	}
	if !strings.HasPrefix(listen, "unix:") && !strings.HasPrefix(listen, "tcp:") {
		return nil, fmt.Errorf("--admin %q: want unix:/path/admin.sock or tcp:host:port", listen)
	}
	token, err := admin.ReadToken(tokenFile)
	if err != nil {
		return nil, err
	}
	return admin.NewClient(listen, token), nil
}

// loadConfig reads the configuration named by -c; without -c, a missing
// ./postern.yaml is not an error (nil, nil: use the defaults).
func (o *adminOptions) loadConfig(cmd *cobra.Command) (*config.File, error) {
	if !cmd.Flags().Changed("config") {
		if _, err := os.Stat(o.config); errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
	}
	f, err := config.Load(o.config)
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), err)
		return nil, exitCode(exitError)
	}
	return f, nil
}

// apiFailure prints an error of the API and maps it to an exit status:
// 1 for "not found" and refusals, 2 for everything else.
func apiFailure(cmd *cobra.Command, err error) error {
	w := cmd.ErrOrStderr()
	var ae *admin.APIError
	if !errors.As(err, &ae) {
		fmt.Fprintln(w, "postern:", err)
		return exitCode(exitError)
	}
	fmt.Fprintln(w, "postern:", ae.Message)
	switch ae.Status {
	case http.StatusNotFound:
		return exitCode(exitNo)
	case http.StatusConflict:
		fmt.Fprintln(w, "postern: use --force to do it anyway")
		return exitCode(exitNo)
	case http.StatusUnauthorized:
		fmt.Fprintln(w, "postern: the token was refused: check --token-file or admin.token_file")
	}
	return exitCode(exitError)
}

func newBlocksListCmd(o *adminOptions) *cobra.Command {
	var reason, service, search, since, until, expiresBefore string
	var active, expired, asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List blocks, most recently seen first",
		Long: `list prints the blocks the filters select, most recently seen first.
--reason takes a code (L) or a name ("failed logins"); --search an address
(the blocks holding it) or a prefix (the blocks overlapping it).

--since and --until select the blocks seen in a window: --since keeps those
last seen at or after it, --until those first seen at or before it.
--expires-before keeps the blocks that expire before it (never-expiring
blocks do not). Each takes an RFC 3339 time (2026-05-01T12:00:00Z), a date
(2026-05-01, midnight UTC) or a span meaning that long ago (30m, 2h, 7d),
counted on the server's clock.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var f admin.Filter
			if reason != "" {
				r, err := reasoncode.Parse(reason)
				if err != nil {
					return fmt.Errorf("--reason: %w", err)
				}
				f.Reason = r
			}
			f.Service = service
			if search != "" {
				p, err := admin.ParseTarget(search)
				if err != nil {
					return fmt.Errorf("--search: %w", err)
				}
				f.Search = p
			}
			if active || expired {
				f.Active = &active
			}
			for _, tb := range []struct {
				flag string
				val  string
				dst  *admin.TimeBound
			}{{"--since", since, &f.Since}, {"--until", until, &f.Until}, {"--expires-before", expiresBefore, &f.ExpiresBefore}} {
				b, err := admin.ParseTimeBound(tb.val)
				if err != nil {
					return fmt.Errorf("%s: %w", tb.flag, err)
				}
				*tb.dst = b
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			bs, err := c.ListBlocks(cmd.Context(), f)
			if err != nil {
				return apiFailure(cmd, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"blocks": bs})
			}
			printBlocks(cmd.OutOrStdout(), bs)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&reason, "reason", "", "only this reason: a code (A C D I L M P R S U Y) or a name")
	fl.StringVar(&service, "service", "", "only blocks seen on this service (smtp, imap, …)")
	fl.StringVar(&search, "search", "", "only blocks holding this address or overlapping this prefix")
	fl.BoolVar(&active, "active", false, "only blocks in force")
	fl.BoolVar(&expired, "expired", false, "only expired blocks")
	fl.StringVar(&since, "since", "", "only blocks last seen at or after this time (RFC 3339, a date, or 2h meaning 2 hours ago)")
	fl.StringVar(&until, "until", "", "only blocks first seen at or before this time (RFC 3339, a date, or 30m meaning 30 minutes ago)")
	fl.StringVar(&expiresBefore, "expires-before", "", "only blocks that expire before this time (RFC 3339, a date, or a span ago)")
	fl.BoolVar(&asJSON, "json", false, "print JSON as the API answers")
	cmd.MarkFlagsMutuallyExclusive("active", "expired")
	return cmd
}

// printBlocks writes the blocks as a table.
func printBlocks(w io.Writer, bs []admin.Block) {
	if len(bs) == 0 {
		fmt.Fprintln(w, "no blocks")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tREASON\tSERVICE\tDETAIL\tHITS\tFIRST SEEN\tLAST SEEN\tEXPIRES\tBY\tNODE")
	nExpired := 0
	for _, b := range bs {
		expires := "never"
		if b.Expires != nil {
			expires = shortTime(*b.Expires)
		}
		if b.Expired {
			expires += " expired"
			nExpired++
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n",
			b.Target, cell(b.Reason, 1), cell(b.ReasonName, 30), cell(b.Service, 12), cell(b.Detail, 40), b.Hits,
			shortTime(b.FirstSeen), shortTime(b.LastSeen), expires, cell(b.By, 20), cell(b.Node, 20))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d block%s, %d expired; times UTC\n", len(bs), plural(len(bs)), nExpired)
}

// shortTime writes a time compactly, in UTC.
func shortTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04")
}

// cell makes a value safe and short for a table: control and formatting
// characters (an attacker chooses the account names in details) become
// '?', long values are cut, and an empty one is "-".
func cell(s string, width int) string {
	if s == "" {
		return "-"
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == width {
			b.WriteString("…")
			break
		}
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

func newBlocksAddCmd(o *adminOptions) *cobra.Command {
	var dur, comment string
	var force bool
	cmd := &cobra.Command{
		Use:   "add ADDRESS|PREFIX",
		Short: "Block an address or a prefix by hand (reason U)",
		Long: `add blocks an address (203.0.113.7, 2001:db8::1) or a prefix
(2001:db8::/64) for --for (a duration such as 90m, 4h or 7d; default: the
configured block time). Blocking again extends the block.

Over a tcp: admin listener, a block that holds your own address is refused
(exit 1) unless --force is given.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := admin.ParseTarget(args[0])
			if err != nil {
				return err
			}
			d, err := admin.ParseBlockDuration(dur)
			if err != nil {
				return fmt.Errorf("--for: %w", err)
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			b, err := c.AddBlock(cmd.Context(), p, d, comment, force)
			if err != nil {
				return apiFailure(cmd, err)
			}
			until := "never expires"
			if b.Expires != nil {
				until = "until " + shortTime(*b.Expires) + " UTC"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "blocked %s %s\n", b.Target, until)
			return nil
		},
	}
	cmd.Flags().StringVar(&dur, "for", "", "how long: 90m, 4h, 7d (default: the configured block time)")
	cmd.Flags().StringVar(&comment, "comment", "", "why, for the record")
	cmd.Flags().BoolVar(&force, "force", false, "block even if it holds your own address")
	return cmd
}

func newBlocksRemoveCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "remove ADDRESS|PREFIX...",
		Short: "Unblock addresses or prefixes",
		Long: `remove unblocks each address or prefix given, as blocked (an address
inside a blocked prefix does not unblock the prefix). It exits 1 if none of
them was blocked.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ps := make([]netip.Prefix, 0, len(args))
			for _, a := range args {
				p, err := admin.ParseTarget(a)
				if err != nil {
					return err
				}
				ps = append(ps, p)
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			n, err := c.RemoveBlocks(cmd.Context(), ps)
			if err != nil {
				return apiFailure(cmd, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d block%s\n", n, plural(n))
			return nil
		},
	}
}

func newBlocksPurgeCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "purge-expired",
		Short: "Remove the expired blocks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			n, err := c.PurgeExpired(cmd.Context())
			if err != nil {
				return apiFailure(cmd, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "purged %d expired block%s\n", n, plural(n))
			return nil
		},
	}
}

func newBlocksRemoveAllCmd(o *adminOptions) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "remove-all --yes",
		Short: "Unblock everything",
		Long:  `remove-all removes every block, expired or not. It needs --yes.`,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !yes {
				fmt.Fprintln(cmd.ErrOrStderr(), "postern: remove-all removes every block; add --yes to do it")
				return exitCode(exitError)
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			n, err := c.RemoveAll(cmd.Context())
			if err != nil {
				return apiFailure(cmd, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d block%s\n", n, plural(n))
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm")
	return cmd
}

// formatOf returns the format named by flag, else by the file's extension.
func formatOf(flag, file string) (string, error) {
	if flag != "" {
		if flag != admin.FormatCSV && flag != admin.FormatJSON {
			return "", fmt.Errorf("--format %q: want csv or json", flag)
		}
		return flag, nil
	}
	switch strings.ToLower(filepath.Ext(file)) {
	case ".csv":
		return admin.FormatCSV, nil
	case ".json":
		return admin.FormatJSON, nil
	}
	return "", fmt.Errorf("cannot tell the format of %q from its name: use --format csv or --format json", file)
}

func newBlocksExportCmd(o *adminOptions) *cobra.Command {
	var format, out string
	cmd := &cobra.Command{
		Use:   "export [--format csv|json] [-o FILE]",
		Short: "Write every block as CSV or JSON",
		Long: `export writes every block, expired ones included, to standard output or
to -o FILE. The format is --format, else the extension of FILE, else csv.
'postern blocks import' reads both formats back exactly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := format
			if f == "" {
				f = admin.FormatCSV
				if g, err := formatOf("", out); err == nil && out != "-" {
					f = g
				}
			}
			if _, err := formatOf(f, ""); err != nil {
				return err
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			data, err := c.Export(cmd.Context(), f)
			if err != nil {
				return apiFailure(cmd, err)
			}
			if out == "" || out == "-" {
				_, err := cmd.OutOrStdout().Write(data)
				return err
			}
			if err := writeFileAtomic(out, data); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "csv or json")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of standard output")
	return cmd
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so a failed export leaves no half-written file. The blocks
// name accounts: the file is private (0600).
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

func newBlocksImportCmd(o *adminOptions) *cobra.Command {
	var format string
	var force bool
	cmd := &cobra.Command{
		Use:   "import FILE [--format csv|json]",
		Short: "Add the blocks of a CSV or JSON file, all or none",
		Long: `import adds (or replaces) the blocks in FILE, as 'postern blocks export'
writes them. The format is --format, else FILE's extension (.csv, .json).
FILE - reads standard input (then --format is needed). A bad row is reported
with its line and field and nothing is imported.

The CSV header names the columns, in any order:
  ` + admin.CSVHeader + `
target and reason are required; timestamps are RFC 3339; an empty expires
never expires.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			f, err := formatOf(format, file)
			if err != nil {
				return err
			}
			data, err := readImportFile(cmd, file)
			if err != nil {
				return err
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			n, err := c.Import(cmd.Context(), f, data, force)
			if err != nil {
				return apiFailure(cmd, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %d block%s\n", n, plural(n))
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "csv or json (default: from the file name)")
	cmd.Flags().BoolVar(&force, "force", false, "import even blocks that hold your own address")
	return cmd
}

func readImportFile(cmd *cobra.Command, file string) ([]byte, error) {
	var r io.Reader = cmd.InOrStdin()
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxImportFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxImportFile {
		return nil, fmt.Errorf("%s is larger than %d MiB: split it", file, maxImportFile>>20)
	}
	return data, nil
}

func newBlocksAuditCmd(o *adminOptions) *cobra.Command {
	var since string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "audit [--since 24h|RFC3339] [--limit n]",
		Short: "Show the audit log of administrator actions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var from time.Time
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				from = t
			}
			if limit < 0 || limit > 10000 {
				return fmt.Errorf("--limit %d: want 1 to 10000", limit)
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			es, err := c.Audit(cmd.Context(), from, limit)
			if err != nil {
				return apiFailure(cmd, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"entries": es})
			}
			if len(es) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no entries")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tTARGET\tDETAIL")
			for _, e := range es {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format("2006-01-02 15:04:05"),
					cell(e.Actor, 30), cell(e.Action, 20), cell(e.Target, 45), cell(e.Detail, 60))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "entries from this long ago (24h, 7d) or this RFC 3339 time")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many entries (default 100)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON as the API answers")
	return cmd
}

// parseSince reads "24h"/"7d" (that long before now) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := config.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want a duration such as 24h or 7d, or an RFC 3339 time such as 2026-05-01T00:00:00Z", s)
	}
	return now.Add(-d), nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
