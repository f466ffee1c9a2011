package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/internal/diag"
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
	Node                string              `yaml:"node"`   // this gateway's name in blocks; default the host name
	RunAs               string              `yaml:"run_as"` // user to switch to after binding ports (when started as root)
	Log                 Log                 `yaml:"log"`
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
// file of one country's networks.
type Database struct {
	Path    Text `yaml:"path"`
	Format  Text `yaml:"format"`  // mmdb | csv | zone; detected when empty
	Country Text `yaml:"country"` // zone files: the country the networks belong to
}

// Service is one protocol listener and the access rules on it.
type Service struct {
	Listen       Text       `yaml:"listen"`
	Backend      Text       `yaml:"backend"`
	BackendProxy Text       `yaml:"backend_proxy"` // v2 | v1 | xclient | none
	TLS          *TLS       `yaml:"tls"`
	Grant        Text       `yaml:"grant"`
	Deny         Text       `yaml:"deny"`
	Paths        []PathRule `yaml:"paths"`

	// Web only.
	Backends   []Text      `yaml:"backends"`    // several backends: round-robin, the next one when one is down
	LoginForms []LoginForm `yaml:"login_forms"` // webmail login forms whose failures count as L

	Hostname         string `yaml:"hostname"`           // postern's name in its own replies
	BackendTLS       Text   `yaml:"backend_tls"`        // none (default) | starttls | tls
	BackendTLSVerify *bool  `yaml:"backend_tls_verify"` // default true
	MaxPerAddress    int    `yaml:"max_connections_per_address"`
	MaxConnections   int    `yaml:"max_connections"`
	// Connections to the backend at once, in all and per client network
	// (/24, /64); absent: the service's default, 0: no bound.
	MaxBackend           *int     `yaml:"max_backend_connections"`
	MaxBackendPerNetwork *int     `yaml:"max_backend_connections_per_network"`
	MaxRecipients        int      `yaml:"max_recipients"`
	MaxLineLength        int      `yaml:"max_line_length"`
	RequireAuth          *bool    `yaml:"require_auth"`        // submission: default true
	AllowInsecureAuth    bool     `yaml:"allow_insecure_auth"` // SMTP AUTH without TLS
	PlaintextLogin       Text     `yaml:"plaintext_login"`     // IMAP/POP3: networks that may log in before TLS
	UnknownUserCodes     []Text   `yaml:"unknown_user_codes"`  // enhanced codes counted as unknown users; default 5.1.1
	Timeouts             Timeouts `yaml:"timeouts"`
	pos                  diag.Pos
}

// Timeouts of a service; zero values take the protocol's defaults.
type Timeouts struct {
	Command Duration `yaml:"command"` // waiting for a client command (5m)
	// SMTP: how long a client may stay silent after the greeting (1m).
	FirstCommand Duration `yaml:"first_command"`
	Data         Duration `yaml:"data"`    // waiting for message data (10m)
	Session      Duration `yaml:"session"` // a whole connection (1h)
	Connect      Duration `yaml:"connect"` // connecting to the backend (10s)
	Backend      Duration `yaml:"backend"` // waiting for a backend reply (5m)
	Idle         Duration `yaml:"idle"`    // web: an idle keep-alive connection (2m)
}

// DNS configures the resolver used for DNSBL and DNSWL lookups.
type DNS struct {
	Resolver Text     `yaml:"resolver"` // host:port; default the system resolver
	Timeout  Duration `yaml:"timeout"`  // per lookup; default 2s
	Cache    Duration `yaml:"cache"`    // how long answers are kept; default 10m
}

// ContentRuleConfig is a regular expression on message headers or body.
type ContentRuleConfig struct {
	Name   Text `yaml:"name"`
	Header Text `yaml:"header"`
	Body   Text `yaml:"body"`
}

// Spam configures message scanning (S).
type Spam struct {
	Rspamd  Text     `yaml:"rspamd"`   // e.g. http://127.0.0.1:11333
	Spamd   Text     `yaml:"spamd"`    // SpamAssassin's spamd, host:port (used when rspamd is not set)
	Timeout Duration `yaml:"timeout"`  // default 10s; a slow scanner is skipped, never blocks mail
	Action  Text     `yaml:"action"`   // reject (default) | accept: what happens to a message over spam_score
	MaxSize Size     `yaml:"max_size"` // larger messages are not scanned; default 20MB
}

// Pos returns where the service was configured.
func (s *Service) Pos() diag.Pos { return s.pos }

// Services maps service names (smtp, imap, …) to their settings.
type Services map[string]*Service

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
		if !IsService(k.Value) {
			d.errorf(k, "unknown service %q: want one of %s", k.Value, strings.Join(ServiceNames, ", "))
			continue
		}
		svc := &Service{pos: d.pos(k)}
		d.decode(v, reflect.ValueOf(svc).Elem())
		(*m)[k.Value] = svc
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

// ServiceNames are the services postern knows, in the order they are shown.
var ServiceNames = []string{"smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "web"}

// IsService reports whether name is a service postern knows.
func IsService(name string) bool {
	for _, s := range ServiceNames {
		if s == name {
			return true
		}
	}
	return false
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
