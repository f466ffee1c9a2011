package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/service"
)

// File is a decoded, validated configuration file. Paths in it are
// resolved relative to the file's directory. It is plain data: compiling
// its patterns and rules is the snapshot package's job.
type File struct {
	Path string `yaml:"-"` // absolute path of the file

	GeoIP             GeoIP               `yaml:"geoip"`
	Patterns          Patterns            `yaml:"patterns"`
	Services          Services            `yaml:"services"`
	TrustedUpstreams  Text                `yaml:"trusted_upstreams"`
	LoginRestrictions []Text              `yaml:"login_restrictions"`
	Logins            Logins              `yaml:"logins"`        // how the backends resolve login names
	LocalDomains      Text                `yaml:"local_domains"` // "example.com; example.net"
	DNS               DNS                 `yaml:"dns"`
	ContentRules      []ContentRuleConfig `yaml:"content_rules"`
	Spam              Spam                `yaml:"spam"`

	IntrusionPrevention IntrusionPrevention `yaml:"intrusion_prevention"`
	Store               Store               `yaml:"store"`
	Admin               Admin               `yaml:"admin"`
	Console             Console             `yaml:"console"` // the web console; off without listen
	Metrics             Metrics             `yaml:"metrics"` // Prometheus metrics and health; off without listen
	Node                string              `yaml:"node"`    // this gateway's name in blocks; default the host name
	RunAs               string              `yaml:"run_as"`  // user to switch to after binding ports (when started as root)
	// EventLoops runs the imap, pop3, smtp and submission sessions on
	// event loops (one per processor); nil: on where the system has them
	// (EventLoopsOn).
	EventLoops *bool `yaml:"event_loops"`
	// Processors is how many processors the Go runtime runs postern's
	// code on: adaptive (the default: as few as the load needs, up to
	// all), all, or a number (ProcessorsSetting).
	Processors Text           `yaml:"processors"`
	Log        Log            `yaml:"log"`
	Cluster    Cluster        `yaml:"cluster"` // shared blocks and counters; off unless redis, addresses or sentinel is set
	Policy     PolicyServices `yaml:"policy"`  // policy-service mode (Postfix, Dovecot)

	DNSBLZone      DNSBLZone      `yaml:"dnsbl_zone"`      // blocks served as a DNSBL zone; off without listen
	DecisionStream DecisionStream `yaml:"decision_stream"` // blocks for CrowdSec bouncers; off without listen
	// Nftables is the block export to nftables sets; off unless enabled.
	Nftables Nftables  `yaml:"nftables"`
	Webhooks []Webhook `yaml:"webhooks"` // signed JSON notifications (webhooks.go)
	// LoginAlerts: logins from a new country, impossible travel (loginalerts.go).
	LoginAlerts LoginAlerts `yaml:"login_alerts"`
}

// Logins says how the backends resolve a login name to an account, so that
// login restrictions and account protection compare names the same way:
// case is always folded; a name without a domain gets DefaultDomain
// (Dovecot's auth_default_realm, Roundcube's username_domain); with
// ForceDomain any domain given is replaced by it (Roundcube's
// username_domain_forced).
type Logins struct {
	DefaultDomain Text `yaml:"default_domain"`
	ForceDomain   bool `yaml:"force_domain"`
}

// GeoIP lists the country databases.
type GeoIP struct {
	Databases []Database `yaml:"databases"`
}

// Database is one GeoIP source: an MMDB file, a CSV range list or a zone
// file of one country's networks. With URL set, postern downloads the file
// to Path itself, every Refresh, and keeps the last good one; the other
// download keys apply only then.
type Database struct {
	Path    Text `yaml:"path"`
	Format  Text `yaml:"format"`  // mmdb | csv | zone; detected when empty
	Country Text `yaml:"country"` // zone files: the country the networks belong to

	URL         Text     `yaml:"url"`                              // http:// or https://; plain, gzip or tar.gz
	Refresh     Duration `yaml:"refresh" default:"24h"`            // how often the URL is asked (conditional GET)
	MaxDrop     Percent  `yaml:"max_drop" default:"20%"`           // refuse a new file with this much fewer networks than the last good one
	MinNetworks int      `yaml:"min_networks" default:"1" min:"1"` // refuse a new file with fewer networks
}

