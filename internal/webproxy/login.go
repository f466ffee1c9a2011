package webproxy

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/policy"
)

type attemptKey struct{}

// attempt is one recognised login request on its way to the backend.
type attempt struct {
	form    *LoginForm
	cc      *clientConn
	account string // "" when the form did not name it (or was too large to read)
	// login is the attempt in the login gate; nil without a guard
	// session. With login.Refused (the login IP restriction refused it)
	// the request goes to the backend with a decoy password, so that the
	// refusal is the webmail's own failure page in the webmail's own time.
	login    *gate.Attempt
	decision guard.Decision
	sent     time.Time // when the request went to the backend
}

// loginForm returns the login form whose method and paths a request is
// on, if any. Whether it is a login attempt is decided by checkLogin,
// which reads it.
func (p *Proxy) loginForm(r *http.Request) *LoginForm {
	clean := ""
	for i := range p.cfg.LoginForms {
		f := &p.cfg.LoginForms[i]
		if !strings.EqualFold(f.Method, r.Method) {
			continue
		}
		if clean == "" {
			clean = policy.CleanPath(r.URL.EscapedPath())
		}
		for _, fp := range f.Paths {
			if fp.matches(clean) {
				return f
			}
		}
	}
	return nil
}

// checkLogin reads a request on a login form's paths the way the
// application will: the query, the cookies and (but for GET) up to the
// form's limit of the body. A request it cannot read with certainty is
// refused (400, 413 or 415) and never reaches the backend. A request that
// is not a login attempt goes on with at nil. For a login attempt it
// refuses the account when the login IP restriction does not allow it from
// this address (the configured failure answer, counted as L), and
// otherwise applies account protection's delay. done is true when the
// request has been answered.
func (p *Proxy) checkLogin(w http.ResponseWriter, r *http.Request, cc *clientConn, f *LoginForm) (at *attempt, done bool) {
	at = &attempt{form: f, cc: cc}
	var user, pass string
	spec := formSpec{user: f.UserField, pass: f.PasswordField, params: f.Params}
	// The query and the cookies first: they alone may make it a login.
	early, err := readForm(&spec, r.Header, r.URL.RawQuery, nil, false)
	if err != nil {
		p.unreadableLogin(w, r, cc, asUnreadable(err))
		return nil, true
	}
	var body []byte
	hasBody := false
	if !strings.EqualFold(r.Method, http.MethodGet) && r.Body != nil && r.Body != http.NoBody {
		limit := f.MaxBody
		if limit <= 0 {
			limit = p.cfg.MaxLoginBody
		}
		if r.ContentLength > limit && early.identified {
			p.unreadableLogin(w, r, cc, refuse(http.StatusRequestEntityTooLarge, "a login of %d bytes, over the form's limit of %d", r.ContentLength, limit))
			return nil, true
		}
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(p.cfg.BodyTimeout))
		buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		rc.SetReadDeadline(time.Time{})
		if err != nil {
			p.log.Info("reading a login form failed", "client", cc.addr.String(), "err", err)
			p.page(w, r, cc, http.StatusBadRequest, "The request could not be read.", true)
			return nil, true
		}
		r.Header.Del("Expect") // the body has started: no need to wait for the backend's 100 Continue
		if int64(len(buf)) > limit {
			// Too long to hold: a login is refused; anything else is
			// streamed through a scanner that ends it at a login field.
			if early.identified {
				p.unreadableLogin(w, r, cc, refuse(http.StatusRequestEntityTooLarge, "a login over the form's limit of %d bytes", limit))
				return nil, true
			}
			sc, err := newScanner(&spec, r.Header)
			if err == nil && sc == nil {
				err = refuse(http.StatusRequestEntityTooLarge, "a body over the form's limit of %d bytes that cannot be scanned", limit)
			}
			if err != nil {
				p.unreadableLogin(w, r, cc, asUnreadable(err))
				return nil, true
			}
			r.Body = newScanBody(readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}, sc)
			return nil, false
		}
		r.Body = io.NopCloser(bytes.NewReader(buf))
		r.ContentLength = int64(len(buf))
		r.TransferEncoding = nil
		body, hasBody = buf, true
	}
	rd, err := readForm(&spec, r.Header, r.URL.RawQuery, body, hasBody)
	if err != nil {
		p.unreadableLogin(w, r, cc, asUnreadable(err))
		return nil, true
	}
	if !rd.identified {
		return nil, false
	}
	user, pass = rd.user, rd.pass
	at.account = user
	if cc.gs == nil {
		return at, false
	}
	lg, d := p.logins.Begin(r.Context(), cc.gs, p.policy(), cc.addr,
		gate.Credentials{User: user, Pass: pass, NoPassword: f.PasswordField == "" || pass == ""},
		p.log.With("client", cc.addr.String()))
	if lg == nil {
		at.decision = d
		p.log.Info("login attempt refused", "client", cc.addr.String(), "account", user, "blocked", d.Blocked, "reason", d.Reason.String())
		// As every request of a blocked address (refusedNow): the page;
		// the connection may stay, since every later login on it is
		// refused the same way.
		p.page(w, r, cc, http.StatusForbidden, d.Refusal(), true)
		return at, true
	}
	at.login = lg
	if !lg.Refused {
		return at, false
	}
	if early.pass == "" && hasBody {
		if rewritten, ok := withDecoy(r.Header, body, f.PasswordField, lg.Pass); ok {
			// The webmail checks a decoy and fails it: its own page,
			// its own time. The client's password stays here.
			r.Body = io.NopCloser(bytes.NewReader(rewritten))
			r.ContentLength = int64(len(rewritten))
			return at, false
		}
	}
	// No decoy can be put in this request: it is refused here, after as
	// long as the backend takes to fail a login (a draw from its recent
	// failures), the attempt held in flight meanwhile as a real one is; a
	// client that goes away ends the wait.
	if !p.delay(r.Context(), p.failTimes.Draw()) {
		at.decision = lg.Failed()
		return at, true
	}
	at.decision = lg.Failed()
	p.loginFailedPage(w, r, cc, f, at.decision)
	if at.decision.Action == guard.Close {
		p.closeAfter(w, r, cc)
	}
	return at, true
}

