package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/internal/service"
)

const good = `
geoip:
  databases:
    - path: geo/country.mmdb
    - path: zones/sg.zone
      format: zone
      country: sg
patterns:
  GeoIP_MY: "country:MY"
  Office:   "203.0.113.0/24; 2001:db8:10::/48"
  List:
    - 10.0.0.1
    - 10.0.0.2
services:
  smtp:       { listen: ":25",  backend: "127.0.0.1:10025", backend_proxy: v2 }
  imap:       { listen: ":143", backend: "127.0.0.1:10143", grant: "[GeoIP_MY];[Office]" }
  web:
    listen: "[::1]:8443"
    backend: "http://127.0.0.1:8080"
    paths:
      - { prefix: /admin, grant: "[Office]" }
trusted_upstreams: "10.0.0.5"
login_restrictions:
  - "*=[GeoIP_MY]"
log: { level: debug, format: json }
`

func TestParseGood(t *testing.T) {
	f, err := Parse("/etc/postern/postern.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.GeoIP.Databases[0].Path.Value; got != "/etc/postern/geo/country.mmdb" {
		t.Errorf("relative path not resolved: %s", got)
	}
	if got := f.GeoIP.Databases[1].Country.Value; got != "SG" {
		t.Errorf("country not upper-cased: %s", got)
	}
	if len(f.Patterns) != 3 || f.Patterns[0].Name != "GeoIP_MY" || f.Patterns[1].Name != "Office" {
		t.Fatalf("patterns out of order: %+v", f.Patterns)
	}
	if p := f.Patterns[1].Text.Pos; p.Line != 10 || p.Col != 13 || !f.Patterns[1].Text.Quoted {
		t.Errorf("pattern position: %v quoted=%v", p, f.Patterns[1].Text.Quoted)
	}
	if f.Patterns[2].Text.Value != "10.0.0.1\n10.0.0.2" || f.Patterns[2].Text.Pos.Line != 12 {
		t.Errorf("list pattern: %+v", f.Patterns[2].Text)
	}
	imap := f.Services[service.IMAP]
	if imap.Grant.Value != "[GeoIP_MY];[Office]" || imap.Pos().Line != 16 {
		t.Errorf("imap: %+v at %v", imap.Grant, imap.Pos())
	}
	if f.Services[service.Web].Web.Paths[0].Prefix.Value != "/admin" {
		t.Error("web path")
	}
	if f.Log.Format.Value != "json" {
		t.Error("log format")
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"unknown top key", "servics: {}\n", `c.yaml:1:1: unknown key "servics" (did you mean "services"?)`},
		{"unknown nested key", "services:\n  imap: { listen: \":143\", backend: \"b:1\", grnt: \"x\" }\n", `c.yaml:2:43: unknown key "grnt" (did you mean "grant"?)`},
		{"unknown service", "services:\n  imap4: { listen: \":143\" }\n", `c.yaml:2:3: unknown service "imap4"`},
		{"console is no service of the configuration", "services:\n  console: { listen: \":8444\" }\n", `c.yaml:2:3: unknown service "console": want one of smtp, submission, smtps, imap, imaps, pop3, pop3s, web`},
		{"wrong type", "services: [a, b]\n", "c.yaml:1:11: want a mapping of service names, got a list"},
		{"wrong scalar type", "geoip: { databases: x }\n", `c.yaml:1:21: want a list, got "x"`},
		{"string wanted", "trusted_upstreams: [1, 2]\n", "c.yaml:1:20: want a string, got a list"},
		{"yaml syntax", "services:\n  imap: {\n", "c.yaml:2: YAML syntax:"},
		{"duplicate key", "log: {}\nlog: {}\n", `c.yaml:2:1: key "log" is already defined at line 1`},
		{"bad listen", "services:\n  imap: { listen: \"143\", backend: \"b:1\" }\n", `c.yaml:2:19: bad listen address "143"`},
		{"bad port", "services:\n  imap: { listen: \":99999\", backend: \"b:1\" }\n", "port must be 0-65535"},
		{"missing backend", "services:\n  imap: { listen: \":143\" }\n", "c.yaml:2:3: service imap needs a backend"},
		{"missing listen", "services:\n  pop3: { backend: \"b:1\" }\n", `c.yaml:2:3: service pop3 needs listen (e.g. ":110")`},
		{"bad backend proxy", "services:\n  imap: { listen: \":143\", backend: \"b:1\", backend_proxy: v3 }\n", `bad backend_proxy "v3"`},
		{"xclient on imap", "services:\n  imap: { listen: \":143\", backend: \"b:1\", backend_proxy: xclient }\n", "xclient is for SMTP services only"},
		{"web backend", "services:\n  web: { listen: \":443\", backend: \"127.0.0.1:80\" }\n", "bad web backend"},
		{"implicit tls without cert", "services:\n  imaps: { listen: \":993\", backend: \"b:1\" }\n", "needs tls"},
		{"missing cert file", "services:\n  imaps: { listen: \":993\", backend: \"b:1\", tls: { cert: nope.pem, key: nope.key } }\n", "nope.pem: no such file"},
		{"paths on imap", "services:\n  imap: { listen: \":143\", backend: \"b:1\", paths: [{prefix: /a, grant: x}] }\n", `c.yaml:2:43: unknown key "paths" (applies to the web service only)`},
		{"path without slash", "services:\n  web: { listen: \":443\", backend: \"http://b\", paths: [{prefix: admin, grant: x}] }\n", "prefix starting with /"},
		{"path without lists", "services:\n  web: { listen: \":443\", backend: \"http://b\", paths: [{prefix: /admin}] }\n", "needs grant or deny"},
		{"duplicate pattern", "patterns:\n  Office: 1.1.1.1\n  OFFICE: 1.1.1.2\n", `c.yaml:3:3: pattern "OFFICE" is already defined at c.yaml:2:3`},
		{"empty pattern", "patterns:\n  Office:\n", `pattern "Office" has no items`},
		{"bad geoip format", "geoip: { databases: [ { path: x, format: dat } ] }\n", `bad format "dat"`},
		{"geoip no path", "geoip: { databases: [ { format: csv } ] }\n", "geoip database needs a path"},
		{"bad login line", "login_restrictions: [ \"alice\" ]\n", "bad login restriction \"alice\""},
		{"bad log level", "log: { level: loud }\n", `bad log level "loud"`},
		{"merge key", "x: &a { level: info }\nlog:\n  <<: *a\n", "merge keys"},
		{"int for string ok, bool for map not", "log: true\n", "want a mapping of keys"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(c.yaml))
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			msg := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
			if !strings.Contains(msg, c.want) {
				t.Fatalf("error:\n%s\nwant it to contain:\n%s", msg, c.want)
			}
		})
	}
}