// downloadKeys are the keys of a database that take effect with url only.
var downloadKeys = []string{"refresh", "max_drop", "min_networks"}

// decodeYAML reads a database entry with the walker and refuses the
// download keys on an entry without url, each at its key.
func (db *Database) decodeYAML(d *decoder, n *yaml.Node) error {
	d.decodeStruct(n, reflect.ValueOf(db).Elem())
	if n.Kind != yaml.MappingNode {
		return nil // decodeStruct reported it
	}
	hasURL := false
	var download []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Value == "url":
			hasURL = v.Kind != yaml.ScalarNode || strings.TrimSpace(v.Value) != ""
		case slices.Contains(downloadKeys, k.Value):
			download = append(download, k)
		}
	}
	if !hasURL {
		for _, k := range download {
			d.errorf(k, "%s applies to a database with a url only", k.Value)
		}
	}
	return nil
}

// Percent is a share written as "20%" or "20", from 0 to 100.
type Percent struct {
	Value float64 // 0–100
	Pos   diag.Pos
}

func (p *Percent) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a percentage such as 20%%, got %s", describe(n))
	}
	s := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(n.Value), "%"))
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v > 100 || v != v {
		return fmt.Errorf("bad percentage %q: want 0%% to 100%%, e.g. 20%%", n.Value)
	}
	*p = Percent{Value: v, Pos: d.pos(n)}
	return nil
}

// Service is one protocol listener: the settings every protocol shares
// (Common) and exactly one of SMTP, Mail and Web, chosen by the service's
// name. The decoder reads an entry's keys against that service's own type,
// so a key of another protocol is an unknown key at its line and column.
type Service struct {
	Name   service.Service `yaml:"-"` // which service: smtp, submission, … web
	Common `yaml:",inline"`
	SMTP   *SMTPOptions `yaml:",inline"` // smtp, submission, smtps
	Mail   *MailOptions `yaml:",inline"` // imap, imaps, pop3, pop3s
	Web    *WebOptions  `yaml:",inline"` // web
	pos    diag.Pos
}

// Common are the keys of every service. A `default` tag is the value a key
// takes when it is not written.
type Common struct {
	Listen           Text `yaml:"listen"`
	Backend          Text `yaml:"backend"` // host:port; web: a URL
	TLS              *TLS `yaml:"tls"`
	Grant            Text `yaml:"grant"`
	Deny             Text `yaml:"deny"`
	BackendTLSVerify bool `yaml:"backend_tls_verify" default:"true"`
	MaxPerAddress    int  `yaml:"max_connections_per_address" default:"20" min:"0"`
	MaxConnections   int  `yaml:"max_connections" min:"0"` // 0: no bound
}

// ProxyMode is how a service hands the client's address to its backend.
type ProxyMode string

// The backend_proxy values.
const (
	ProxyV2      ProxyMode = "v2"
	ProxyV1      ProxyMode = "v1"
	ProxyXClient ProxyMode = "xclient" // SMTP only
	ProxyNone    ProxyMode = "none"
)

// TLSMode is how a service talks TLS to its backend.
type TLSMode string

// The backend_tls values.
const (
	TLSNone     TLSMode = "none"
	TLSStartTLS TLSMode = "starttls" // SMTP only
	TLSImplicit TLSMode = "tls"
)

// BackendLimits bound the connections to a mail backend at once, in all
// and per client network (/24, /64); absent: the protocol's default, 0: no
// bound.
type BackendLimits struct {
	MaxBackend           *int `yaml:"max_backend_connections" min:"0"`
	MaxBackendPerNetwork *int `yaml:"max_backend_connections_per_network" min:"0"`
}