// asUnreadable returns err as an *unreadable (400 when it is another
// error).
func asUnreadable(err error) *unreadable {
	var u *unreadable
	if !errors.As(err, &u) {
		u = refuse(http.StatusBadRequest, "%v", err)
	}
	return u
}

// unreadableLogin refuses a request on a login form's paths that postern
// cannot read as the application will.
func (p *Proxy) unreadableLogin(w http.ResponseWriter, r *http.Request, cc *clientConn, u *unreadable) {
	p.log.Info("login request refused: cannot be read with certainty", "client", cc.addr.String(), "via_upstream", cc.trusted,
		"path", truncate(r.URL.Path, 200), "why", u.why)
	text := "The login request could not be read."
	if u.status == http.StatusRequestEntityTooLarge {
		text = "The login request is too large."
	}
	p.page(w, r, cc, u.status, text, true)
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
	failed := at.form.failed(resp)
	if failed && !at.sent.IsZero() {
		p.failTimes.Record(time.Since(at.sent))
	}
	o := gate.Rejected
	if !failed {
		// What is no failure is a login when it is no error, and always
		// for a decoy: what the webmail answered a refused login (a
		// session) never reaches the client.
		o = gate.Answered
		if resp.StatusCode < 400 || at.login.Refused {
			o = gate.Accepted
		}
	}
	o, at.decision = at.login.Report(o)
	switch o {
	case gate.DecoyAccepted:
		return errDecoyAccepted
	case gate.Accepted, gate.Answered:
		return nil
	}
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

// errDecoyAccepted: the webmail logged a refused login in with its decoy.
var errDecoyAccepted = errors.New("the webmail accepted a decoy password")

// withDecoy returns an urlencoded form body with the value of field
// replaced by pass, every other byte as it was; false when the body is not
// urlencoded or does not hold field exactly once (the form reader has
// refused duplicates and other spellings already).
func withDecoy(h http.Header, body []byte, field, pass string) ([]byte, bool) {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" || field == "" {
		return nil, false
	}
	pairs := strings.Split(string(body), "&")
	found := 0
	for i, pair := range pairs {
		k, _, _ := strings.Cut(pair, "=")
		if key, err := url.QueryUnescape(k); err == nil && key == field {
			pairs[i] = k + "=" + url.QueryEscape(pass)
			found++
		}
	}
	if found != 1 {
		return nil, false
	}
	return []byte(strings.Join(pairs, "&")), true
}

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
