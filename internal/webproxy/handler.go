package webproxy

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/guard"
)

// ServeHTTP checks one request and forwards it to a backend.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cc, _ := r.Context().Value(connKey{}).(*clientConn)
	if cc == nil {
		// Not through Serve (a test calling the handler): admit per request.
		cc = p.admit(&addrOnlyConn{remote: r.RemoteAddr})
		defer cc.Close()
	}
	if cc.closeNext.Load() {
		cc.Close()
		return
	}
	if cc.refusal != "" {
		p.log.Info("refused", "client", cc.addr.String(), "why", cc.refusal)
		p.page(w, r, cc, http.StatusForbidden, cc.refusal, true)
		return
	}
	// A keep-alive connection outlives a block made after it was accepted.
	switch d := cc.gs.Recheck(); d.Action {
	case guard.Refuse:
		p.log.Info("refused", "client", cc.addr.String(), "why", d.Refusal())
		p.page(w, r, cc, http.StatusForbidden, d.Refusal(), true)
		return
	case guard.Tarpit:
		cc.tarpit.Store(int64(d.Delay))
	}
	if r.Method == http.MethodConnect {
		p.page(w, r, cc, http.StatusMethodNotAllowed, "Method not allowed", false)
		return
	}
	if !plainTarget(r.URL) {
		// "A:A:/admin" parses as scheme "a" with the opaque part
		// "A:/admin": no path for the rules to judge, and whatever the
		// backend makes of it. Only origin-form targets and http(s)
		// absolute URIs go on.
		p.log.Info("refused: a request target that is not a path", "client", cc.addr.String(), "target", truncate(r.RequestURI, 200))
		p.page(w, r, cc, http.StatusBadRequest, "Bad request", true)
		return
	}
	if pol := p.policy(); pol == nil || !pol.AllowPath(p.cfg.Service, r.URL.EscapedPath(), cc.addr) {
		p.log.Info("refused by a path rule", "client", cc.addr.String(), "path", truncate(r.URL.Path, 200))
		p.page(w, r, cc, http.StatusForbidden, "Access denied", false)
		return
	}
	var at *attempt
	if f := p.loginForm(r); f != nil {
		var done bool
		if at, done = p.checkLogin(w, r, cc, f); done {
			return
		}
		if at != nil {
			defer at.login.Abandon() // no verdict (backend error, client gone): free the slot
		}
		r = r.WithContext(context.WithValue(r.Context(), attemptKey{}, at))
	}
	if !p.delay(r.Context(), cc.delay()) {
		return
	}
	// The block table again, at the moment of forwarding: a block made
	// while this request waited (for its body, a tarpit or account
	// protection's delay, or while other streams of its HTTP/2 connection
	// failed) applies to it.
	if p.refusedNow(w, r, cc, at != nil) {
		return
	}
	var sw *streamWriter
	if fw, ok := w.(*fastWriter); ok {
		sw = fw.fc.streamWriter() // one for the connection's requests, one after another
	} else {
		sw = &streamWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: p.cfg.WriteTimeout}
	}
	rc := sw.rc
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &idleBody{ReadCloser: r.Body, rc: rc, d: p.cfg.BodyTimeout}
	}
	if at != nil {
		at.sent = time.Now() // the backend's failure time starts here
	}
	if at == nil && p.direct(r) {
		p.serveDirect(sw, r)
	} else {
		p.rp.ServeHTTP(sw, r)
	}
	rc.SetWriteDeadline(time.Time{})
	if at != nil && at.decision.Action == guard.Close {
		p.closeAfter(w, r, cc)
	}
}

// refusedNow consults the engine for a request about to be forwarded: a
// refusal by the access policy or a refused block gets the 403 page, and
// a login attempt from a blocked address is refused whatever
// refuse_blocked says (a blocked address never gets a guess through).
func (p *Proxy) refusedNow(w http.ResponseWriter, r *http.Request, cc *clientConn, login bool) bool {
	d := cc.gs.Recheck()
	if d.Action != guard.Refuse && login {
		d, _ = cc.gs.Blocked()
	}
	if !gate.Ends(d) {
		return false
	}
	why := d.Refusal()
	p.log.Info("refused", "client", cc.addr.String(), "via_upstream", cc.trusted, "why", why, "login", login)
	p.page(w, r, cc, http.StatusForbidden, why, true)
	return true
}

