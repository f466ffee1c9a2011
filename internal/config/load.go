// Package config reads postern's YAML configuration strictly into typed
// structs. Every unknown key, wrong type and invalid value is reported with
// file:line:column, all of them in one run. Loading does not compile
// patterns or open databases; see package snapshot for that.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/safefile"
	"github.com/postern/postern/internal/service"
)

// Load reads and validates the configuration file at path.
func Load(path string) (*File, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	data, err := safefile.ReadFile(abs, safefile.MaxConfig)
	if errors.Is(err, safefile.ErrTooLarge) {
		return nil, fmt.Errorf("config: %w; move long pattern lists into {include} files", err)
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(abs, data)
}

// Parse decodes and validates configuration text; file names it in errors
// and anchors relative paths.
func Parse(file string, data []byte) (*File, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, err)
	}
	f := &File{Path: file}
	d := &decoder{file: file}
	if len(root.Content) > 0 {
		d.decode(root.Content[0], reflect.ValueOf(f).Elem())
	}
	f.validate(d)
	if err := d.errs.Err(); err != nil {
		return nil, err
	}
	return f, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError gives a syntax error from the YAML parser a file:line position.
func yamlError(file string, err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return diag.Errorf(diag.Pos{File: file, Line: line}, "YAML syntax: %s", m[2])
	}
	return diag.Errorf(diag.Pos{File: file}, "YAML syntax: %s", strings.TrimPrefix(msg, "yaml: "))
}

// Dir returns the directory relative paths in the file are resolved from.
func (f *File) Dir() string { return filepath.Dir(f.Path) }

func (f *File) resolve(t *Text) {
	if t.IsSet() && !filepath.IsAbs(t.Value) {
		t.Value = filepath.Join(f.Dir(), t.Value)
	}
}

func (f *File) validate(d *decoder) {
	for i := range f.GeoIP.Databases {
		db := &f.GeoIP.Databases[i]
		if !db.Path.IsSet() {
			d.errs.Add(diag.Errorf(db.Path.Pos, "geoip database needs a path"))
			continue
		}
		f.resolve(&db.Path)
		switch db.Format.Value {
		case "", "mmdb", "csv", "zone":
		default:
			d.errs.Add(diag.Errorf(db.Format.Pos, "bad format %q: want mmdb, csv or zone (or leave it out to detect it)", db.Format.Value))
		}
		if db.Country.IsSet() {
			db.Country.Value = strings.ToUpper(strings.TrimSpace(db.Country.Value))
			if db.Format.Value != "zone" && db.Format.Value != "" {
				d.errs.Add(diag.Errorf(db.Country.Pos, "country applies to zone files only"))
			}
		}
		if db.URL.IsSet() {
			validateDownload(d, db)
		}
	}
	f.validateDownloadPaths(d)
	f.validateCluster(d)
	seen := make(map[string]diag.Pos)
	for _, p := range f.Patterns {
		k := strings.ToLower(p.Name)
		if prev, ok := seen[k]; ok {
			d.errs.Add(diag.Errorf(p.NamePos, "pattern %q is already defined at %s (names are case-insensitive)", p.Name, prev))
		}
		seen[k] = p.NamePos
	}
	for name, svc := range f.Services {
		f.validateService(d, name, svc)
	}
	for _, lr := range f.LoginRestrictions {
		if !strings.Contains(lr.Value, "=") {
			d.errs.Add(diag.Errorf(lr.Pos, "bad login restriction %q: want account=patterns, @domain=patterns or *=patterns", lr.Value))
		}
	}
	f.validateLogins(d)
	f.validateIPS(d)
	f.validateAdmin(d)
	f.validateConsole(d)
	f.validateMetrics(d)
	f.validateSMTPExtras(d)
	f.validatePolicy(d)
	f.validateDNSBLZone(d)
	f.validateDecisionStream(d)
	f.validateNftables(d)
	f.validateWebhooks(d)
	f.validateLoginAlerts(d)
	if _, _, err := f.ProcessorsSetting(); err != nil {
		d.errs.Add(diag.Errorf(f.Processors.Pos, "%v", err))
	}
	switch f.Log.Level.Value {
	case "", "debug", "info", "warn", "error":
	default:
		d.errs.Add(diag.Errorf(f.Log.Level.Pos, "bad log level %q: want debug, info, warn or error", f.Log.Level.Value))
	}
	switch f.Log.Format.Value {
	case "", "text", "json":
	default:
		d.errs.Add(diag.Errorf(f.Log.Format.Pos, "bad log format %q: want text or json", f.Log.Format.Value))
	}
}