func TestReportsEveryError(t *testing.T) {
	_, err := Parse("c.yaml", []byte("a: 1\nb: 2\nlog: { level: x, format: y }\n"))
	if err == nil {
		t.Fatal("want errors")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 4 {
		t.Fatalf("want 4 errors, got %d:\n%v", n, err)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(cert, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "postern.yaml")
	body := "services:\n  imaps: { listen: \":993\", backend: \"b:1\", tls: { cert: cert.pem, key: cert.pem } }\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Services[service.IMAPS].TLS.Cert.Value != cert {
		t.Errorf("cert path: %s", f.Services[service.IMAPS].TLS.Cert.Value)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(empty); err != nil {
		t.Errorf("an empty file is a valid (empty) configuration: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("services:\n  imap: { listen: \":143\", backend: \"b:1\" }\n"))
	f.Add([]byte("patterns: { A: [1.2.3.4, \"[B]\"] }\n"))
	f.Add([]byte("x: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		f, err := Parse("fuzz.yaml", data)
		if err == nil && f == nil {
			t.Fatal("nil file without error")
		}
	})
}

// TestServiceKeysByProtocol: each service is decoded into its own
// protocol's type, so a key of another protocol is an unknown key at its
// own line and column, with the services it applies to.
func TestServiceKeysByProtocol(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"max_recipients on imap", "services:\n  imap: { listen: \":143\", backend: \"b:1\", max_recipients: 5 }\n",
			`c.yaml:2:43: unknown key "max_recipients" (applies to SMTP services only)`},
		{"require_auth on pop3", "services:\n  pop3:\n    listen: \":110\"\n    backend: \"b:1\"\n    require_auth: true\n",
			`c.yaml:5:5: unknown key "require_auth" (applies to SMTP services only)`},
		{"unknown_user_codes on web", "services:\n  web: { listen: \":80\", backend: \"http://b:1\", unknown_user_codes: [5.1.1] }\n",
			`c.yaml:2:48: unknown key "unknown_user_codes" (applies to SMTP services only)`},
		{"plaintext_login on smtp", "services:\n  smtp: { listen: \":25\", backend: \"b:1\", plaintext_login: \"127.0.0.1\" }\n",
			`c.yaml:2:42: unknown key "plaintext_login" (applies to IMAP and POP3 services only)`},
		{"hostname on imap", "services:\n  imap: { listen: \":143\", backend: \"b:1\", hostname: gw.example }\n",
			`c.yaml:2:43: unknown key "hostname" (applies to SMTP services only)`},
		{"max_backend_connections on web", "services:\n  web: { listen: \":80\", backend: \"http://b:1\", max_backend_connections: 3 }\n",
			`c.yaml:2:48: unknown key "max_backend_connections" (applies to SMTP, IMAP and POP3 services only)`},
		{"first_command on imap", "services:\n  imap: { listen: \":143\", backend: \"b:1\", timeouts: { first_command: 1m } }\n",
			`c.yaml:2:55: unknown key "first_command" (applies to SMTP services only)`},
		{"backend_proxy on web", "services:\n  web: { listen: \":80\", backend: \"http://b:1\", backend_proxy: v2 }\n",
			`c.yaml:2:48: unknown key "backend_proxy" (does not apply to web; the client address goes in X-Forwarded-For)`},
		{"typo still suggests", "services:\n  smtp: { listen: \":25\", backend: \"b:1\", max_recipents: 5 }\n",
			`c.yaml:2:42: unknown key "max_recipents" (did you mean "max_recipients"?)`},
		{"bad backend_proxy at its value", "services:\n  smtp: { listen: \":25\", backend: \"b:1\", backend_proxy: v3 }\n",
			`c.yaml:2:57: bad backend_proxy "v3": want v2, v1, xclient or none`},
		{"xclient on pop3 at its value", "services:\n  pop3: { listen: \":110\", backend: \"b:1\", backend_proxy: xclient }\n",
			`c.yaml:2:58: backend_proxy xclient is for SMTP services only`},
		{"starttls on imap at its value", "services:\n  imap: { listen: \":143\", backend: \"b:1\", backend_tls: starttls }\n",
			`c.yaml:2:56: backend_tls starttls is for SMTP backends`},
		{"negative limit at its value", "services:\n  imap: { listen: \":143\", backend: \"b:1\", max_backend_connections: -1 }\n",
			`c.yaml:2:68: max_backend_connections cannot be less than 0, got -1`},
		{"negative common limit", "services:\n  web: { listen: \":80\", backend: \"http://b:1\", max_connections: -5 }\n",
			`c.yaml:2:65: max_connections cannot be less than 0, got -5`},
		{"bad hostname at its value", "services:\n  smtp: { listen: \":25\", backend: \"b:1\", hostname: \"mx example\" }\n",
			`c.yaml:2:52: hostname "mx example" is not a host name`},
		{"bad backend_tls", "services:\n  submission: { listen: \":587\", backend: \"b:1\", backend_tls: ssl }\n",
			`c.yaml:2:62: bad backend_tls "ssl": want none, starttls or tls`},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(c.yaml))
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			msg := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
			if !strings.Contains(msg, c.want) {
				t.Fatalf("error:\n%s\nwant it to contain:\n%s", msg, c.want)
			}
		})
	}
}