// closeAfter closes the client connection once the response is out: over
// HTTP/1 the "Connection: close" header has done it; HTTP/2 has no such
// header, so the connection is closed when its next request comes (or its
// idle timeout ends it): closing it now could cut this answer, still on
// its way out of the server's writer.
func (p *Proxy) closeAfter(w http.ResponseWriter, r *http.Request, cc *clientConn) {
	if r.ProtoMajor < 2 {
		return
	}
	cc.closeNext.Store(true)
}

// delay waits out a tarpit delay; false when the client went away.
func (p *Proxy) delay(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// rewrite builds the backend request: the client's Host is kept, and
// X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host and
// Forwarded say who the client is, from postern's own knowledge: the
// connection's address (set by a trusted upstream's PROXY header) and
// whether postern's listener spoke TLS. Every header a client could use to
// name an address, a scheme or a host for itself is dropped first, from
// trusted upstreams too: what they relay is the client's word.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	in, out := pr.In, pr.Out
	out.URL.Scheme = p.scheme
	out.URL.Host = backendHost
	out.Host = in.Host
	p.forwarding(in, out)
}

// forwarding drops the forwarding headers of out and sets postern's own
// for the client of in.
func (p *Proxy) forwarding(in, out *http.Request) {
	cc, _ := in.Context().Value(connKey{}).(*clientConn)
	var addr netip.Addr
	if cc != nil {
		addr = cc.addr
	} else if ap, err := netip.ParseAddrPort(in.RemoteAddr); err == nil {
		addr = ap.Addr().Unmap()
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	var ip, elem string
	if f := cc.forwardedFor(addr, in.Host, proto); f != nil {
		ip, elem = f.ip, f.elem
	} else {
		ip = addr.String()
		elem = forwardedElem(addr, ip, in.Host, proto)
	}
	h := out.Header
	dropForwarding(h)
	// One backing array for the five values (the keys are canonical).
	v := [...]string{ip, proto, in.Host, ip, elem}
	vs := v[:]
	h["X-Forwarded-For"] = vs[0:1:1]
	h["X-Forwarded-Proto"] = vs[1:2:2]
	h["X-Forwarded-Host"] = vs[2:3:3]
	h["X-Real-Ip"] = vs[3:4:4]
	h["Forwarded"] = vs[4:5:5]
}

// forwardingHeaders are the request headers a backend (a web server, a
// framework, a webmail) may take as the client's address, scheme, host or
// port, lower case with "-" for "_" (CGI makes X_Forwarded_For and
// X-Forwarded-For the same variable).
var forwardingHeaders = []string{
	"forwarded", "forwarded-for", "x-forwarded", "x-forwarded-for", "x-forwarded-proto",
	"x-forwarded-host", "x-forwarded-port", "x-forwarded-server", "x-forwarded-scheme",
	"x-forwarded-ssl", "x-forwarded-by", "x-real-ip", "x-client-ip", "client-ip",
	"true-client-ip", "cf-connecting-ip", "x-cluster-client-ip", "fastly-client-ip",
	"x-originating-ip", "x-remote-ip", "x-remote-addr", "x-proxyuser-ip", "x-url-scheme",
	"front-end-https", "x-host", "x-original-host", "x-original-url", "x-rewrite-url",
}

// dropForwarding deletes every forwarding header, however it is spelled.
func dropForwarding(h http.Header) {
	for k := range h {
		for _, f := range forwardingHeaders {
			if headerNameIs(k, f) {
				delete(h, k)
				break
			}
		}
	}
}

// headerNameIs compares a header name with a lower-case name, ignoring
// case and taking "_" for "-", without allocating.
func headerNameIs(k, lower string) bool {
	if len(k) != len(lower) {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// forwardedFor is a client address's text and its Forwarded element for
// one Host and scheme.
type forwardedFor struct {
	addr        netip.Addr
	host, proto string
	ip, elem    string
}

// forwardedFor returns the forwarding values of the connection's client
// (addr, its address) for host and proto, from the last request's when
// they are the same; nil without a connection.
func (c *clientConn) forwardedFor(addr netip.Addr, host, proto string) *forwardedFor {
	if c == nil {
		return nil
	}
	if f := c.fwd.Load(); f != nil && f.addr == addr && f.host == host && f.proto == proto {
		return f
	}
	ip := addr.String()
	f := &forwardedFor{addr: addr, host: host, proto: proto, ip: ip, elem: forwardedElem(addr, ip, host, proto)}
	c.fwd.Store(f)
	return f
}

// forwardedElem is one RFC 7239 element: for=…;host=…;proto=…; ip is
// addr's text.
func forwardedElem(addr netip.Addr, ip, host, proto string) string {
	if addr.Is6() {
		ip = `"[` + ip + `]"`
	}
	if host != "" && validHost(host) {
		return "for=" + ip + `;host="` + host + `";proto=` + proto
	}
	return "for=" + ip + ";proto=" + proto
}

// validHost reports whether a Host value can be put in a quoted string.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// backendError answers when no backend could serve the request.
func (p *Proxy) backendError(w http.ResponseWriter, r *http.Request, err error) {
	cc, _ := r.Context().Value(connKey{}).(*clientConn)
	if at, _ := r.Context().Value(attemptKey{}).(*attempt); at != nil && !errors.Is(err, errDecoyAccepted) {
		// A login without an answer: the backend may have checked the
		// password, so it counts as a failure (a no-op after a verdict).
		at.decision = at.login.Failed()
	}
	if errors.Is(err, context.Canceled) || r.Context().Err() != nil {
		return // the client went away
	}
	if errors.Is(err, errDecoyAccepted) {
		if at, _ := r.Context().Value(attemptKey{}).(*attempt); at != nil && cc != nil {
			p.loginFailedPage(w, r, cc, at.form, at.decision)
			return
		}
	}
	if u := (*unreadable)(nil); errors.As(err, &u) {
		// A long body on a login form's paths carried a login field:
		// the backend got a cut request, the client this refusal.
		if cc == nil {
			cc = &clientConn{}
		}
		p.unreadableLogin(w, r, cc, u)
		return
	}
	status, text := http.StatusBadGateway, "The web server is not available. Please try again later."
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		status, text = http.StatusGatewayTimeout, "The web server did not answer in time. Please try again later."
	}
	p.log.Warn("backend failed", "err", err, "path", truncate(r.URL.Path, 200))
	if cc == nil {
		cc = &clientConn{}
	}
	p.page(w, r, cc, status, text, false)
}

// page writes postern's own short answer. close asks the client to close
// the connection (HTTP/1).
func (p *Proxy) page(w http.ResponseWriter, r *http.Request, cc *clientConn, status int, text string, closeConn bool) {
	if !p.delay(r.Context(), cc.delay()) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if closeConn && r.ProtoMajor < 2 {
		h.Set("Connection", "close")
	}
	body := fmt.Sprintf("<!DOCTYPE html>\n<html><head><title>%d %s</title></head><body><h1>%d %s</h1><p>%s</p></body></html>\n",
		status, http.StatusText(status), status, http.StatusText(status), html.EscapeString(text))
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write([]byte(body))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// addrOnlyConn stands for the connection of a request handled outside
// Serve; only its address is used.
type addrOnlyConn struct {
	net.Conn
	remote string
}

func (c *addrOnlyConn) RemoteAddr() net.Addr {
	ap, _ := netip.ParseAddrPort(c.remote)
	return net.TCPAddrFromAddrPort(ap)
}

func (c *addrOnlyConn) Close() error { return nil }

// streamWriter sends an event stream's headers at once, so a client sees
// the response start before the first event (ReverseProxy flushes only
// after body writes), and gives every write to the client a deadline: a
// client that stops reading is dropped after d, however long the response.
type streamWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
	// armed: the writer beneath gives each of its writes to the client
	// the deadline itself (the fast server's, fastConn.Write).
	armed bool
}

func (w *streamWriter) WriteHeader(code int) {
	if !w.armed {
		w.rc.SetWriteDeadline(time.Now().Add(w.d))
	}
	w.ResponseWriter.WriteHeader(code)
	if code >= 200 && strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream") {
		w.rc.Flush()
	}
}

func (w *streamWriter) Write(b []byte) (int, error) {
	if !w.armed {
		w.rc.SetWriteDeadline(time.Now().Add(w.d))
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap gives http.ResponseController the real writer (Flush, Hijack).
func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// idleBody gives every read of a request body a deadline: a client that
// stops sending its body is dropped after d, while a slow upload that keeps
// moving is not. At the end of the body the deadline is lifted, so a
// long-polling request waits for its answer as long as the backend takes.
// After a timeout the expired deadline stays, so the server's own reads of
// the rest fail at once and the connection is closed.
type idleBody struct {
	io.ReadCloser
	rc *http.ResponseController
	d  time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.d))
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// plainTarget reports whether a request's URL is one the path rules can
// judge as the backend will read it: a path (origin form, or "*" for
// OPTIONS), or an absolute http or https URI — never an opaque URI or
// another scheme (url's parser has lowercased it already).
func plainTarget(u *url.URL) bool {
	if u.Opaque != "" {
		return false
	}
	switch u.Scheme {
	case "":
		return u.Host == ""
	case "http", "https":
		return true
	}
	return false
}
