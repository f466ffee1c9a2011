package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/internal/service"
)

const goodWeb = `services:
  web:
    listen: ":443"
    backends:
      - http://127.0.0.1:8080
      - http://127.0.0.1:8081
    paths:
      - { prefix: /admin, grant: "10.0.0.1" }
    login_forms:
      - path: "/?_task=login"
        user_field: _user
        password_field: _pass
        fail_status: 401
      - { method: post, path: /SOGo/connect, user_field: userName, fail_redirect: "/SOGo/?error", fail_header: "X-Login-Failed: yes" }
    timeouts: { command: 5s, idle: 90s, connect: 3s, backend: 30s }
`

func TestParseWeb(t *testing.T) {
	f, err := Parse("/etc/postern/postern.yaml", []byte(goodWeb))
	if err != nil {
		t.Fatal(err)
	}
	svc := f.Services[service.Web]
	w := svc.Web
	if got := svc.WebBackends(); len(got) != 2 || got[1] != "http://127.0.0.1:8081" {
		t.Errorf("backends: %v", got)
	}
	if len(w.LoginForms) != 2 {
		t.Fatalf("login forms: %+v", w.LoginForms)
	}
	rc := w.LoginForms[0]
	if rc.Method.Value != "POST" || rc.UserField.Value != "_user" || rc.FailStatus != 401 {
		t.Errorf("first form (method defaults to POST): %+v", rc)
	}
	if p, q := rc.FormPath(); p != "/" || q.Get("_task") != "login" {
		t.Errorf("FormPath: %q %v", p, q)
	}
	sogo := w.LoginForms[1]
	if name, val := sogo.FailHeaderMatch(); sogo.Method.Value != "POST" || name != "X-Login-Failed" || val != "yes" {
		t.Errorf("second form: %+v header %q=%q", sogo, name, val)
	}
	if w.Timeouts.Idle.D.Seconds() != 90 || w.Timeouts.Command.D.Seconds() != 5 {
		t.Errorf("timeouts: %+v", w.Timeouts)
	}
	one, err := Parse("c.yaml", []byte("services:\n  web: { listen: \":80\", backend: \"https://mail.example.com\" }\n"))
	if err != nil || one.Services[service.Web].WebBackends()[0] != "https://mail.example.com" {
		t.Errorf("one backend: %v", err)
	}
}

func TestParseLoginFormRoutes(t *testing.T) {
	f, err := Parse("c.yaml", []byte(`services:
  web:
    listen: ":443"
    backend: "http://127.0.0.1:8080"
    login_forms:
      - paths: ["/", "/index.php", "/index.php/*"]
        params: ["_task=login", "_action=login"]
        user_field: _user
        password_field: _pass
        max_body: 128KB
        fail_status: 401
      - { path: "/?_task=login", user_field: _user, fail_status: 401 }
`))
	if err != nil {
		t.Fatal(err)
	}
	forms := f.Services[service.Web].Web.LoginForms
	paths, params := forms[0].FormRoutes()
	if strings.Join(paths, " ") != "/ /index.php /index.php/*" || params.Get("_action") != "login" || params.Get("_task") != "login" ||
		forms[0].MaxBody.Bytes != 128<<10 || forms[0].Method.Value != "POST" {
		t.Errorf("paths %v params %v form %+v", paths, params, forms[0])
	}
	paths, params = forms[1].FormRoutes()
	if strings.Join(paths, " ") != "/" || len(params) != 1 || params.Get("_task") != "login" {
		t.Errorf("the older layout: paths %v params %v", paths, params)
	}
}