// SMTPOptions are the keys of the SMTP services.
type SMTPOptions struct {
	BackendProxy  ProxyMode `yaml:"backend_proxy" default:"v2" enum:"v2|v1|xclient|none"`
	BackendTLS    TLSMode   `yaml:"backend_tls" default:"none" enum:"none|starttls|tls"`
	BackendLimits `yaml:",inline"`
	Hostname      HostName `yaml:"hostname"` // postern's name in its own replies
	MaxRecipients int      `yaml:"max_recipients" min:"0"`
	MaxLineLength int      `yaml:"max_line_length" min:"0"` // 0: the default; else at least 512
	// AUTH before MAIL; the default is true for submission, false
	// otherwise (set by the services decoder from the name).
	RequireAuth       bool         `yaml:"require_auth"`
	AllowInsecureAuth bool         `yaml:"allow_insecure_auth"` // SMTP AUTH without TLS
	UnknownUserCodes  []Text       `yaml:"unknown_user_codes"`  // enhanced codes counted as unknown users; default 5.1.1
	Timeouts          SMTPTimeouts `yaml:"timeouts"`
}

// MailOptions are the keys of the IMAP and POP3 services.
type MailOptions struct {
	BackendProxy   ProxyMode `yaml:"backend_proxy" default:"v2" enum:"v2|v1|none"`
	BackendTLS     TLSMode   `yaml:"backend_tls" default:"none" enum:"none|tls"`
	BackendLimits  `yaml:",inline"`
	PlaintextLogin Text         `yaml:"plaintext_login"` // networks that may log in before TLS
	Timeouts       MailTimeouts `yaml:"timeouts"`
}

// WebOptions are the keys of the web service.
type WebOptions struct {
	Backends   []Text      `yaml:"backends"`    // several backends: round-robin, the next one when one is down
	Paths      []PathRule  `yaml:"paths"`       // path prefixes with their own grant lists
	LoginForms []LoginForm `yaml:"login_forms"` // webmail login forms whose failures count as L
	Timeouts   WebTimeouts `yaml:"timeouts"`
}

// SMTPTimeouts of an SMTP service; zero values take the gateway's
// defaults (shown).
type SMTPTimeouts struct {
	FirstCommand Duration `yaml:"first_command"` // silence after the greeting (1m)
	Command      Duration `yaml:"command"`       // waiting for a client command (5m)
	Data         Duration `yaml:"data"`          // waiting for message data (10m)
	Session      Duration `yaml:"session"`       // a whole connection (1h)
	Connect      Duration `yaml:"connect"`       // connecting to the backend (10s)
	Backend      Duration `yaml:"backend"`       // waiting for a backend reply (5m)
}

// MailTimeouts of an IMAP or POP3 service; zero values take the gateway's
// defaults.
type MailTimeouts struct {
	Command Duration `yaml:"command"` // idle before login
	Connect Duration `yaml:"connect"` // connecting to the backend (10s)
	Backend Duration `yaml:"backend"` // waiting for a backend reply
}

// WebTimeouts of the web service; zero values take the gateway's defaults
// (shown).
type WebTimeouts struct {
	Command Duration `yaml:"command"` // request line and headers (10s)
	Idle    Duration `yaml:"idle"`    // an idle keep-alive connection (2m)
	Connect Duration `yaml:"connect"` // connecting to a backend (10s)
	Backend Duration `yaml:"backend"` // waiting for response headers (60s)
}

// HostName is a DNS host name postern writes into its own replies and the
// EHLO it sends the backend, checked when decoded: no blanks or control
// characters.
type HostName string

func (h *HostName) decodeYAML(_ *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a host name, got %s", describe(n))
	}
	if !validHostname(n.Value) {
		return fmt.Errorf("hostname %q is not a host name (letters, digits, '-' and '.')", n.Value)
	}
	*h = HostName(n.Value)
	return nil
}