// minRefresh is the shortest refresh of a downloaded database: a data
// publisher is not asked more often than this.
const minRefresh = time.Minute

// validateDownload checks the url and refresh of a database postern
// downloads.
func validateDownload(d *decoder, db *Database) {
	u, err := url.Parse(strings.TrimSpace(db.URL.Value))
	switch {
	case err != nil:
		d.errs.Add(diag.Errorf(db.URL.Pos, "bad geoip url: %v", redactURLError(err)))
	case u.Scheme != "http" && u.Scheme != "https":
		d.errs.Add(diag.Errorf(db.URL.Pos, "bad geoip url %q: want http:// or https://", u.Redacted()))
	case u.Host == "":
		d.errs.Add(diag.Errorf(db.URL.Pos, "bad geoip url %q: no host", u.Redacted()))
	default:
		db.URL.Value = u.String()
	}
	if db.Refresh.D < minRefresh {
		d.errs.Add(diag.Errorf(db.Refresh.Pos, "geoip refresh %s is too short: at least %s", db.Refresh.D, minRefresh))
	}
}

// redactURLError keeps a password written in a URL out of an error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// validateDownloadPaths refuses two databases on one path when one of
// them is downloaded: the download would replace the other's file.
func (f *File) validateDownloadPaths(d *decoder) {
	seen := make(map[string]*Database)
	for i := range f.GeoIP.Databases {
		db := &f.GeoIP.Databases[i]
		if !db.Path.IsSet() {
			continue
		}
		if prev, ok := seen[db.Path.Value]; ok && (prev.URL.IsSet() || db.URL.IsSet()) {
			d.errs.Add(diag.Errorf(db.Path.Pos, "geoip database %s is already named at %s; a downloaded database needs a path of its own", db.Path.Value, prev.Path.Pos))
			continue
		}
		seen[db.Path.Value] = db
	}
}

// validateLogins checks logins and stores default_domain in lower case
// without a trailing dot.
func (f *File) validateLogins(d *decoder) {
	l := &f.Logins
	dom := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(l.DefaultDomain.Value)), ".")
	switch {
	case !l.DefaultDomain.IsSet():
		if l.ForceDomain {
			d.errs.Add(diag.Errorf(diag.Pos{File: f.Path}, "logins.force_domain needs logins.default_domain"))
		}
		return
	case strings.HasPrefix(dom, "@"):
		d.errs.Add(diag.Errorf(l.DefaultDomain.Pos, "logins.default_domain %q: write the domain without '@'", l.DefaultDomain.Value))
	case strings.ContainsAny(dom, "@ \t;,*?[]{}/\\\"'") || strings.HasPrefix(dom, ".") || strings.Contains(dom, ".."):
		d.errs.Add(diag.Errorf(l.DefaultDomain.Pos, "logins.default_domain %q is not a domain name", l.DefaultDomain.Value))
	}
	l.DefaultDomain.Value = dom
}

// validateService checks what the decoder cannot: values that depend on
// each other or on files. Keys of another protocol and the backend_proxy
// and backend_tls words were already refused by the decoder.
func (f *File) validateService(d *decoder, name service.Service, svc *Service) {
	if svc == nil {
		return
	}
	if !svc.Listen.IsSet() {
		d.errs.Add(diag.Errorf(svc.pos, "service %s needs listen (e.g. \":%d\")", name, name.DefaultPort()))
	} else if err := parseListen(svc.Listen.Value); err != nil {
		d.errs.Add(diag.Errorf(svc.Listen.Pos, "%v", err))
	}
	switch {
	case svc.Web != nil:
		f.validateWeb(d, svc)
	case !svc.Backend.IsSet():
		d.errs.Add(diag.Errorf(svc.pos, "service %s needs a backend", name))
	default:
		if err := checkBackend(svc.Backend.Value); err != nil {
			d.errs.Add(diag.Errorf(svc.Backend.Pos, "%v", err))
		}
	}
	if svc.TLS != nil {
		if !svc.TLS.Cert.IsSet() || !svc.TLS.Key.IsSet() {
			d.errs.Add(diag.Errorf(svc.pos, "service %s: tls needs both cert and key", name))
		}
		for _, t := range []*Text{&svc.TLS.Cert, &svc.TLS.Key} {
			f.resolve(t)
			if t.IsSet() {
				if _, err := os.Stat(t.Value); err != nil {
					d.errs.Add(diag.Errorf(t.Pos, "%v", unwrapPathErr(err)))
				}
			}
		}
	} else if name.ImplicitTLS() {
		d.errs.Add(diag.Errorf(svc.pos, "service %s uses implicit TLS and needs tls: { cert: ..., key: ... }", name))
	}
	if o := svc.SMTP; o != nil {
		if o.MaxLineLength != 0 && o.MaxLineLength < 512 {
			d.errs.Add(diag.Errorf(svc.pos, "service %s: max_line_length must be at least 512 (RFC 5321)", name))
		}
		for _, c := range o.UnknownUserCodes {
			if p := strings.Split(c.Value, "."); len(p) != 3 || p[0] != "5" && p[0] != "4" {
				d.errs.Add(diag.Errorf(c.Pos, "bad enhanced status code %q: want e.g. 5.1.1", c.Value))
			}
		}
	}
}

