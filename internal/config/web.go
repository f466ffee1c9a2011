package config

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/postern/postern/internal/diag"
)

// LoginForm is a webmail login form (HTTP): a request matching Method
// and Path is a login attempt for the account named by the form field
// UserField, and the backend's answer is a failed login (L) when it matches
// FailStatus, FailRedirect or FailHeader (any one that is set).
//
// The routing of a form is described by Path or Paths (the cleaned request
// paths the application answers the form on; an entry ending in "/*" also
// covers every path below it) and Params (name=value pairs that identify a
// login among the requests on those paths; each is looked for in the query,
// the body and the cookies, as PHP applications read them). A request on
// those paths is a login attempt when it carries one of the Params, or the
// user field, or when no Params are given.
type LoginForm struct {
	Method        Text   `yaml:"method" default:"POST"`
	Path          Text   `yaml:"path"`           // "/login", or with identifying parameters: "/?_task=login"
	Paths         []Text `yaml:"paths"`          // more paths: ["/", "/index.php", "/index.php/*"]
	Params        []Text `yaml:"params"`         // identifying parameters: ["_action=login"]
	MaxBody       Size   `yaml:"max_body"`       // bytes of a login request's body read (default 64KB); a longer one is refused
	UserField     Text   `yaml:"user_field"`     // form field (urlencoded, multipart or a JSON member) naming the account
	PasswordField Text   `yaml:"password_field"` // optional: a retry of the same wrong password counts once
	FailStatus    int    `yaml:"fail_status"`    // e.g. 401
	FailRedirect  Text   `yaml:"fail_redirect"`  // the Location of a failure starts with this, e.g. "/login?error"
	FailHeader    Text   `yaml:"fail_header"`    // "X-Login-Failed" (present) or "X-Auth: failed" (value contains)

	// The routes, parsed once when the file is decoded.
	routes      []string
	routeParams url.Values
}

// FormPath splits Path into the path and the query parameters a request
// must carry.
func (l *LoginForm) FormPath() (string, url.Values) {
	p, q, _ := strings.Cut(l.Path.Value, "?")
	v, _ := url.ParseQuery(q)
	return p, v
}

// FormRoutes returns every path of the form (Path without its query, then
// Paths) and its identifying parameters (those written after "?" in Path,
// then Params), as parsed when the file was decoded.
func (l *LoginForm) FormRoutes() (paths []string, params url.Values) {
	if l.routeParams != nil {
		return l.routes, l.routeParams
	}
	return l.parseRoutes()
}

func (l *LoginForm) parseRoutes() (paths []string, params url.Values) {
	params = url.Values{}
	if l.Path.IsSet() {
		p, q := l.FormPath()
		paths = append(paths, p)
		for k, vs := range q {
			params[k] = append(params[k], vs...)
		}
	}
	for _, p := range l.Paths {
		paths = append(paths, p.Value)
	}
	for _, kv := range l.Params {
		k, v, _ := strings.Cut(kv.Value, "=")
		params[k] = append(params[k], v)
	}
	return paths, params
}

// pos is where the form is written, for errors about the whole form.
func (l *LoginForm) pos() diag.Pos {
	switch {
	case l.Path.IsSet():
		return l.Path.Pos
	case len(l.Paths) > 0:
		return l.Paths[0].Pos
	case l.UserField.IsSet():
		return l.UserField.Pos
	}
	return l.Method.Pos
}

// name describes the form in errors.
func (l *LoginForm) name() string {
	if l.Path.IsSet() {
		return l.Path.Value
	}
	if len(l.Paths) > 0 {
		return l.Paths[0].Value
	}
	return "(no path)"
}

// FailHeaderMatch splits FailHeader into a header name and the text its
// value must contain ("" when presence is enough).
func (l *LoginForm) FailHeaderMatch() (name, contains string) {
	name, contains, _ = strings.Cut(l.FailHeader.Value, ":")
	return http.CanonicalHeaderKey(strings.TrimSpace(name)), strings.TrimSpace(contains)
}

// WebBackends returns the backend URLs of a web service: backend, or the
// backends list.
func (s *Service) WebBackends() []string {
	if s.Backend.IsSet() {
		return []string{s.Backend.Value}
	}
	if s.Web == nil {
		return nil
	}
	out := make([]string, 0, len(s.Web.Backends))
	for _, b := range s.Web.Backends {
		out = append(out, b.Value)
	}
	return out
}

// PathRules returns the path rules of a service (web only).
func (s *Service) PathRules() []PathRule {
	if s.Web == nil {
		return nil
	}
	return s.Web.Paths
}

func (f *File) validateWeb(d *decoder, svc *Service) {
	w := svc.Web
	var urls []Text
	switch {
	case svc.Backend.IsSet() && len(w.Backends) > 0:
		d.errs.Add(diag.Errorf(svc.Backend.Pos, "service web: give backend (one) or backends (a list), not both"))
	case svc.Backend.IsSet():
		urls = []Text{svc.Backend}
	case len(w.Backends) > 0:
		urls = w.Backends
	default:
		d.errs.Add(diag.Errorf(svc.pos, "service web needs a backend (backend: http://127.0.0.1:8080) or a list of backends"))
	}
	scheme := ""
	for _, b := range urls {
		u, err := checkWebBackend(b.Value)
		if err != nil {
			d.errs.Add(diag.Errorf(b.Pos, "%v", err))
			continue
		}
		if scheme != "" && u.Scheme != scheme {
			d.errs.Add(diag.Errorf(b.Pos, "backends must all be http:// or all https://"))
		}
		scheme = u.Scheme
	}
	for _, p := range w.Paths {
		if !strings.HasPrefix(p.Prefix.Value, "/") {
			d.errs.Add(diag.Errorf(p.Prefix.Pos, "path rule needs a prefix starting with /, got %q", p.Prefix.Value))
		}
		if !p.Grant.IsSet() && !p.Deny.IsSet() {
			d.errs.Add(diag.Errorf(p.Prefix.Pos, "path rule %s needs grant or deny", p.Prefix.Value))
		}
	}
	for i := range w.LoginForms {
		validateLoginForm(d, &w.LoginForms[i])
	}
}