// TestServiceDefaults: a key not written takes the default declared on its
// field; a key written replaces it.
func TestServiceDefaults(t *testing.T) {
	f, err := Parse("c.yaml", []byte(`services:
  smtp: { listen: ":25", backend: "b:1" }
  submission: { listen: ":587", backend: "b:1", backend_proxy: xclient, backend_tls: starttls, backend_tls_verify: false }
  pop3: { listen: ":110", backend: "b:1", backend_proxy: none, max_connections_per_address: 3 }
  imap: { listen: ":143", backend: "b:1", backend_tls: tls }
  web: { listen: ":80", backend: "http://b:1", login_forms: [{ path: /l, user_field: u, fail_status: 401 }] }
`))
	if err != nil {
		t.Fatal(err)
	}
	smtp, sub, pop, imap, web := f.Services[service.SMTP], f.Services[service.Submission], f.Services[service.POP3], f.Services[service.IMAP], f.Services[service.Web]
	if smtp.SMTP == nil || smtp.Mail != nil || smtp.Web != nil || pop.Mail == nil || web.Web == nil {
		t.Fatalf("protocol parts: smtp %+v pop3 %+v web %+v", smtp, pop, web)
	}
	if o := smtp.SMTP; o.BackendProxy != ProxyV2 || o.BackendTLS != TLSNone || o.RequireAuth || !smtp.BackendTLSVerify || smtp.MaxPerAddress != 20 {
		t.Errorf("smtp defaults: %+v %+v", smtp.Common, o)
	}
	if o := sub.SMTP; o.BackendProxy != ProxyXClient || o.BackendTLS != TLSStartTLS || !o.RequireAuth || sub.BackendTLSVerify {
		t.Errorf("submission: %+v %+v", sub.Common, o)
	}
	if o := pop.Mail; o.BackendProxy != ProxyNone || o.BackendTLS != TLSNone || pop.MaxPerAddress != 3 {
		t.Errorf("pop3: %+v %+v", pop.Common, o)
	}
	if imap.Mail.BackendTLS != TLSImplicit || imap.Mail.BackendProxy != ProxyV2 {
		t.Errorf("imap: %+v", imap.Mail)
	}
	if m := web.Web.LoginForms[0].Method.Value; m != "POST" {
		t.Errorf("login form method: %q", m)
	}
	sub2, err := Parse("c.yaml", []byte("services:\n  submission: { listen: \":587\", backend: \"b:1\", require_auth: false }\n"))
	if err != nil || sub2.Services[service.Submission].SMTP.RequireAuth {
		t.Errorf("require_auth: false on submission: %v", err)
	}
}