func TestWebErrors(t *testing.T) {
	web := func(s string) string { return "services:\n  web: { listen: \":443\", " + s + " }\n" }
	for _, c := range []struct{ name, yaml, want string }{
		{"no backend", web(`grant: "1.1.1.1"`), "c.yaml:2:3: service web needs a backend"},
		{"both", web(`backend: "http://a:1", backends: ["http://b:1"]`), "c.yaml:2:35: service web: give backend (one) or backends"},
		{"mixed schemes", web(`backends: ["http://a:1", "https://b:1"]`), `c.yaml:2:51: backends must all be http:// or all https://`},
		{"path in backend", web(`backend: "http://a:1/webmail"`), "requests keep their own path"},
		{"no scheme", web(`backends: ["a:1"]`), `bad web backend "a:1"`},
		{"bad port", web(`backend: "http://a:99999"`), "port must be 1-65535"},
		{"backend_tls", web(`backend: "http://a:1", backend_tls: tls`), "write the backend as https://"},
		{"data timeout", web(`backend: "http://a:1", timeouts: { data: 1s }`), `unknown key "data" (applies to SMTP services only)`},
		{"form without user field", web(`backend: "http://a:1", login_forms: [{ path: /login, fail_status: 401 }]`), "needs user_field"},
		{"form without failure", web(`backend: "http://a:1", login_forms: [{ path: /login, user_field: u }]`), "needs a failure match"},
		{"form path", web(`backend: "http://a:1", login_forms: [{ path: login, user_field: u, fail_status: 401 }]`), "path starting with /"},
		{"form method", web(`backend: "http://a:1", login_forms: [{ method: DELETE, path: /l, user_field: u, fail_status: 401 }]`), `bad login form method "DELETE"`},
		{"form status", web(`backend: "http://a:1", login_forms: [{ path: /l, user_field: u, fail_status: 42 }]`), "fail_status 42 is not an HTTP status"},
		{"form header", web(`backend: "http://a:1", login_forms: [{ path: /l, user_field: u, fail_header: "X Bad: 1" }]`), `bad fail_header "X Bad: 1"`},
		{"unknown form key", web(`backend: "http://a:1", login_forms: [{ path: /l, user_feld: u, fail_status: 401 }]`), `unknown key "user_feld" (did you mean "user_field"?)`},
		{"form without any path", web(`backend: "http://a:1", login_forms: [{ user_field: u, fail_status: 401 }]`), "login form needs a path"},
		{"form paths query", web(`backend: "http://a:1", login_forms: [{ paths: ["/", "/index.php?x=1"], user_field: u, fail_status: 401 }]`), `c.yaml:2:78: login form paths: "/index.php?x=1" has a query`},
		{"form paths relative", web(`backend: "http://a:1", login_forms: [{ paths: [index.php], user_field: u, fail_status: 401 }]`), `login form paths: "index.php" does not start with /`},
		{"form paths star", web(`backend: "http://a:1", login_forms: [{ paths: ["/a*/b"], user_field: u, fail_status: 401 }]`), `only as a last segment`},
		{"form params", web(`backend: "http://a:1", login_forms: [{ paths: ["/"], params: ["_action"], user_field: u, fail_status: 401 }]`), `c.yaml:2:88: login form params: want name=value`},
		{"form params array", web(`backend: "http://a:1", login_forms: [{ paths: ["/"], params: ["a[]=1"], user_field: u, fail_status: 401 }]`), `login form params: want name=value`},
		{"form user field array", web(`backend: "http://a:1", login_forms: [{ path: /l, user_field: "u[]", fail_status: 401 }]`), `login form user_field "u[]": want a plain field name`},
		{"form max_body", web(`backend: "http://a:1", login_forms: [{ path: /l, user_field: u, fail_status: 401, max_body: 1GB }]`), `max_body must be at most 16MB`},
		{"backends on imap", "services:\n  imap: { listen: \":143\", backend: \"b:1\", backends: [\"b:2\"] }\n", `c.yaml:2:43: unknown key "backends" (applies to the web service only)`},
		{"idle on imap", "services:\n  imap: { listen: \":143\", backend: \"b:1\", timeouts: { idle: 1m } }\n", `c.yaml:2:55: unknown key "idle" (applies to the web service only)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(c.yaml))
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if msg := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), ""); !strings.Contains(msg, c.want) {
				t.Fatalf("error:\n%s\nwant it to contain:\n%s", msg, c.want)
			}
		})
	}
}
