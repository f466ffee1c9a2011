package console

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

// page is what every template gets.
type page struct {
	Title  string
	Nav    string
	User   string
	CSRF   string
	Flash  string
	Error  string
	Data   any
	Reload bool
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	assets, _ := fs.Sub(assetFS, "assets")
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(assets)))
	mux.HandleFunc("GET /signin", s.signinPage)
	mux.HandleFunc("POST /signin", s.signin)
	mux.HandleFunc("POST /signout", s.auth(s.signout))
	mux.HandleFunc("GET /{$}", s.auth(s.dashboard))
	mux.HandleFunc("GET /traffic", s.auth(s.traffic))
	mux.HandleFunc("GET /blocks", s.auth(s.blocksPage))
	mux.HandleFunc("GET /blocks/rows", s.auth(s.blockRows))
	mux.HandleFunc("POST /blocks/add", s.auth(s.addBlock))
	mux.HandleFunc("POST /blocks/action", s.auth(s.blockAction))
	mux.HandleFunc("POST /blocks/purge", s.auth(s.purge))
	mux.HandleFunc("GET /blocks/export", s.auth(s.export))
	mux.HandleFunc("POST /blocks/import", s.auth(s.importBlocks))
	mux.HandleFunc("GET /events", s.auth(s.events))
	mux.HandleFunc("GET /explain", s.auth(s.explainPage))
	mux.HandleFunc("GET /audit", s.auth(s.auditPage))
	mux.HandleFunc("GET /passes", s.auth(s.passesPage))
	mux.HandleFunc("POST /passes/add", s.auth(s.addPass))
	mux.HandleFunc("POST /passes/remove", s.auth(s.removePass))
	mux.HandleFunc("GET /config", s.auth(s.configPage))
	mux.HandleFunc("POST /config/reload", s.auth(s.reload))
	return mux
}

