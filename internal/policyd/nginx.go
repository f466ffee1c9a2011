package policyd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/imapproxy"
	"github.com/postern/postern/internal/pop3proxy"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/smtpproxy"
)

// The Auth-Status texts nginx relays to the client (as "NO …" in IMAP,
// "-ERR …" in POP3) besides the engine's refusals.
const (
	ngxInvalid   = "Invalid login or password"
	ngxTemporary = "Temporary server problem, try again later"
	ngxProtocol  = "Login not supported"
)

// ngxWait is the Auth-Wait of a login the client may try again: nginx
// answers the client after it and keeps the connection for another try.
const ngxWait = 3 * time.Second

// ngxMaxAttempts is the last Auth-Login-Attempt answered with Auth-Wait:
// nginx keeps the memory of every attempt until the session ends, and its
// documentation asks the server to close the session after 10-20 of them.
const ngxMaxAttempts = 10

// NginxOptions configure the nginx auth_http server.
type NginxOptions struct {
	Options
	// IMAP, POP3 and SMTP are the backends nginx is sent to and postern
	// checks the logins against (SMTP: a submission port offering AUTH to
	// postern, after STARTTLS with SMTPBackendTLS); a zero one is not
	// served.
	IMAP, POP3, SMTP netip.AddrPort
	// SMTPBackendProxy is how the SMTP check names the client: "v2",
	// "v1" (a PROXY header) or "xclient" (Postfix's XCLIENT after the
	// greeting). Default: BackendProxy.
	SMTPBackendProxy string
	// Secret, when set, is the shared secret every request must carry in
	// the header SecretHeader (default DefaultNginxSecretHeader); a
	// request without it is answered HTTP 403.
	Secret       []byte
	SecretHeader string
	// SMTPBackendTLS, when set, is the TLS configuration of the SMTP
	// check's STARTTLS, before the login.
	SMTPBackendTLS *tls.Config
	// Hostname is the EHLO name of the SMTP check. Default "localhost".
	Hostname string
	// BackendProxy is the PROXY header of the check's login: "v2"
	// (default) or "v1".
	BackendProxy string
	// BackendTimeout bounds the check's login from the dial to the answer.
	// Default 10s.
	BackendTimeout time.Duration
}

// Nginx answers nginx's mail auth_http requests (ngx_mail_auth_http_module):
// an HTTP GET whose headers carry the login (Auth-Method, Auth-User,
// Auth-Pass, Auth-Protocol, Auth-Login-Attempt, Client-IP), answered in
// headers: "Auth-Status: OK" with the backend (Auth-Server, Auth-Port), or
// an error text, with Auth-Wait when the client may try again. nginx
// checks no password itself: postern takes the login through the login
// gate the inline gateways use (blocks, the service's grant, account
// protection, the login IP restriction with its decoy, failed logins
// counted) and checks the password with one login to the backend over
// its own protocol, behind a PROXY header naming the client.
type Nginx struct {
	eng    Engine
	opts   NginxOptions
	stats  Stats
	imap   ngxBackend
	pop3   ngxBackend
	smtp   ngxBackend
	logins map[service.Service]*gate.Logins
}

// ngxBackend is one protocol's backend.
type ngxBackend struct {
	addr  netip.AddrPort
	dial  relay.Dialer
	check func(be net.Conn, timeout time.Duration, client netip.Addr, user, pass string) (gate.Outcome, error)
	// replayable says whether the inline gateway would replay the login.
	replayable func(user, pass string) bool
}

// NewNginx returns an nginx auth_http server on eng.
func NewNginx(eng Engine, opts NginxOptions) *Nginx {
	opts.Options = opts.Options.withDefaults()
	if opts.BackendTimeout <= 0 {
		opts.BackendTimeout = 10 * time.Second
	}
	if opts.BackendProxy == "" {
		opts.BackendProxy = "v2"
	}
	if opts.SecretHeader == "" {
		opts.SecretHeader = DefaultNginxSecretHeader
	}
	n := &Nginx{eng: eng, opts: opts, logins: map[service.Service]*gate.Logins{
		service.IMAP:       gate.NewLogins(eng),
		service.POP3:       gate.NewLogins(eng),
		service.Submission: gate.NewLogins(eng),
	}}
	mk := func(addr netip.AddrPort, svc, proxy string, check func(net.Conn, time.Duration, netip.Addr, string, string) (gate.Outcome, error), replayable func(string, string) bool) ngxBackend {
		return ngxBackend{addr: addr, check: check, replayable: replayable,
			dial: relay.Dialer{Addr: addr.String(), Proxy: proxy, Timeout: opts.BackendTimeout, Service: svc}}
	}
	// IMAP and POP3 name the client with the PROXY header only.
	plain := func(f func(net.Conn, time.Duration, string, string) (gate.Outcome, error)) func(net.Conn, time.Duration, netip.Addr, string, string) (gate.Outcome, error) {
		return func(be net.Conn, t time.Duration, _ netip.Addr, user, pass string) (gate.Outcome, error) {
			return f(be, t, user, pass)
		}
	}
	n.imap = mk(opts.IMAP, "imap", opts.BackendProxy, plain(imapproxy.CheckLogin), imapproxy.Replayable)
	n.pop3 = mk(opts.POP3, "pop3", opts.BackendProxy, plain(pop3proxy.CheckLogin), pop3proxy.Replayable)
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	helo, proxy, xclient, smtpTLS := opts.Hostname, opts.SMTPBackendProxy, false, opts.SMTPBackendTLS
	if proxy == "" {
		proxy = opts.BackendProxy
	}
	if proxy == "xclient" {
		proxy, xclient = "none", true
	}
	n.smtp = mk(opts.SMTP, "submission", proxy, func(be net.Conn, t time.Duration, client netip.Addr, user, pass string) (gate.Outcome, error) {
		o := smtpproxy.CheckOptions{Timeout: t, Helo: helo, TLS: smtpTLS}
		if xclient {
			o.XClient = client
		}
		return smtpproxy.CheckLogin(be, o, user, pass)
	}, smtpproxy.Replayable)
	return n
}

