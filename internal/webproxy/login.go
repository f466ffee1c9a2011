package webproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/policy"
)

type attemptKey struct{}

// attempt is one recognised login request on its way to the backend.
type attempt struct {
	form     *LoginForm
	cc       *clientConn
	account  string // "" when the form did not name it (or was too large to read)
	fp       uint64
	login    *guard.Login // the attempt in flight; nil without a guard session
	decision guard.Decision
}

// loginForm returns the login form a request is for, if any.
func (p *Proxy) loginForm(r *http.Request) *LoginForm {
	clean := ""
	for i := range p.cfg.LoginForms {
		f := &p.cfg.LoginForms[i]
		if f.Method != r.Method {
			continue
		}
		if clean == "" {
			clean = policy.CleanPath(r.URL.EscapedPath())
		}
		if !strings.EqualFold(clean, f.Path) {
			continue
		}
		if len(f.Query) > 0 {
			q := r.URL.Query()
			ok := true
			for k, vs := range f.Query {
				if !hasAll(q[k], vs) {
					ok = false
					break
				}
			}
			if !ok {
				continue
			}
		}
		return f
	}
	return nil
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w || w == "" {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// checkLogin reads the account from a login request, refuses it when the
// login IP restriction does not allow the account from this address (the
// configured failure answer, counted as L), and otherwise applies account
// protection's delay. done is true when the request has been answered.
func (p *Proxy) checkLogin(w http.ResponseWriter, r *http.Request, cc *clientConn, f *LoginForm) (at *attempt, done bool) {
	at = &attempt{form: f, cc: cc}
	var user, pass string
	if r.Method == http.MethodGet {
		q := r.URL.Query()
		user, pass = q.Get(f.UserField), q.Get(f.PasswordField)
	} else if r.Body != nil && r.Body != http.NoBody {
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(p.cfg.BodyTimeout))
		buf, err := io.ReadAll(io.LimitReader(r.Body, p.cfg.MaxLoginBody+1))
		rc.SetReadDeadline(time.Time{})
		if err != nil {
			p.log.Info("reading a login form failed", "client", cc.addr.String(), "err", err)
			p.page(w, r, cc, http.StatusBadRequest, "The request could not be read.", true)
			return nil, true
		}
		if int64(len(buf)) > p.cfg.MaxLoginBody {
			r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		} else {
			r.Body = io.NopCloser(bytes.NewReader(buf))
			r.ContentLength = int64(len(buf))
			r.TransferEncoding = nil
			r.Header.Del("Expect") // the body is here: no need to wait for the backend's 100 Continue
			user, pass = formFields(r.Header.Get("Content-Type"), buf, f.UserField, f.PasswordField)
		}
	}
	user = strings.TrimSpace(user)
	if strings.ContainsAny(user, "\x00\r\n") || len(user) > 256 {
		user = ""
	}
	at.account = user
	if cc.gs == nil {
		return at, false
	}
	lg, d := cc.gs.BeginLogin(r.Context(), user)
	if lg == nil {
		at.decision = d
		p.log.Info("login attempt refused", "client", cc.addr.String(), "account", user, "blocked", d.Blocked, "reason", d.Reason.String())
		p.page(w, r, cc, http.StatusForbidden, refusalText(d.Reason), true)
		p.closeAfter(w, r, cc)
		return at, true
	}
	at.login = lg
	if user == "" {
		return at, false
	}
	if f.PasswordField != "" && pass != "" {
		at.fp = p.eng.PasswordFingerprint(strings.ToLower(user), pass)
	}
	if pol := p.policy(); pol != nil && !pol.AllowLogin(user, cc.addr) {
		p.log.Info("login refused by the login IP restriction", "client", cc.addr.String(), "account", user)
		at.decision = lg.Failed(at.fp)
		p.loginFailedPage(w, r, cc, f, at.decision)
		if at.decision.Action == guard.Close {
			p.closeAfter(w, r, cc)
		}
		return at, true
	}
	return at, false
}

type readCloser struct {
	io.Reader
	io.Closer
}

// formFields finds the user and password fields in a form body:
// application/x-www-form-urlencoded, multipart/form-data or a JSON object.
func formFields(ctype string, body []byte, userField, passField string) (user, pass string) {
	mt, params, _ := mime.ParseMediaType(ctype)
	switch {
	case mt == "multipart/form-data" && params["boundary"] != "":
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for range 64 {
			part, err := mr.NextPart()
			if err != nil {
				break
			}
			name := part.FormName()
			if name == userField || (passField != "" && name == passField) {
				v, _ := io.ReadAll(io.LimitReader(part, 4096))
				if name == userField {
					user = string(v)
				} else {
					pass = string(v)
				}
			}
			part.Close()
		}
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) == nil {
			user = jsonString(m[userField])
			if passField != "" {
				pass = jsonString(m[passField])
			}
		}
	default:
		q, _ := url.ParseQuery(string(body))
		user = q.Get(userField)
		if passField != "" {
			pass = q.Get(passField)
		}
	}
	return user, pass
}