// serveHTTP sets the headers every answer carries, refuses addresses
// outside the grant and blocked ones, then routes.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.reqWG.Add(1)
	defer s.reqWG.Done()
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	if s.opts.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	addr, ok := clientAddr(r)
	if !ok || !s.opts.Grant(addr) {
		s.log.Warn("console: request refused: address not granted", "remote", r.RemoteAddr)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	if _, blocked := s.opts.Engine.BlockOf(addr); blocked {
		s.log.Warn("console: request refused: address blocked", "remote", addr)
		http.Error(w, "forbidden: your address is blocked", http.StatusForbidden)
		return
	}
	if r.URL.Path != "/events" { // the live feed sets a deadline per write
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeTimeout))
	}
	if r.Method == http.MethodPost {
		limit := int64(maxFormBytes)
		if r.URL.Path == "/blocks/import" {
			limit = maxImportBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	s.mux.ServeHTTP(w, r)
}

func clientAddr(r *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap().WithZone(""), true
}

// authed is a handler that runs for a signed-in user.
type authed func(w http.ResponseWriter, r *http.Request, ss *session)

// auth runs h for a signed-in user (else sends the browser to sign in)
// and refuses a change without the session's CSRF token.
func (s *Server) auth(h authed) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		addr, _ := clientAddr(r)
		ss := s.sessionOf(r, addr)
		if ss == nil {
			if r.Method == http.MethodGet && r.URL.Path != "/events" && r.URL.Path != "/blocks/rows" {
				http.Redirect(w, r, "/signin", http.StatusSeeOther)
				return
			}
			http.Error(w, "signed out: sign in again", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodGet && !csrfOK(r, ss.csrf) {
			s.log.Warn("console: change refused: missing or wrong CSRF token", "user", ss.user, "remote", addr, "path", r.URL.Path)
			http.Error(w, "forbidden: missing or wrong CSRF token; reload the page", http.StatusForbidden)
			return
		}
		h(w, r, ss)
	}
}

func (s *Server) render(w http.ResponseWriter, status int, name string, p page) {
	t := s.tmpl[name]
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "base", p); err != nil {
		s.log.Error("console: page failed", "page", name, "err", err)
		http.Error(w, "internal error (details in the postern log)", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) pageFor(ss *session, nav, title string) page {
	return page{Title: title, Nav: nav, User: ss.user, CSRF: ss.csrf, Flash: s.takeFlash(ss), Reload: s.opts.Reload != nil}
}

// actor names a console user in the audit log.
func actor(ss *session) string { return "console:" + ss.user }

// --- sign-in ---

func (s *Server) signinPage(w http.ResponseWriter, r *http.Request) {
	s.signinForm(w, http.StatusOK, "")
}

// signinForm shows the form with a fresh double-submit token: the same
// random value in a cookie and in the form.
func (s *Server) signinForm(w http.ResponseWriter, status int, msg string) {
	tok := randomToken()
	s.setCookie(w, s.preCookieName(), tok, 600)
	s.render(w, status, "signin", page{Title: "Sign in", CSRF: tok, Error: msg})
}

// signin checks a user's password (or the admin token) as a login the
// engine counts: a failure is a failed login (L) of the address.
func (s *Server) signin(w http.ResponseWriter, r *http.Request) {
	addr, _ := clientAddr(r)
	pre, err := r.Cookie(s.preCookieName())
	if err != nil || !csrfOK(r, pre.Value) {
		s.signinForm(w, http.StatusForbidden, "The form expired; try again.")
		return
	}
	user := strings.TrimSpace(r.PostFormValue("user"))
	password := r.PostFormValue("password")
	account := "console:" + user
	if user == "" {
		account = "console:token"
	}
	gs, d := s.opts.Engine.Open(addr, LoginService, nil)
	if gs == nil || d.Action == guard.Close {
		s.signinForm(w, http.StatusForbidden, "Refused: your address is blocked.")
		return
	}
	defer gs.Close()
	login, _ := gs.BeginLogin(r.Context(), account)
	if login == nil {
		s.signinForm(w, http.StatusForbidden, "Refused: your address is blocked.")
		return
	}
	defer login.Abandon()
	name, ok, err := s.check(user, password)
	if err != nil {
		s.log.Error("console: sign-in not checked", "err", err)
		s.signinForm(w, http.StatusInternalServerError, "Sign-in is not available (details in the postern log).")
		return
	}
	if !ok {
		d := login.Failed(s.opts.Engine.PasswordFingerprint(account, password))
		s.log.Warn("console: sign-in failed", "user", user, "remote", addr, "blocked", d.Action == guard.Close)
		s.signinForm(w, http.StatusUnauthorized, "Wrong user name or password.")
		return
	}
	login.Succeeded()
	s.log.Info("console: signed in", "user", name, "remote", addr)
	s.setCookie(w, s.preCookieName(), "", -1)
	s.newSession(w, name, addr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// check says whether password is user's; an empty user signs in with
// the admin API token as "token".
func (s *Server) check(user, password string) (string, bool, error) {
	if user == "" {
		if s.opts.Token == "" {
			return "", false, nil
		}
		a, b := sha256.Sum256([]byte(password)), sha256.Sum256([]byte(s.opts.Token))
		return "token", subtle.ConstantTimeCompare(a[:], b[:]) == 1, nil
	}
	var users map[string]phc
	if s.opts.UsersFile != "" {
		var err error
		if users, err = readUsers(s.opts.UsersFile); err != nil {
			return "", false, err
		}
	}
	h, found := users[user]
	if !found {
		dummy.check(password) // the same time as for a user that exists
		return "", false, nil
	}
	return user, h.check(password), nil
}

func (s *Server) signout(w http.ResponseWriter, r *http.Request, ss *session) {
	s.endSession(w, ss)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// --- blocked IPs ---

// blocksView is the Blocked IPs page.
type blocksView struct {
	Q         url.Values
	Query     string // the filter as a query string, for the live feed and export
	Rows      []row
	Countries bool // the Country filter is offered
	Reasons   []reason.Code
	Services  []string
	Now       time.Time
}

func (s *Server) filtered(r *http.Request) (blocksView, error) {
	q := url.Values{}
	for _, k := range []string{"reason", "service", "search", "since", "active", "country"} {
		if v := strings.TrimSpace(r.URL.Query().Get(k)); v != "" {
			q.Set(k, v)
		}
	}
	v := blocksView{Q: q, Query: q.Encode(), Reasons: reason.All, Now: s.opts.Engine.Now()}
	for _, sv := range service.All {
		v.Services = append(v.Services, sv.String())
	}
	v.Services = append(v.Services, service.Console.String()) // blocks from console sign-ins
	v.Countries = s.opts.Country != nil
	aq := url.Values{}
	for k, vs := range q {
		if k != "country" {
			aq[k] = vs
		}
	}
	f, err := admin.ParseFilter(aq, v.Now)
	if err != nil {
		return v, err
	}
	cc := strings.ToUpper(q.Get("country"))
	if cc != "" && s.opts.Country == nil {
		return v, errors.New("country: no GeoIP database is configured")
	}
	for _, b := range admin.Blocks(s.opts.Engine, f) {
		r := row{Block: b}
		if s.opts.Country != nil {
			r.Country = s.opts.Country(b.Prefix.Addr())
		}
		if cc == "" || r.Country == cc {
			v.Rows = append(v.Rows, r)
		}
	}
	return v, nil
}

// row is a block as the queue shows it.
type row struct {
	admin.Block
	Country string
}

func (s *Server) blocksPage(w http.ResponseWriter, r *http.Request, ss *session) {
	v, err := s.filtered(r)
	p := s.pageFor(ss, "blocks", "Blocked IPs")
	p.Data = v
	status := http.StatusOK
	if err != nil {
		p.Error = "Filter: " + err.Error()
		status = http.StatusBadRequest
	}
	s.render(w, status, "blocks", p)
}

// blockRows answers the table's rows alone, for the live update.
func (s *Server) blockRows(w http.ResponseWriter, r *http.Request, ss *session) {
	v, err := s.filtered(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var buf bytes.Buffer
	if err := s.tmpl["blocks"].ExecuteTemplate(&buf, "rows", v); err != nil {
		s.log.Error("console: rows failed", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

// done finishes a change: the message for the next page, and back to
// the queue (keeping its filter).
func (s *Server) done(w http.ResponseWriter, r *http.Request, ss *session, msg string) {
	s.setFlash(ss, msg)
	back := "/blocks"
	if q := r.PostFormValue("back"); q != "" {
		if _, err := url.ParseQuery(q); err == nil {
			back += "?" + q
		}
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// failMsg words an operation's error: the caller's fault with its text,
// else a pointer to the log.
func (s *Server) failMsg(what string, err error) string {
	switch {
	case errors.Is(err, admin.ErrLockout):
		return what + ": this would block your own address; tick \"I know\" to do it anyway."
	case errors.Is(err, admin.ErrBadRequest):
		return what + ": " + err.Error()
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Sprintf("%s: larger than %d bytes.", what, mbe.Limit)
	}
	s.log.Error("console: "+what+" failed", "err", err)
	return what + ": failed (details in the postern log)."
}

func (s *Server) addBlock(w http.ResponseWriter, r *http.Request, ss *session) {
	addr, _ := clientAddr(r)
	req := admin.AddRequest{
		Target:   r.PostFormValue("target"),
		Duration: r.PostFormValue("duration"),
		Comment:  r.PostFormValue("comment"),
		Force:    r.PostFormValue("force") == "on",
	}
	_, result, err := admin.AddBlock(r.Context(), s.opts.Engine, req, addr, actor(ss))
	if err != nil {
		s.done(w, r, ss, s.failMsg("Block", err))
		return
	}
	s.log.Info("console request", "user", ss.user, "remote", addr, "result", result)
	s.done(w, r, ss, strings.ToUpper(result[:1])+result[1:]+".")
}

func (s *Server) blockAction(w http.ResponseWriter, r *http.Request, ss *session) {
	addr, _ := clientAddr(r)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	var prefixes []netip.Prefix
	for _, t := range r.PostForm["target"] {
		p, err := admin.ParseTarget(t)
		if err != nil {
			s.done(w, r, ss, "Bad selection: "+err.Error())
			return
		}
		if !slices.Contains(prefixes, p) {
			prefixes = append(prefixes, p)
		}
	}
	if len(prefixes) == 0 {
		s.done(w, r, ss, "Select at least one row.")
		return
	}
	var msg string
	switch r.PostFormValue("action") {
	case "unblock":
		n, err := s.opts.Engine.Unblock(r.Context(), prefixes, actor(ss))
		if err != nil {
			msg = s.failMsg("Unblock", err)
		} else {
			msg = fmt.Sprintf("Unblocked %d.", n)
		}
	case "extend":
		d, err := admin.ParseBlockDuration(r.PostFormValue("extend"))
		if err != nil || d <= 0 {
			s.done(w, r, ss, "Extend: want a duration such as 4h or 7d.")
			return
		}
		n, err := admin.AmendBlocks(r.Context(), s.opts.Engine, prefixes, admin.Amend{Extend: d, Force: r.PostFormValue("force") == "on"}, addr, actor(ss))
		if err != nil {
			msg = s.failMsg("Extend", err)
		} else {
			msg = fmt.Sprintf("Extended %d by %s.", n, r.PostFormValue("extend"))
		}
	case "comment":
		c := r.PostFormValue("comment")
		n, err := admin.AmendBlocks(r.Context(), s.opts.Engine, prefixes, admin.Amend{Comment: &c, Force: r.PostFormValue("force") == "on"}, addr, actor(ss))
		if err != nil {
			msg = s.failMsg("Comment", err)
		} else {
			msg = fmt.Sprintf("Commented %d.", n)
		}
	default:
		msg = "Choose unblock, extend or comment."
	}
	s.log.Info("console request", "user", ss.user, "remote", addr, "action", r.PostFormValue("action"), "result", msg)
	s.done(w, r, ss, msg)
}

func (s *Server) purge(w http.ResponseWriter, r *http.Request, ss *session) {
	n, err := s.opts.Engine.PurgeExpired(r.Context(), actor(ss))
	if err != nil {
		s.done(w, r, ss, s.failMsg("Purge", err))
		return
	}
	s.done(w, r, ss, fmt.Sprintf("Purged %d expired blocks.", n))
}

// importBlocks imports an uploaded export (CSV or JSON), all or nothing,
// through the API's import with its checks.
func (s *Server) importBlocks(w http.ResponseWriter, r *http.Request, ss *session) {
	addr, _ := clientAddr(r)
	f, hdr, err := r.FormFile("file")
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.done(w, r, ss, fmt.Sprintf("Import: the file is larger than %d MiB.", maxImportBytes>>20))
			return
		}
		s.done(w, r, ss, "Import: choose a CSV or JSON file exported by postern.")
		return
	}
	defer f.Close()
	mt := "text/csv"
	if strings.HasSuffix(strings.ToLower(hdr.Filename), ".json") {
		mt = "application/json"
	}
	n, err := admin.ImportBlocks(r.Context(), s.opts.Engine, f, mt, r.PostFormValue("force") == "on", addr, actor(ss))
	if err != nil {
		s.done(w, r, ss, s.failMsg("Import", err))
		return
	}
	s.log.Info("console request", "user", ss.user, "remote", addr, "result", fmt.Sprintf("imported %d", n))
	s.done(w, r, ss, fmt.Sprintf("Imported %d.", n))
}

func (s *Server) export(w http.ResponseWriter, r *http.Request, ss *session) {
	format := r.URL.Query().Get("format")
	if format != admin.FormatCSV && format != admin.FormatJSON {
		http.Error(w, "format: want csv or json", http.StatusBadRequest)
		return
	}
	var buf bytes.Buffer
	if err := admin.Export(&buf, s.opts.Engine, format); err != nil {
		s.log.Error("console: export failed", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	ct := "application/json"
	if format == admin.FormatCSV {
		ct = "text/csv; charset=utf-8"
	}
	name := "postern-blocks-" + s.opts.Engine.Now().UTC().Format("20060102T150405Z") + "." + format
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	_, _ = w.Write(buf.Bytes())
}

// version fingerprints the block table: it changes when a block is made,
// removed, counted or changed.
func (s *Server) version() uint64 {
	h := fnv.New64a()
	var b []byte
	for _, bl := range s.opts.Engine.Blocks() {
		b = bl.Prefix.AppendTo(b[:0])
		b = strconv.AppendInt(b, bl.LastSeen.UnixNano(), 10)
		b = strconv.AppendInt(b, bl.Expires.UnixNano(), 10)
		b = strconv.AppendInt(b, bl.Hits, 10)
		b = append(b, bl.Comment...)
		b = append(b, 0)
		h.Write(b)
	}
	return h.Sum64()
}

// events is the live feed (Server-Sent Events): a "blocks" event each time
// the block table changes. It ends after eventLifetime (the browser
// reconnects, and the session is checked again) or at shutdown.
func (s *Server) events(w http.ResponseWriter, r *http.Request, ss *session) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	updates, leave := s.feed.subscribe()
	defer leave()
	if _, err := fmt.Fprint(w, "retry: 2000\nevent: hello\ndata: \n\n"); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	end := time.NewTimer(eventLifetime)
	defer end.Stop()
	for {
		msg := ": ping\n\n"
		select {
		case <-r.Context().Done():
			return
		case <-end.C:
			return
		case v := <-updates:
			msg = fmt.Sprintf("event: blocks\ndata: %x\n\n", v)
		case <-ping.C:
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprint(w, msg); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}

// --- explain, audit, configuration, dashboard ---

type explainView struct {
	IP, Service, Account, Path string
	Services                   []string
	Answer                     *explain.Answer
}

func (s *Server) explainPage(w http.ResponseWriter, r *http.Request, ss *session) {
	q := r.URL.Query()
	v := explainView{IP: strings.TrimSpace(q.Get("ip")), Service: q.Get("service"), Account: q.Get("account"), Path: q.Get("path")}
	for _, sv := range service.All {
		v.Services = append(v.Services, sv.String())
	}
	p := s.pageFor(ss, "explain", "Explain")
	p.Data = &v
	status := http.StatusOK
	if v.IP != "" {
		a, err := netip.ParseAddr(v.IP)
		switch {
		case err != nil || a.Zone() != "":
			p.Error, status = "Want an IP address such as 203.0.113.7.", http.StatusBadRequest
		case s.opts.Explain == nil:
			p.Error, status = "Explain is not available here.", http.StatusNotImplemented
		default:
			ans, err := s.opts.Explain(r.Context(), explain.Query{Addr: a.Unmap(), Service: v.Service, Account: v.Account, Path: v.Path})
			if err != nil {
				if errors.Is(err, explain.ErrQuery) || errors.Is(err, admin.ErrBadRequest) {
					p.Error, status = err.Error(), http.StatusBadRequest
				} else {
					s.log.Error("console: explain failed", "err", err)
					p.Error, status = "Explain failed (details in the postern log).", http.StatusInternalServerError
				}
			} else {
				v.Answer = &ans
			}
		}
	}
	s.render(w, status, "explain", p)
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request, ss *session) {
	es, err := s.opts.Engine.Audit(r.Context(), time.Time{}, 500)
	p := s.pageFor(ss, "audit", "Audit log")
	if err != nil {
		s.log.Error("console: audit failed", "err", err)
		p.Error = "The audit log could not be read (details in the postern log)."
	}
	out := make([]admin.AuditEntry, len(es))
	for i, e := range es {
		out[i] = admin.NewAuditEntry(e) // the engine answers newest first
	}
	p.Data = out
	s.render(w, http.StatusOK, "audit", p)
}

func (s *Server) configPage(w http.ResponseWriter, r *http.Request, ss *session) {
	p := s.pageFor(ss, "config", "Configuration")
	if s.opts.Config != nil {
		ci := s.opts.Config()
		p.Data = &ci
	}
	s.render(w, http.StatusOK, "config", p)
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request, ss *session) {
	msg := "Reload is not available here."
	if s.opts.Reload != nil {
		addr, _ := clientAddr(r)
		s.log.Info("console: reload asked", "user", ss.user, "remote", addr)
		if err := s.opts.Reload(); err != nil {
			msg = "Reload failed; the running configuration stays: " + err.Error()
		} else {
			msg = "Reloaded."
		}
	}
	s.setFlash(ss, msg)
	http.Redirect(w, r, "/config", http.StatusSeeOther)
}

type reasonCount struct {
	Code      string
	Name      string
	Hour, Day int
	Active    int
	MaxDay    int
}

type dashView struct {
	Networks  []topCount
	Countries []topCount
	Reasons   []reasonCount
	Services  []serviceCount
	Listeners []Listener
	Traffic   []ServiceTraffic
	Total     int
	Active    int
	Sessions  int // live sessions in the engine; -1 unknown
	Now       time.Time
}

// topCount is one line of a top list.
type topCount struct {
	Name  string
	Count int
}

// top returns the n largest counts, largest first, then by name.
func top(m map[string]int, n int) []topCount {
	out := make([]topCount, 0, len(m))
	for k, v := range m {
		out = append(out, topCount{k, v})
	}
	slices.SortFunc(out, func(a, b topCount) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out[:min(n, len(out))]
}

// networkOf is the network a block is counted in on the dashboard: its
// IPv4 /24 or IPv6 /48 (the block itself when wider).
func networkOf(p netip.Prefix) string {
	bits := 24
	if p.Addr().Is6() {
		bits = 48
	}
	if p.Bits() < bits {
		return p.String()
	}
	n, _ := p.Addr().Prefix(bits)
	return n.String()
}

type serviceCount struct {
	Service string
	Active  int
}

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request, ss *session) {
	now := s.opts.Engine.Now()
	v := dashView{Now: now, Sessions: -1}
	if ls, ok := s.opts.Engine.(interface{ LiveSessions() int }); ok {
		v.Sessions = ls.LiveSessions()
	}
	byReason := map[reason.Code]*reasonCount{}
	bySvc := map[string]int{}
	byNet := map[string]int{}
	byCountry := map[string]int{}
	maxDay := 0
	for _, rc := range reason.All {
		byReason[rc] = &reasonCount{Code: rc.String(), Name: rc.Name()}
	}
	for _, b := range s.opts.Engine.Blocks() {
		v.Total++
		c := byReason[b.Reason]
		if c == nil {
			continue
		}
		if !b.Expired(now) {
			v.Active++
			c.Active++
			svc := b.Service
			if svc == "" {
				svc = "(by hand)"
			}
			bySvc[svc]++
			byNet[networkOf(b.Prefix)]++
			if s.opts.Country != nil {
				if cc := s.opts.Country(b.Prefix.Addr()); cc != "" {
					byCountry[cc]++
				}
			}
		}
		if !b.FirstSeen.Before(now.Add(-time.Hour)) {
			c.Hour++
		}
		if !b.FirstSeen.Before(now.Add(-24 * time.Hour)) {
			c.Day++
			maxDay = max(maxDay, c.Day)
		}
	}
	for _, rc := range reason.All {
		c := byReason[rc]
		c.MaxDay = max(maxDay, 1)
		v.Reasons = append(v.Reasons, *c)
	}
	for svc, n := range bySvc {
		v.Services = append(v.Services, serviceCount{Service: svc, Active: n})
	}
	slices.SortFunc(v.Services, func(a, b serviceCount) int { return b.Active - a.Active })
	v.Networks = top(byNet, 10)
	v.Countries = top(byCountry, 10)
	if s.opts.Stats != nil {
		v.Listeners = s.opts.Stats.Listeners()
	}
	if s.opts.Traffic != nil {
		v.Traffic = s.opts.Traffic.Traffic()
	}
	p := s.pageFor(ss, "dashboard", "Dashboard")
	p.Data = &v
	s.render(w, http.StatusOK, "dashboard", p)
}

// traffic answers each service's connections and logins per second over
// the last minute, in JSON (an empty list when the gateway does not
// count them).
func (s *Server) traffic(w http.ResponseWriter, r *http.Request, ss *session) {
	out := []ServiceTraffic{}
	if s.opts.Traffic != nil {
		out = append(out, s.opts.Traffic.Traffic()...)
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		s.log.Debug("console: traffic: write", "err", err)
	}
}