func checkBackend(s string) error {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return fmt.Errorf("bad backend %q: want host:port", s)
	}
	if n, err := strconv.Atoi(s[i+1:]); err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("bad backend %q: port must be 1-65535", s)
	}
	return nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

func (f *File) validateAdmin(d *decoder) {
	if f.Store.Path.IsSet() {
		f.resolve(&f.Store.Path)
	}
	if f.Admin.TokenFile.IsSet() {
		f.resolve(&f.Admin.TokenFile)
	}
	if l := f.Admin.Listen; l.IsSet() {
		switch {
		case strings.HasPrefix(l.Value, "unix:"):
			p := strings.TrimPrefix(l.Value, "unix:")
			if p == "" {
				d.errs.Add(diag.Errorf(l.Pos, "admin.listen unix: needs a socket path"))
			} else if !filepath.IsAbs(p) {
				f.Admin.Listen.Value = "unix:" + filepath.Join(f.Dir(), p)
			}
		case strings.HasPrefix(l.Value, "tcp:"):
			if err := parseListen(strings.TrimPrefix(l.Value, "tcp:")); err != nil {
				d.errs.Add(diag.Errorf(l.Pos, "admin.listen: %v", err))
			}
		default:
			d.errs.Add(diag.Errorf(l.Pos, "bad admin.listen %q: want unix:/path/admin.sock or tcp:127.0.0.1:8025", l.Value))
		}
	}
	if f.Admin.Grant.IsSet() && !strings.HasPrefix(f.Admin.Listen.Value, "tcp:") {
		d.errs.Add(diag.Errorf(f.Admin.Grant.Pos, "admin.grant applies to a tcp: listener only; a unix socket is guarded by its file permissions"))
	}
}

func (f *File) validateSMTPExtras(d *decoder) {
	if r := f.DNS.Resolver; r.IsSet() {
		if _, err := netip.ParseAddrPort(r.Value); err != nil {
			d.errs.Add(diag.Errorf(r.Pos, "bad dns.resolver %q: want an IP address and port such as 127.0.0.1:53", r.Value))
		}
	}
	for i, cr := range f.ContentRules {
		if !cr.Name.IsSet() {
			d.errs.Add(diag.Errorf(diag.Pos{File: f.Path}, "content rule %d needs a name", i+1))
		}
		if !cr.Header.IsSet() && !cr.Body.IsSet() {
			d.errs.Add(diag.Errorf(cr.Name.Pos, "content rule %q needs header or body", cr.Name.Value))
		}
	}
	if u := f.Spam.Rspamd; u.IsSet() && !strings.HasPrefix(u.Value, "http://") && !strings.HasPrefix(u.Value, "https://") {
		d.errs.Add(diag.Errorf(u.Pos, "bad spam.rspamd %q: want http://host:port", u.Value))
	}
	if sd := f.Spam.Spamd; sd.IsSet() {
		if _, err := netip.ParseAddrPort(sd.Value); err != nil {
			d.errs.Add(diag.Errorf(sd.Pos, "bad spam.spamd %q: want an IP address and port such as 127.0.0.1:783", sd.Value))
		}
		if f.Spam.Rspamd.IsSet() {
			d.errs.Add(diag.Errorf(sd.Pos, "configure one scanner: spam.rspamd or spam.spamd"))
		}
	}
	switch f.Spam.Action.Value {
	case "", "reject", "accept":
	default:
		d.errs.Add(diag.Errorf(f.Spam.Action.Pos, "bad spam.action %q: want reject or accept", f.Spam.Action.Value))
	}
}

// validHostname accepts a DNS host name: postern writes it into its own
// replies and into the EHLO it sends the backend, so it holds no blanks
// or control characters.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