// TestCompiledOnce: content rule expressions and log_only trigger names are
// compiled when the file is decoded, and a bad one is an error at its value.
func TestCompiledOnce(t *testing.T) {
	f, err := Parse("c.yaml", []byte(`content_rules:
  - { name: x, header: "^Subject: .*offer", body: "(?i)click here" }
intrusion_prevention:
  smtp: { unknown_recipients: 3, log_only: [P, relay_denials] }
services:
  web: { listen: ":80", backend: "http://b:1", login_forms: [{ path: "/?_task=login", user_field: u, fail_status: 401 }] }
`))
	if err != nil {
		t.Fatal(err)
	}
	cr := f.ContentRules[0]
	if cr.Header.Re == nil || !cr.Header.Re.MatchString("Subject: an offer") || cr.Body.Re == nil || !cr.Body.Re.MatchString("CLICK HERE") {
		t.Errorf("content rule not compiled: %+v", cr)
	}
	if lo := f.IntrusionPrevention.SMTP.LogOnly; len(lo) != 2 || lo[0].Code != 'P' || lo[1].Code != 'Y' {
		t.Errorf("log_only codes: %+v", lo)
	}
	lf := &f.Services[service.Web].Web.LoginForms[0]
	if lf.routeParams == nil || lf.routes[0] != "/" || lf.routeParams.Get("_task") != "login" {
		t.Errorf("login form routes not parsed at load: %v %v", lf.routes, lf.routeParams)
	}
	for _, c := range []struct{ yaml, want string }{
		{"content_rules:\n  - { name: x, body: \"a(b\" }\n", "c.yaml:2:22: bad regular expression: error parsing regexp: missing closing )"},
		{"intrusion_prevention:\n  smtp: { log_only: [L, failed_login] }\n", `c.yaml:2:25: log_only: unknown trigger "failed_login"`},
	} {
		_, err := Parse("c.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.yaml, err, c.want)
		}
	}
}
