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

// File is a decoded, validated configuration file (§9). Paths in it are
// resolved relative to the file's directory. It is plain data: compiling
// its patterns and rules is the snapshot package's job.
type File struct {
	Path string `yaml:"-"` // absolute path of the file

	GeoIP             GeoIP    `yaml:"geoip"`
	Patterns          Patterns `yaml:"patterns"`
	Services          Services `yaml:"services"`
	TrustedUpstreams  Text     `yaml:"trusted_upstreams"`
	LoginRestrictions []Text   `yaml:"login_restrictions"`
	LocalDomains      Text     `yaml:"local_domains"` // "example.com; example.net"

	IntrusionPrevention IntrusionPrevention `yaml:"intrusion_prevention"`
	Store               Store               `yaml:"store"`
	Admin               Admin               `yaml:"admin"`
	Node                string              `yaml:"node"` // this gateway's name in blocks; default the host name
	Log                 Log                 `yaml:"log"`
}

// GeoIP lists the country databases (§4).
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

// Service is one protocol listener and the access rules on it (§5, §7).
type Service struct {
	Listen       Text       `yaml:"listen"`
	Backend      Text       `yaml:"backend"`
	BackendProxy Text       `yaml:"backend_proxy"` // v2 | v1 | xclient | none
	TLS          *TLS       `yaml:"tls"`
	Grant        Text       `yaml:"grant"`
	Deny         Text       `yaml:"deny"`
	Paths        []PathRule `yaml:"paths"`
	pos          diag.Pos
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