func jsonString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// loginFailedPage answers a refused login the way the site answers a
// failed one, as far as the configuration says: the failure redirect, else
// the failure status (with the failure header when one is configured).
func (p *Proxy) loginFailedPage(w http.ResponseWriter, r *http.Request, cc *clientConn, f *LoginForm, d guard.Decision) {
	if f.FailHeader != "" {
		v := f.FailHeaderContains
		if v == "" {
			v = "1"
		}
		w.Header().Set(f.FailHeader, v)
	}
	closeConn := d.Action == guard.Close
	if f.FailRedirect != "" {
		if !p.delay(r.Context(), cc.delay()) {
			return
		}
		if closeConn && r.ProtoMajor < 2 {
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("Location", f.FailRedirect)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusFound)
		return
	}
	status := f.FailStatus
	if status == 0 || status < 400 {
		status = http.StatusForbidden
	}
	p.page(w, r, cc, status, "Login failed.", closeConn)
}

// modifyResponse recognises a failed login in the backend's answer.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	at, _ := resp.Request.Context().Value(attemptKey{}).(*attempt)
	if at == nil || at.cc == nil || at.cc.gs == nil {
		return nil
	}
	if !at.form.failed(resp) {
		if resp.StatusCode < 400 && at.account != "" {
			at.login.Succeeded()
		}
		at.login.Abandon()
		return nil
	}
	at.decision = at.login.Failed(at.fp)
	p.log.Info("webmail login failed", "client", at.cc.addr.String(), "account", at.account,
		"status", resp.StatusCode, "blocked", at.decision.Blocked)
	if at.decision.Delay > 0 {
		at.cc.tarpit.Store(int64(at.decision.Delay))
		if !p.delay(resp.Request.Context(), at.decision.Delay) {
			return errClientGone
		}
	}
	if at.decision.Action == guard.Close && resp.Request.ProtoMajor < 2 {
		resp.Header.Set("Connection", "close")
	}
	return nil
}

var errClientGone = errors.New("the client went away")

// failed reports whether a backend answer to the form is a failed login.
func (f *LoginForm) failed(resp *http.Response) bool {
	if f.FailStatus != 0 && resp.StatusCode == f.FailStatus {
		return true
	}
	if f.FailRedirect != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		loc := resp.Header.Get("Location")
		if strings.HasPrefix(loc, f.FailRedirect) {
			return true
		}
		if u, err := url.Parse(loc); err == nil && u.IsAbs() && strings.HasPrefix(u.RequestURI(), f.FailRedirect) {
			return true
		}
	}
	if f.FailHeader != "" {
		if vs, ok := resp.Header[f.FailHeader]; ok {
			if f.FailHeaderContains == "" {
				return true
			}
			for _, v := range vs {
				if strings.Contains(strings.ToLower(v), strings.ToLower(f.FailHeaderContains)) {
					return true
				}
			}
		}
	}
	return false
}