func checkWebBackend(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bad web backend %q: want http://host:port or https://host:port", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("bad web backend %q: give only scheme, host and port; requests keep their own path", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("bad web backend %q: port must be 1-65535", s)
		}
	}
	if h := u.Hostname(); h == "" || strings.ContainsAny(h, " /") {
		return nil, fmt.Errorf("bad web backend %q: no host", s)
	} else if _, _, err := net.SplitHostPort(u.Host); err != nil && u.Port() != "" {
		return nil, fmt.Errorf("bad web backend %q: %w", s, err)
	}
	return u, nil
}

func validateLoginForm(d *decoder, l *LoginForm) {
	at, name := l.pos(), l.name()
	switch m := strings.ToUpper(strings.TrimSpace(l.Method.Value)); m {
	case "POST", "PUT", "PATCH", "GET":
		l.Method.Value = m
	default:
		d.errs.Add(diag.Errorf(l.Method.Pos, "bad login form method %q: want POST, PUT, PATCH or GET", l.Method.Value))
	}
	switch {
	case !l.Path.IsSet() && len(l.Paths) == 0:
		d.errs.Add(diag.Errorf(at, "login form needs a path (e.g. /login or \"/?_task=login\") or a list of paths"))
	case l.Path.IsSet() && !strings.HasPrefix(l.Path.Value, "/"):
		d.errs.Add(diag.Errorf(at, "login form needs a path starting with / (e.g. /login or /?_task=login), got %q", l.Path.Value))
	case l.Path.IsSet():
		if _, q, ok := strings.Cut(l.Path.Value, "?"); ok {
			if _, err := url.ParseQuery(q); err != nil {
				d.errs.Add(diag.Errorf(at, "login form path %q: bad query: %v", l.Path.Value, err))
			}
		}
	}
	for _, p := range l.Paths {
		switch {
		case !strings.HasPrefix(p.Value, "/"):
			d.errs.Add(diag.Errorf(p.Pos, "login form paths: %q does not start with /", p.Value))
		case strings.ContainsAny(p.Value, "?#"):
			d.errs.Add(diag.Errorf(p.Pos, "login form paths: %q has a query; write identifying parameters under params", p.Value))
		case strings.Contains(strings.TrimSuffix(p.Value, "/*"), "*"):
			d.errs.Add(diag.Errorf(p.Pos, "login form paths: %q: * is allowed only as a last segment /*", p.Value))
		}
	}
	for _, kv := range l.Params {
		k, _, ok := strings.Cut(kv.Value, "=")
		if !ok || k == "" || strings.ContainsAny(k, "[]. \x00&;=%") {
			d.errs.Add(diag.Errorf(kv.Pos, "login form params: want name=value with a plain name (e.g. _action=login), got %q", kv.Value))
		}
	}
	if l.MaxBody.Bytes < 0 || l.MaxBody.Bytes > 16<<20 {
		d.errs.Add(diag.Errorf(l.MaxBody.Pos, "login form max_body must be at most 16MB"))
	}
	if !l.UserField.IsSet() {
		d.errs.Add(diag.Errorf(at, "login form %s needs user_field (the form field that names the account)", name))
	} else if f := l.UserField.Value; f == "" || strings.ContainsAny(f, "[]. \x00&;=%") {
		d.errs.Add(diag.Errorf(l.UserField.Pos, "login form user_field %q: want a plain field name (no brackets, dots, spaces)", f))
	}
	if f := l.PasswordField.Value; l.PasswordField.IsSet() && (f == "" || strings.ContainsAny(f, "[]. \x00&;=%")) {
		d.errs.Add(diag.Errorf(l.PasswordField.Pos, "login form password_field %q: want a plain field name (no brackets, dots, spaces)", f))
	}
	if l.FailStatus == 0 && !l.FailRedirect.IsSet() && !l.FailHeader.IsSet() {
		d.errs.Add(diag.Errorf(at, "login form %s needs a failure match: fail_status, fail_redirect or fail_header", name))
	}
	if l.FailStatus != 0 && (l.FailStatus < 200 || l.FailStatus > 599) {
		d.errs.Add(diag.Errorf(at, "login form %s: fail_status %d is not an HTTP status (200-599)", name, l.FailStatus))
	}
	if l.FailHeader.IsSet() {
		if name, _ := l.FailHeaderMatch(); name == "" || strings.ContainsAny(name, " \t\r\n") {
			d.errs.Add(diag.Errorf(l.FailHeader.Pos, "bad fail_header %q: want a header name, or name: text", l.FailHeader.Value))
		}
	}
	l.routes, l.routeParams = l.parseRoutes()
}