// newService returns the typed service for name with its defaults set.
func newService(name service.Service) *Service {
	s := &Service{Name: name}
	switch name.Protocol() {
	case service.ProtocolSMTP:
		s.SMTP = &SMTPOptions{RequireAuth: name == service.Submission}
	case service.ProtocolMail:
		s.Mail = &MailOptions{}
	default:
		s.Web = &WebOptions{}
	}
	return s
}

// keyGroups names, for each protocol's option type, the services it
// belongs to, to explain a key written on the wrong service.
var keyGroups = []struct {
	t       reflect.Type
	timeout reflect.Type
	label   string
}{
	{reflect.TypeFor[SMTPOptions](), reflect.TypeFor[SMTPTimeouts](), "SMTP"},
	{reflect.TypeFor[MailOptions](), reflect.TypeFor[MailTimeouts](), "IMAP and POP3"},
	{reflect.TypeFor[WebOptions](), reflect.TypeFor[WebTimeouts](), "web"},
}

// hintFor names the services whose option (or timeout) types have key.
func hintFor(key string, timeouts bool) string {
	var in []string
	for _, g := range keyGroups {
		t := g.t
		if timeouts {
			t = g.timeout
		}
		if hasKey(t, key) {
			in = append(in, g.label)
		}
	}
	if len(in) == 0 {
		return ""
	}
	if len(in) == 1 && in[0] == "web" {
		return "applies to the web service only"
	}
	return "applies to " + strings.Join(in, ", ") + " services only"
}

func hasKey(t reflect.Type, key string) bool {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opt, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == key || opt == "inline" && f.Type.Kind() == reflect.Struct && hasKey(f.Type, key) {
			return true
		}
	}
	return false
}

func (s *Service) keyHint(key string) string {
	switch {
	case s.Web != nil && key == "backend_tls":
		return "does not apply to web: write the backend as https://host:port"
	case s.Web != nil && key == "backend_proxy":
		return "does not apply to web; the client address goes in X-Forwarded-For"
	}
	return hintFor(key, false)
}

func (*SMTPTimeouts) keyHint(key string) string { return hintFor(key, true) }
func (*MailTimeouts) keyHint(key string) string { return hintFor(key, true) }
func (*WebTimeouts) keyHint(key string) string  { return hintFor(key, true) }

// DNS configures the resolver used for DNSBL and DNSWL lookups.
type DNS struct {
	Resolver Text     `yaml:"resolver"` // host:port; default the system resolver
	Timeout  Duration `yaml:"timeout"`  // per lookup; default 2s
	Cache    Duration `yaml:"cache"`    // how long answers are kept; default 10m
}

// ContentRuleConfig is a regular expression on message headers or body.
type ContentRuleConfig struct {
	Name   Text   `yaml:"name"`
	Header Regexp `yaml:"header"`
	Body   Regexp `yaml:"body"`
}

// Regexp is a regular expression as written and compiled once, when the
// file is decoded; a bad one is an error at its position.
type Regexp struct {
	Text
	Re *regexp.Regexp // nil when not written
}

func (r *Regexp) decodeYAML(d *decoder, n *yaml.Node) error {
	if err := r.Text.decodeYAML(d, n); err != nil {
		return err
	}
	if !r.IsSet() {
		return nil
	}
	re, err := regexp.Compile(r.Value)
	if err != nil {
		return fmt.Errorf("bad regular expression: %w", err)
	}
	r.Re = re
	return nil
}

// Spam configures message scanning (S).
type Spam struct {
	Rspamd  Text     `yaml:"rspamd"`                  // e.g. http://127.0.0.1:11333
	Spamd   Text     `yaml:"spamd"`                   // SpamAssassin's spamd, host:port (used when rspamd is not set)
	Timeout Duration `yaml:"timeout" default:"10s"`   // a slow scanner is skipped, never blocks mail
	Action  Text     `yaml:"action" default:"reject"` // reject | accept: what happens to a message over spam_score
	MaxSize Size     `yaml:"max_size" default:"20MB"` // larger messages are not scanned
}

