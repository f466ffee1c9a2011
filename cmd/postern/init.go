package main

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/tlsconf"
)

//go:embed starter.yaml
var starterTemplate string

// starterCertValidity is how long init's self-signed certificate is valid.
const starterCertValidity = 365 * 24 * time.Hour

// starterOptions fill the starter configuration's blanks.
type starterOptions struct {
	hostname    string // postern's name: SMTP replies, the certificate's first name
	backendHost string // where Postfix, Dovecot and the webmail listen
	cert, key   string // as written into the file (relative to it, or absolute)
}

// starterConfig renders the starter configuration.
func starterConfig(o starterOptions) []byte {
	host := o.backendHost
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		host = "[" + host + "]"
	}
	return []byte(strings.NewReplacer(
		"@HOSTNAME@", o.hostname,
		"@BACKEND@", host,
		"@CERT@", strconv.Quote(o.cert),
		"@KEY@", strconv.Quote(o.key),
	).Replace(starterTemplate))
}

func newInitCmd() *cobra.Command {
	var (
		out                string
		force              bool
		hostname, backend  string
		tlsCert, tlsKey    string
		certOnly           bool
		defaultHostname, _ = os.Hostname()
	)
	if !strings.Contains(defaultHostname, ".") {
		defaultHostname = "mail.example.com"
	}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a commented starter configuration and a self-signed certificate",
		Long: `init writes a commented starter configuration that passes 'postern check' and
accepts logins as written: every service speaks TLS (STARTTLS, or TLS from
the first byte on 465, 993 and 995), with a self-signed certificate (ECDSA
P-256, one year, valid for --hostname, localhost, 127.0.0.1 and ::1) that
init writes next to the configuration as cert.pem (0644) and key.pem
(0600). With --tls-cert and --tls-key it uses your certificate instead and
writes none. Lines marked CHANGE hold the values to make your own.

With -o - the configuration goes to standard output and the certificate
into the current directory. Existing files are never overwritten unless
--force is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (tlsCert == "") != (tlsKey == "") {
				return errors.New("init: give both --tls-cert and --tls-key, or neither (init then writes a self-signed pair)")
			}
			if !validHostname(hostname) {
				return fmt.Errorf("init: --hostname %q is not a host name (letters, digits, '-' and '.')", hostname)
			}
			if strings.ContainsAny(backend, " /") || backend == "" {
				return fmt.Errorf("init: --backend-host %q: want a host name or an IP address", backend)
			}
			dir := "."
			if certOnly {
				if out == "-" {
					return errors.New("init: --certificate-only writes files: give -o a path in the directory they belong in")
				}
				cert, key, err := writeStarterCert(filepath.Dir(out), hostname, force)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (0644), %s (0600)\n", cert, key)
				return nil
			}
			if out != "-" {
				dir = filepath.Dir(out)
				if _, err := os.Lstat(out); err == nil && !force {
					return fmt.Errorf("%s exists; use --force to overwrite it", out)
				}
			}
			o := starterOptions{hostname: hostname, backendHost: backend, cert: tlsCert, key: tlsKey}
			var wrote []string
			if tlsCert == "" {
				cert, key, err := writeStarterCert(dir, hostname, force)
				if err != nil {
					return err
				}
				o.cert, o.key = tlsconf.SelfSignedCertName, tlsconf.SelfSignedKeyName
				if out == "-" {
					o.cert, o.key = cert, key // absolute: the file's place is not known
				}
				wrote = append(wrote, cert+" (0644)", key+" (0600)")
			} else {
				for _, p := range []*string{&o.cert, &o.key} {
					abs, err := filepath.Abs(*p)
					if err != nil {
						return fmt.Errorf("init: %w", err)
					}
					*p = abs
				}
			}
			text := starterConfig(o)
			if out == "-" {
				_, err := cmd.OutOrStdout().Write(text)
				return err
			}
			if err := writeNew(out, text, 0o644, force); err != nil {
				return err
			}
			wrote = append([]string{out}, wrote...)
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\nedit the lines marked CHANGE, then check it with: postern check -c %s\n", strings.Join(wrote, ", "), out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "postern.yaml", "file to write, or - for standard output")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	cmd.Flags().StringVar(&hostname, "hostname", defaultHostname, "postern's host name: in SMTP replies and the self-signed certificate")
	cmd.Flags().StringVar(&backend, "backend-host", "127.0.0.1", "the host of the mail and web servers behind postern")
	cmd.Flags().StringVar(&tlsCert, "tls-cert", "", "a certificate (PEM, full chain) to use instead of a self-signed one")
	cmd.Flags().StringVar(&tlsKey, "tls-key", "", "the certificate's key (PEM)")
	cmd.Flags().BoolVar(&certOnly, "certificate-only", false, "write only the self-signed cert.pem and key.pem, into the directory of --output (packages use it at install time)")
	return cmd
}

// writeStarterCert writes a self-signed pair as cert.pem (0644) and
// key.pem (0600) into dir, refusing to replace existing files unless
// force. It returns the absolute paths.
func writeStarterCert(dir, hostname string, force bool) (cert, key string, err error) {
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", "", fmt.Errorf("init: %w", err)
	}
	cert = filepath.Join(absDir, tlsconf.SelfSignedCertName)
	key = filepath.Join(absDir, tlsconf.SelfSignedKeyName)
	if !force {
		for _, p := range []string{cert, key} {
			if _, err := os.Lstat(p); err == nil {
				return "", "", fmt.Errorf("init: %s exists; use --force to overwrite it, or --tls-cert/--tls-key to use it", p)
			}
		}
	}
	names := []string{hostname}
	for _, n := range []string{"localhost", "127.0.0.1", "::1"} {
		if n != hostname {
			names = append(names, n)
		}
	}
	c, k, err := tlsconf.SelfSigned(absDir, names, starterCertValidity)
	if err != nil {
		return "", "", fmt.Errorf("init: %w", err)
	}
	return c, k, nil
}

// writeNew writes data to path with mode, refusing an existing file
// unless force.
func writeNew(path string, data []byte, mode fs.FileMode, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; use --force to overwrite it", path)
	}
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("init: writing %s: %w", path, err)
	}
	// The mode as asked, whatever the umask (a file that already existed
	// keeps its owner but gets the mode).
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("init: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("init: writing %s: %w", path, err)
	}
	return nil
}

// validHostname accepts a DNS host name (the configuration's rule for
// hostname:).
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