// Stats returns the server's counters.
func (n *Nginx) Stats() *Stats { return &n.stats }

// Serve answers HTTP requests on ln until ctx ends or ln is closed.
func (n *Nginx) Serve(ctx context.Context, ln net.Listener) error {
	l := &listener{Listener: ln, opts: &n.opts.Options, stats: &n.stats, slots: make(chan struct{}, n.opts.MaxConns)}
	srv := &http.Server{
		Handler:           n,
		ReadHeaderTimeout: writeTimeout,
		ReadTimeout:       writeTimeout,
		WriteTimeout:      writeTimeout + n.opts.DecisionTimeout + n.opts.BackendTimeout,
		IdleTimeout:       n.opts.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(n.opts.Log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	})
	defer stop()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, errClosed) {
		return nil
	}
	return fmt.Errorf("policyd: nginx: %w", err)
}

// ngxRequest is what postern reads of nginx's request.
type ngxRequest struct {
	user, pass string
	protocol   string
	attempt    int
	client     netip.Addr
}

// ngxAnswer is the answer nginx reads.
type ngxAnswer struct {
	status string         // "OK" or an error text
	server netip.AddrPort // with OK
	wait   time.Duration  // with an error: the client may try again after it
}

// ServeHTTP answers one auth_http request. A request postern cannot read
// with certainty is answered HTTP 400, which nginx takes as a temporary
// failure of the authentication server and closes the client session; a
// request without the configured shared secret is answered HTTP 403.
func (n *Nginx) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := n.checkSecret(r); err != nil {
		n.stats.Bad.Add(1)
		n.opts.Log.Warn("nginx auth request refused", "peer", r.RemoteAddr, "err", err)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	req, err := readNginx(r)
	if err != nil {
		n.stats.Bad.Add(1)
		n.opts.Log.Warn("nginx auth request refused", "peer", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a := n.decide(r.Context(), &req)
	n.stats.Requests.Add(1)
	h := w.Header()
	h.Set("Auth-Status", a.status)
	if a.status == "OK" {
		h.Set("Auth-Server", a.server.Addr().String())
		h.Set("Auth-Port", strconv.Itoa(int(a.server.Port())))
	} else if a.wait > 0 {
		h.Set("Auth-Wait", strconv.Itoa(int((a.wait+time.Second-1)/time.Second)))
	}
	w.WriteHeader(http.StatusOK)
}

// readNginx reads a request: GET, each header once, Auth-Method plain
// (nginx's name for every method that carries the password: LOGIN, PLAIN,
// USER/PASS), the user and password as nginx escapes them (%XX).
func readNginx(r *http.Request) (ngxRequest, error) {
	var q ngxRequest
	if r.Method != http.MethodGet {
		return q, errors.New("GET only")
	}
	one := func(name string, need bool) (string, error) {
		v := r.Header.Values(name)
		switch {
		case len(v) > 1:
			return "", fmt.Errorf("header %s given %d times", name, len(v))
		case len(v) == 0 && need:
			return "", fmt.Errorf("no header %s", name)
		case len(v) == 0:
			return "", nil
		}
		return v[0], nil
	}
	method, err := one("Auth-Method", true)
	if err != nil {
		return q, err
	}
	if method != "plain" {
		return q, fmt.Errorf("header Auth-Method %q: postern checks plain passwords only", method)
	}
	if q.protocol, err = one("Auth-Protocol", true); err != nil {
		return q, err
	}
	for _, f := range []struct {
		name string
		to   *string
	}{{"Auth-User", &q.user}, {"Auth-Pass", &q.pass}} {
		v, err := one(f.name, true)
		if err != nil {
			return q, err
		}
		if *f.to, err = url.PathUnescape(v); err != nil {
			return q, fmt.Errorf("header %s: bad escape", f.name) // never the value: it may be a password
		}
	}
	if q.user == "" {
		return q, errors.New("empty header Auth-User")
	}
	ip, err := one("Client-IP", true)
	if err != nil {
		return q, err
	}
	if q.client, err = netip.ParseAddr(ip); err != nil || q.client.Zone() != "" {
		return q, fmt.Errorf("header Client-IP %q: not an IP address", ip)
	}
	q.client = q.client.Unmap()
	q.attempt = 1
	if v, err := one("Auth-Login-Attempt", false); err != nil {
		return q, err
	} else if v != "" {
		if q.attempt, err = strconv.Atoi(v); err != nil || q.attempt < 1 {
			return q, fmt.Errorf("header Auth-Login-Attempt %q", v)
		}
	}
	return q, nil
}

// decide answers one login.
func (n *Nginx) decide(ctx context.Context, q *ngxRequest) ngxAnswer {
	var (
		svc service.Service
		be  *ngxBackend
	)
	switch q.protocol {
	case "imap":
		svc, be = service.IMAP, &n.imap
	case "pop3":
		svc, be = service.POP3, &n.pop3
	case "smtp":
		svc, be = service.Submission, &n.smtp
	}
	if be == nil || !be.addr.IsValid() {
		n.opts.Log.Warn("nginx asked about a protocol without a backend", "protocol", q.protocol)
		return ngxAnswer{status: ngxProtocol}
	}
	st := n.eng.Settings()
	var v guard.Verdict
	if st.Policy != nil && st.Policy.Service(svc) != nil {
		v = n.eng.Admit(q.client, svc)
	} else {
		v = n.eng.AdmitBlocks(q.client, svc)
	}
	if v.Action == guard.Refuse {
		return ngxAnswer{status: v.Refusal()}
	}
	log := n.opts.Log.With("service", svc.String(), "client", q.client.String())
	if !be.replayable(q.user, q.pass) {
		// As the inline gateway refuses a bad command: uncounted, the
		// backend not asked.
		log.Info("bad login: characters postern does not pass on, or too long")
		return ngxAnswer{status: ngxInvalid, wait: ngxWait}
	}
	gs := n.eng.Attach(q.client, svc)
	defer gs.Close()
	gctx, cancel := context.WithTimeout(ctx, n.opts.DecisionTimeout)
	defer cancel()
	o, d, err := n.logins[svc].Run(gctx, gs, st.Policy, q.client, gate.Credentials{User: q.user, Pass: q.pass}, log,
		func(pass string) (gate.Outcome, error) { return n.check(ctx, be, q, pass) })
	if err != nil {
		log.Error("checking the login with the backend failed", "backend", be.addr.String(), "err", err)
	}
	if o == gate.Accepted {
		return ngxAnswer{status: "OK", server: be.addr}
	}
	a := ngxAnswer{status: ngxInvalid, wait: ngxWait}
	switch {
	case o == gate.Blocked && !d.Blocked:
		// Not attempted: held in the login gate (account protection's
		// delay, logins in flight at the threshold) past decision_timeout.
		// The client may try again after the delay.
		a.status = ngxTemporary
		if w := gs.LoginDelay(q.user); w > a.wait {
			a.wait = w
		}
	case d.Blocked || gate.Ends(d):
		return ngxAnswer{status: d.Refusal()}
	case o == gate.Unexpected || o == gate.Answered:
		a.status = ngxTemporary
	}
	if v.Action == guard.Tarpit && v.Delay > a.wait {
		a.wait = v.Delay
	}
	if d.Delay > a.wait {
		a.wait = d.Delay
	}
	if q.attempt >= ngxMaxAttempts {
		a.wait = 0 // nginx closes the session
	}
	return a
}

// check logs in once to the backend, as the client, with pass (the
// client's password, or the gate's decoy).
func (n *Nginx) check(ctx context.Context, be *ngxBackend, q *ngxRequest, pass string) (gate.Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, n.opts.BackendTimeout)
	defer cancel()
	conn, err := be.dial.Dial(ctx, netip.AddrPortFrom(q.client, 0), be.addr)
	if err != nil {
		n.opts.Log.Error("the backend cannot be reached to check a login", "backend", be.addr.String(), "err", err)
		return gate.Answered, nil // the password was not sent: nothing to count
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	o, err := be.check(conn, n.opts.BackendTimeout, q.client, q.user, pass)
	if err != nil && o == gate.Answered {
		n.opts.Log.Error("the backend failed before the login was sent", "backend", be.addr.String(), "err", err)
		return gate.Answered, nil
	}
	return o, err
}
