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

// LoginForm is a webmail login form (§7 HTTP): a request matching Method
// and Path is a login attempt for the account named by the form field
// UserField, and the backend's answer is a failed login (L) when it matches
// FailStatus, FailRedirect or FailHeader (any one that is set).
type LoginForm struct {
	Method        Text `yaml:"method"`         // default POST
	Path          Text `yaml:"path"`           // "/login", or with query parameters that must be present: "/?_task=login"
	UserField     Text `yaml:"user_field"`     // form field (urlencoded, multipart or a JSON member) naming the account
	PasswordField Text `yaml:"password_field"` // optional: a retry of the same wrong password counts once
	FailStatus    int  `yaml:"fail_status"`    // e.g. 401
	FailRedirect  Text `yaml:"fail_redirect"`  // the Location of a failure starts with this, e.g. "/login?error"
	FailHeader    Text `yaml:"fail_header"`    // "X-Login-Failed" (present) or "X-Auth: failed" (value contains)
}

// FormPath splits Path into the path and the query parameters a request
// must carry.
func (l *LoginForm) FormPath() (string, url.Values) {
	p, q, _ := strings.Cut(l.Path.Value, "?")
	v, _ := url.ParseQuery(q)
	return p, v
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
	out := make([]string, 0, len(s.Backends))
	for _, b := range s.Backends {
		out = append(out, b.Value)
	}
	return out
}

func (f *File) validateWeb(d *decoder, svc *Service) {
	var urls []Text
	switch {
	case svc.Backend.IsSet() && len(svc.Backends) > 0:
		d.errs.Add(diag.Errorf(svc.Backend.Pos, "service web: give backend (one) or backends (a list), not both"))
	case svc.Backend.IsSet():
		urls = []Text{svc.Backend}
	case len(svc.Backends) > 0:
		urls = svc.Backends
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
	if svc.BackendTLS.IsSet() {
		d.errs.Add(diag.Errorf(svc.BackendTLS.Pos, "backend_tls does not apply to web: write the backend as https://host:port"))
	}
	for _, t := range []Duration{svc.Timeouts.Data, svc.Timeouts.Session} {
		if t.Set {
			d.errs.Add(diag.Errorf(t.Pos, "web takes timeouts command (request headers), idle, connect and backend"))
		}
	}
	if svc.MaxLineLength != 0 {
		d.errs.Add(diag.Errorf(svc.pos, "max_line_length does not apply to web"))
	}
	for i := range svc.LoginForms {
		validateLoginForm(d, &svc.LoginForms[i])
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
	at := l.Path.Pos
	if l.Method.IsSet() {
		m := strings.ToUpper(strings.TrimSpace(l.Method.Value))
		switch m {
		case "POST", "PUT", "PATCH", "GET":
			l.Method.Value = m
		default:
			d.errs.Add(diag.Errorf(l.Method.Pos, "bad login form method %q: want POST, PUT, PATCH or GET", l.Method.Value))
		}
	} else {
		l.Method.Value = "POST"
	}
	if !strings.HasPrefix(l.Path.Value, "/") {
		d.errs.Add(diag.Errorf(at, "login form needs a path starting with / (e.g. /login or /?_task=login), got %q", l.Path.Value))
	} else if _, q, ok := strings.Cut(l.Path.Value, "?"); ok {
		if _, err := url.ParseQuery(q); err != nil {
			d.errs.Add(diag.Errorf(at, "login form path %q: bad query: %v", l.Path.Value, err))
		}
	}
	if !l.UserField.IsSet() {
		d.errs.Add(diag.Errorf(at, "login form %s needs user_field (the form field that names the account)", l.Path.Value))
	}
	if l.FailStatus == 0 && !l.FailRedirect.IsSet() && !l.FailHeader.IsSet() {
		d.errs.Add(diag.Errorf(at, "login form %s needs a failure match: fail_status, fail_redirect or fail_header", l.Path.Value))
	}
	if l.FailStatus != 0 && (l.FailStatus < 200 || l.FailStatus > 599) {
		d.errs.Add(diag.Errorf(at, "login form %s: fail_status %d is not an HTTP status (200-599)", l.Path.Value, l.FailStatus))
	}
	if l.FailHeader.IsSet() {
		if name, _ := l.FailHeaderMatch(); name == "" || strings.ContainsAny(name, " \t\r\n") {
			d.errs.Add(diag.Errorf(l.FailHeader.Pos, "bad fail_header %q: want a header name, or name: text", l.FailHeader.Value))
		}
	}
}