// Pos returns where the service was configured.
func (s *Service) Pos() diag.Pos { return s.pos }

// Services maps the services configured (written by name: smtp, imap, …)
// to their settings.
type Services map[service.Service]*Service

func (m *Services) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("want a mapping of service names, got %s", describe(n))
	}
	*m = make(Services)
	if !d.uniqueKeys(n) {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name, ok := service.Parse(k.Value)
		if !ok {
			d.errorf(k, "unknown service %q: want one of %s", k.Value, service.Names)
			continue
		}
		svc := newService(name)
		svc.pos = d.pos(k)
		d.decode(v, reflect.ValueOf(svc).Elem())
		(*m)[name] = svc
	}
	return nil
}

// TLS names a certificate and its key.
type TLS struct {
	Cert Text `yaml:"cert"`
	Key  Text `yaml:"key"`
}

// PathRule restricts a path prefix of a web service to its own grant list.
type PathRule struct {
	Prefix Text `yaml:"prefix"`
	Grant  Text `yaml:"grant"`
	Deny   Text `yaml:"deny"`
}

// Log configures structured logging.
type Log struct {
	Level  Text `yaml:"level"`  // debug | info | warn | error
	Format Text `yaml:"format"` // text | json
}

// Text is a string value with the position it was written at.
type Text struct {
	Value  string
	Pos    diag.Pos
	Quoted bool // written in quotes: the value starts one column later
}

func (t *Text) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a string, got %s", describe(n))
	}
	t.Value = n.Value
	t.Pos = d.pos(n)
	t.Quoted = n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0
	return nil
}

// IsSet reports whether the value was given and is not blank.
func (t Text) IsSet() bool { return strings.TrimSpace(t.Value) != "" }

// PatternDef is one named pattern as written.
type PatternDef struct {
	Name    string
	NamePos diag.Pos
	Text    Text
}

// Patterns keeps the patterns in the order written, with positions.
type Patterns []PatternDef

func (p *Patterns) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("want a mapping of pattern names to items, got %s", describe(n))
	}
	if !d.uniqueKeys(n) {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		def := PatternDef{Name: k.Value, NamePos: d.pos(k)}
		switch {
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			d.errorf(v, "pattern %q has no items", k.Value)
			continue
		case v.Kind == yaml.SequenceNode:
			// A list of items: join them, keeping the first item's position.
			var parts []string
			for _, c := range v.Content {
				if c.Kind != yaml.ScalarNode {
					d.errorf(c, "want an item string, got %s", describe(c))
					continue
				}
				if strings.ContainsAny(c.Value, "\n") {
					d.errorf(c, "an item of a list cannot span lines")
					continue
				}
				parts = append(parts, c.Value)
			}
			def.Text = Text{Value: strings.Join(parts, "\n"), Pos: d.pos(v)}
			if len(v.Content) > 0 {
				def.Text.Pos = d.pos(v.Content[0])
			}
		default:
			if err := def.Text.decodeYAML(d, v); err != nil {
				d.errorf(v, "%v", err)
				continue
			}
		}
		*p = append(*p, def)
	}
	return nil
}

// parseListen checks a listen address: ":25", "127.0.0.1:2525", "[::1]:143".
func parseListen(s string) error {
	i := strings.LastIndexByte(s, ':')
	if i < 0 || i == len(s)-1 {
		return fmt.Errorf("bad listen address %q: want host:port or :port", s)
	}
	host, port := s[:i], s[i+1:]
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad listen address %q: port must be 0-65535", s)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("bad listen address %q: host must be an IP address or empty", s)
		}
	}
	return nil
}
