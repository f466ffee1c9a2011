package webproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/tlsconf"
)

func TestForwardAndPathRules(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if code, body := h.get("127.0.0.1", "/"); code != 200 || body != "hello from the backend" {
		t.Fatalf("GET /: %d %q", code, body)
	}
	tricks := []string{"/admin/", "/%61dmin/", "//admin/", "/x/../admin/", "/ADMIN/", "/admin%2f", "/%2e%2e/admin/",
		"/Admin/users", "/./admin/", "/admin;x=1/", "/%2561dmin/", "/x/..%2fadmin/", "/%5cadmin/"}
	for _, p := range tricks {
		raw := h.raw("127.0.0.1", "GET "+p+" HTTP/1.1\r\nHost: mail.example.com\r\nConnection: close\r\n\r\n")
		if code := statusOf(raw); code != http.StatusForbidden {
			t.Errorf("%s from 127.0.0.1: %d, want 403", p, code)
		}
		if !strings.Contains(raw, "Access denied") {
			t.Errorf("%s: no short 403 page: %q", p, raw)
		}
	}
	if h.be.sawPath("admin") || h.be.sawPath("%61") || h.be.sawPath("%2e") || h.be.sawPath("%5c") {
		t.Fatalf("the backend saw a refused request: %+v", h.be.requests())
	}
	if code, body := h.get("127.0.0.2", "/admin/"); code != 200 || body != "admin area" {
		t.Errorf("/admin/ from the admin address: %d %q", code, body)
	}
	// The service's deny list: 403 at once, the backend sees nothing.
	before := len(h.be.requests())
	if code, body := h.get("127.0.0.66", "/"); code != 403 || !strings.Contains(body, "Access denied") {
		t.Errorf("denied address: %d %q", code, body)
	}
	if len(h.be.requests()) != before {
		t.Error("the backend saw a request from a denied address")
	}
}

func TestForwardedHeaders(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	raw := h.raw("127.0.0.1", "GET /hdr HTTP/1.1\r\nHost: mail.example.com\r\nX-Forwarded-For: 6.6.6.6\r\n"+
		"X-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nConnection: close\r\n\r\n")
	if statusOf(raw) != 200 {
		t.Fatalf("GET /hdr: %q", raw)
	}
	r := h.be.requests()[0]
	for k, want := range map[string]string{
		"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "mail.example.com",
		"X-Real-Ip": "127.0.0.1", "Forwarded": `for=127.0.0.1;host="mail.example.com";proto=http`,
	} {
		if got := strings.Join(r.Header.Values(k), "|"); got != want {
			t.Errorf("%s = %q, want %q (a client's own value must be replaced)", k, got, want)
		}
	}
	if r.Host != "mail.example.com" {
		t.Errorf("Host %q, want the client's", r.Host)
	}

	// A trusted upstream's PROXY header sets the client address; the
	// forwarding headers it relays are the client's word and are dropped
	// like anyone's, whatever their spelling.
	c := h.dial("127.0.0.5")
	defer c.Close()
	io.WriteString(c, "PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\nGET /lb HTTP/1.1\r\nHost: mail.example.com\r\n"+
		"X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-Proto: https\r\nForwarded: for=198.51.100.1\r\nX-Real-IP: 198.51.100.1\r\n"+
		"X-Forwarded-Host: evil.example\r\nX-Client-IP: 198.51.100.1\r\nTrue-Client-IP: 198.51.100.1\r\nCF-Connecting-IP: 198.51.100.1\r\n"+
		"X_Forwarded_For: 198.51.100.1\r\nx-cluster-client-ip: 198.51.100.1\r\nX-Forwarded-Port: 1\r\nConnection: close\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(c); statusOf(string(b)) != 200 {
		t.Fatalf("via the load balancer: %q", b)
	}
	reqs := h.be.requests()
	r = reqs[len(reqs)-1]
	for k, want := range map[string]string{
		"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "mail.example.com",
		"X-Real-Ip": "203.0.113.9", "Forwarded": `for=203.0.113.9;host="mail.example.com";proto=http`,
		"X-Client-Ip": "", "True-Client-Ip": "", "Cf-Connecting-Ip": "", "X_forwarded_for": "", "X-Cluster-Client-Ip": "",
		"X-Forwarded-Port": "",
	} {
		if got := strings.Join(r.Header.Values(k), "|"); got != want {
			t.Errorf("via a trusted upstream: %s = %q, want %q", k, got, want)
		}
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			if strings.Contains(v, "198.51.100.1") || strings.Contains(v, "evil") {
				t.Errorf("the backend got the client's %s: %q", k, v)
			}
		}
	}
}

func TestHeaderNameIs(t *testing.T) {
	for _, c := range []struct {
		k, lower string
		want     bool
	}{
		{"X-Forwarded-For", "x-forwarded-for", true},
		{"X_FORWARDED_FOR", "x-forwarded-for", true},
		{"x-forwarded-fo", "x-forwarded-for", false},
		{"X-Forwarded-Fox", "x-forwarded-for", false},
		{"Cf-Connecting-Ip", "cf-connecting-ip", true},
	} {
		if got := headerNameIs(c.k, c.lower); got != c.want {
			t.Errorf("headerNameIs(%q, %q) = %v", c.k, c.lower, got)
		}
	}
}

func TestLoginFailuresBlock(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for i := range 3 {
		resp := h.postForm("127.0.0.1", "/login", url.Values{"user": {"alice@example.com"}, "pass": {"guess-" + string(rune('a'+i))}})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d, want the backend's 401", i, resp.StatusCode)
		}
		if resp.Close != (i == 2) {
			t.Errorf("guess %d: Connection: close = %v; the blocking answer (only) closes the connection", i, resp.Close)
		}
	}
	ok, reason := h.blocked("127.0.0.1")
	if !ok || reason != "L" {
		t.Fatalf("after 3 failed webmail logins: blocked=%v reason=%q", ok, reason)
	}
	blocks := h.eng.Blocks()
	if len(blocks) != 1 || !strings.Contains(blocks[0].Detail, "alice@example.com") {
		t.Errorf("the block should name the account: %+v", blocks)
	}
	before := len(h.be.requests())
	code, body := h.get("127.0.0.1", "/")
	if code != 403 || !strings.Contains(body, "Blocked") {
		t.Errorf("a blocked address: %d %q", code, body)
	}
	if len(h.be.requests()) != before {
		t.Error("the backend saw a request from a blocked address")
	}
	// Another address is unaffected, and a right password is no failure.
	if resp := h.postForm("127.0.0.7", "/login", url.Values{"user": {"alice@example.com"}, "pass": {"right-password"}}); resp.StatusCode != http.StatusFound {
		t.Errorf("right password: %d", resp.StatusCode)
	}
	if ok, _ := h.blocked("127.0.0.7"); ok {
		t.Error("a successful login blocked its address")
	}
}

func TestSamePasswordCountsOnce(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for range 5 {
		h.postForm("127.0.0.8", "/login", url.Values{"user": {"alice@example.com"}, "pass": {"same-wrong"}})
	}
	if ok, _ := h.blocked("127.0.0.8"); ok {
		t.Error("a retried identical password must count once")
	}
}

func TestLoginFailureRedirect(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for i := range 3 {
		resp := h.postForm("127.0.0.9", "/redir-login", url.Values{"user": {"carol@example.com"}, "pass": {"nope" + string(rune('0'+i))}})
		if resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "/login?error") {
			t.Fatalf("redirect failure %d: %d %s", i, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if ok, reason := h.blocked("127.0.0.9"); !ok || reason != "L" {
		t.Fatalf("failure redirects must count as L: %v %q", ok, reason)
	}
}

func TestLoginRestriction(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	resp := h.postForm("127.0.0.1", "/login", url.Values{"user": {"Boss@Example.com"}, "pass": {"boss-password"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a login refused by the restriction: %d, want the configured failure 401", resp.StatusCode)
	}
	onlyDecoys(t, h.be.requests(), "boss", "pass")
	// Multipart and JSON bodies name the account too.
	body := "--XX\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nboss@example.com\r\n--XX\r\nContent-Disposition: form-data; name=\"pass\"\r\n\r\nboss-password-2\r\n--XX--\r\n"
	raw := h.raw("127.0.0.1", "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
	if statusOf(raw) != http.StatusUnauthorized {
		t.Errorf("multipart: %q", raw)
	}
	if ok, _ := h.blocked("127.0.0.1"); ok {
		t.Error("two refused logins must not block yet (threshold 3)")
	}
	resp = h.postForm("127.0.0.1", "/login", url.Values{"user": {"boss@example.com"}, "pass": {"x"}})
	if ok, reason := h.blocked("127.0.0.1"); !ok || reason != "L" {
		t.Errorf("three refused logins: blocked=%v %q (status %d)", ok, reason, resp.StatusCode)
	}
	// From the boss's own address the login goes through.
	if resp := h.postForm("127.0.0.3", "/login", url.Values{"user": {"boss@example.com"}, "pass": {"boss-password"}}); resp.StatusCode != http.StatusFound {
		t.Errorf("allowed login: %d", resp.StatusCode)
	}
}

func TestHTTP2AndCurl(t *testing.T) {
	h := newHarness(t, harnessOpts{tls: true})
	resp, err := h.client("127.0.0.1").Get(h.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "hello from the backend" {
		t.Fatalf("HTTPS: proto %s body %q", resp.Proto, b)
	}
	if got := h.be.requests()[0].Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto over TLS = %q", got)
	}
	resp, err = h.client("127.0.0.1").Get(h.url("/%61dmin/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.ProtoMajor != 2 {
		t.Errorf("path rule over HTTP/2: %d %s", resp.StatusCode, resp.Proto)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl")
	}
	out, err := exec.Command("curl", "-sk", "--http2", "--interface", "127.0.0.1", "-o", "/dev/null",
		"-w", "%{http_version} %{http_code}", h.url("/")).CombinedOutput()
	if err != nil || string(out) != "2 200" {
		t.Errorf("curl --http2: %q %v", out, err)
	}
	out, err = exec.Command("curl", "-sk", "--path-as-is", "--interface", "127.0.0.1", "-o", "/dev/null",
		"-w", "%{http_code}", h.url("/x/../ADMIN/")).CombinedOutput()
	if err != nil || string(out) != "403" {
		t.Errorf("curl /x/../ADMIN/: %q %v", out, err)
	}
	out, err = exec.Command("curl", "-sk", "--interface", "127.0.0.1", "-o", "/dev/null", "-w", "%{http_code}",
		"-d", "user=alice@example.com&pass=wrong", h.url("/login")).CombinedOutput()
	if err != nil || string(out) != "401" {
		t.Errorf("curl login: %q %v", out, err)
	}
}

func TestWebSocketAndStreaming(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial("127.0.0.1")
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "ping through the gateway")
	buf := make([]byte, len("ping through the gateway"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping through the gateway" {
		t.Fatalf("WebSocket echo: %q %v", buf, err)
	}

	// Streaming: each chunk reaches the client while the backend is still
	// writing.
	sc := h.dial("127.0.0.1")
	defer sc.Close()
	sc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(sc, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	sbr := bufio.NewReader(sc)
	sresp, err := http.ReadResponse(sbr, nil)
	if err != nil || sresp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", sresp, err)
	}
	for _, msg := range []string{"data: one\n\n", "data: two\n\n"} {
		h.be.stream <- msg
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(sresp.Body, got); err != nil || string(got) != msg {
			t.Fatalf("streamed chunk %q: %q %v", msg, got, err)
		}
	}
	close(h.be.stream)
}

func TestBadInput(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// Huge headers: 431, nothing forwarded.
	huge := "GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 200<<10) + "\r\n\r\n"
	if code := statusOf(h.raw("127.0.0.1", huge)); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("huge headers: %d", code)
	}
	// Malformed request lines and headers: 400.
	for _, bad := range []string{
		"GARBAGE\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
	} {
		if code := statusOf(h.raw("127.0.0.1", bad)); code != http.StatusBadRequest {
			t.Errorf("%q: %d, want 400", bad, code)
		}
	}
	if code := statusOf(h.raw("127.0.0.1", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")); code != http.StatusNotImplemented {
		t.Errorf("unsupported transfer coding: %d, want 501", code)
	}
	if code := statusOf(h.raw("127.0.0.1", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n")); code != http.StatusMethodNotAllowed {
		t.Errorf("CONNECT: %d, want 405", code)
	}

	// Smuggling: Content-Length and Transfer-Encoding together. Go's server
	// reads the body as chunked (RFC 9112 §6.3), so the "smuggled" /admin
	// request is the next request on the connection — and meets the path
	// rule like any other. The backend sees one well-framed POST.
	n := len(h.be.requests())
	smuggle := "POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\nGET /admin/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	got := statuses(h.raw("127.0.0.1", smuggle))
	if len(got) != 2 || got[0] != 200 || got[1] != 403 {
		t.Errorf("CL+TE smuggling: statuses %v, want [200 403]", got)
	}
	reqs := h.be.requests()[n:]
	if len(reqs) != 1 || reqs[0].URI != "/form" || reqs[0].Body != "" || h.be.sawPath("admin") {
		t.Errorf("the backend must see only the POST, empty body: %+v", reqs)
	}
	// Obfuscated Transfer-Encoding is refused outright.
	if code := statusOf(h.raw("127.0.0.1", "POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\nabcd")); code != http.StatusNotImplemented {
		t.Errorf("Transfer-Encoding xchunked: %d, want 501", code)
	}

	// Slowloris: a client that never finishes its headers is dropped after
	// the header timeout (2 s here).
	c := h.dial("127.0.0.1")
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(c)
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("a slowloris connection lived %v", d)
	}
}

func TestBackendDownAndFailover(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := &url.URL{Scheme: "http", Host: dead.Addr().String()}
	dead.Close()
	h := newHarness(t, harnessOpts{backends: []*url.URL{deadURL}})
	code, body := h.get("127.0.0.1", "/")
	if code != http.StatusBadGateway || !strings.Contains(body, "not available") {
		t.Errorf("backend down: %d %q", code, body)
	}
	h2 := newHarness(t, harnessOpts{})
	h2.p.be = newBackends([]*url.URL{deadURL, h2.be.url}, nil, time.Second)
	h2.p.tr = h2.p.be.transport(5 * time.Second)
	h2.p.rp.Transport = h2.p.tr
	if h2.p.dc != nil {
		h2.p.dc.be = h2.p.be // the direct path dials through the same backends
	}
	for i := range 4 {
		if code, _ := h2.get("127.0.0.1", "/"); code != 200 {
			t.Errorf("request %d with one backend down: %d", i, code)
		}
	}
}

func TestConnectionLimitAndRate(t *testing.T) {
	h := newHarness(t, harnessOpts{maxPer: 2, cfg: strings.Replace(baseCfg, "connections_per_minute: 200", "connections_per_minute: 5", 1)})
	var held []net.Conn
	for range 2 {
		c := h.dial("127.0.0.11")
		held = append(held, c)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection: %v %v", resp, err)
		}
	}
	if code := statusOf(h.raw("127.0.0.11", "GET / HTTP/1.1\r\nHost: x\r\n\r\n")); code != http.StatusServiceUnavailable {
		t.Errorf("third connection from one address: %d, want 503", code)
	}
	for _, c := range held {
		c.Close()
	}
	// Connections per minute (I): the fifth connection trips the block.
	for i := range 6 {
		h.raw("127.0.0.12", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if ok, _ := h.blocked("127.0.0.12"); ok {
			if i < 4 {
				t.Errorf("blocked after %d connections", i+1)
			}
			break
		}
	}
	if ok, reason := h.blocked("127.0.0.12"); !ok || reason != "I" {
		t.Fatalf("connections per minute: blocked=%v %q", ok, reason)
	}
	raw := h.raw("127.0.0.12", "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if statusOf(raw) != 403 || !strings.Contains(raw, "Blocked") {
		t.Errorf("blocked address: %q", raw)
	}
}

// TestNoLeak: after bad and good traffic and shutdown, no goroutine of the
// gateway is left.
func TestNoLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		h := newHarness(t, harnessOpts{tls: true})
		for range 3 {
			h.get("127.0.0.1", "/")
			h.raw("127.0.0.1", "GARBAGE\r\n\r\n")
		}
		c := h.dial("127.0.0.1")
		defer c.Close()
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(tc, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(tc), nil); err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade over TLS: %v %v", resp, err)
		}
		h.stop() // with the WebSocket still open
		if n := h.p.Live(); n != 0 {
			t.Errorf("%d connections left after Serve returned", n)
		}
		if n := h.eng.LiveSessions(); n != 0 {
			t.Errorf("%d engine sessions left open", n)
		}
	}()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base+2 && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base+2 {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before, %d after\n%s", base, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestShutdownDrains(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial("127.0.0.1")
	defer c.Close()
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { h.stop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Serve did not return after the drain time")
	}
	close(h.be.stream)
}

// TestTarpit: with refuse_blocked off, a blocked address is served, but
// every answer waits the tarpit delay.
func TestTarpit(t *testing.T) {
	cfg := strings.Replace(baseCfg, "intrusion_prevention:\n", "intrusion_prevention:\n  refuse_blocked: false\n  close_blocked_connection: false\n  tarpit_delay: 400ms\n", 1)
	h := newHarness(t, harnessOpts{cfg: cfg})
	for i := range 3 {
		h.postForm("127.0.0.30", "/login", url.Values{"user": {"alice@example.com"}, "pass": {"t" + strconv.Itoa(i)}})
	}
	if ok, _ := h.blocked("127.0.0.30"); !ok {
		t.Fatal("not blocked")
	}
	start := time.Now()
	code, body := h.get("127.0.0.30", "/")
	if d := time.Since(start); code != 200 || body != "hello from the backend" || d < 400*time.Millisecond {
		t.Errorf("tarpitted request: %d %q after %v, want 200 after ≥ 400ms", code, body, d)
	}
	start = time.Now()
	if code, _ := h.get("127.0.0.31", "/"); code != 200 || time.Since(start) >= 400*time.Millisecond {
		t.Errorf("an unblocked address was slowed down: %d after %v", code, time.Since(start))
	}
}

// TestCertificateReload: a new certificate on disk is served after the
// reload, without restarting the listener.
func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	cert, key, err := tlsconf.SelfSigned(dir, []string{"old.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsconf.Load(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, harnessOpts{tls: true, mutate: func(c *Config) { c.TLS = certs.ServerConfig() }})
	name := func() string {
		c, err := tls.Dial("tcp", h.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		st := c.ConnectionState()
		if st.NegotiatedProtocol != "h2" {
			t.Errorf("ALPN %q, want h2", st.NegotiatedProtocol)
		}
		return st.PeerCertificates[0].DNSNames[0]
	}
	if got := name(); got != "old.example" {
		t.Fatalf("certificate for %q", got)
	}
	dir2 := t.TempDir()
	cert2, key2, err := tlsconf.SelfSigned(dir2, []string{"new.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{cert2: cert, key2: key} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := certs.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := name(); got != "new.example" {
		t.Errorf("after reload: certificate for %q", got)
	}
}

// TestCloseAll: the block closes the address's other connections too.
func TestCloseAll(t *testing.T) {
	cfg := strings.Replace(baseCfg, "intrusion_prevention:\n", "intrusion_prevention:\n  close_all: true\n", 1)
	h := newHarness(t, harnessOpts{cfg: cfg})
	held := h.dial("127.0.0.40")
	defer held.Close()
	io.WriteString(held, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(held)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("held connection: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	for i := range 3 {
		h.postForm("127.0.0.40", "/login", url.Values{"user": {"alice@example.com"}, "pass": {"c" + strconv.Itoa(i)}})
	}
	if ok, _ := h.blocked("127.0.0.40"); !ok {
		t.Fatal("not blocked")
	}
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Errorf("the idle keep-alive connection of the blocked address is still open (read %d, %v)", n, err)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the idle keep-alive connection was not closed by the block")
	}
}

// TestLoginExpectContinue: a login form sent with Expect: 100-continue (curl
// does so for larger bodies) is read, checked and answered without waiting
// for the backend's own 100 Continue.
func TestLoginExpectContinue(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial("127.0.0.1")
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	body := "user=alice%40example.com&pass=wrong"
	io.WriteString(c, "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("want 100 Continue, got %q %v", line, err)
	}
	br.ReadString('\n')
	start := time.Now()
	io.WriteString(c, body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login answer: %v %v", resp, err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("the answer took %v: postern waited for a 100 Continue from the backend", d)
	}
	reqs := h.be.requests()
	if last := reqs[len(reqs)-1]; last.Body != body || last.Header.Get("Expect") != "" {
		t.Errorf("the backend got body %q, Expect %q", last.Body, last.Header.Get("Expect"))
	}
}

// TestBodyAndWriteDeadlines: a request body that stops moving is dropped
// after the body timeout, while a long poll whose body is complete waits as
// long as the backend takes, with or without a response body.
func TestBodyAndWriteDeadlines(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.BodyTimeout = 200 * time.Millisecond
		c.WriteTimeout = 200 * time.Millisecond
	}})
	c := h.dial("127.0.0.1")
	defer c.Close()
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(c)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a stalled request body held the connection for %v", d)
	}
	for _, method := range []string{"GET", "POST"} {
		raw := h.raw("127.0.0.1", method+" /slow?ms=500 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
			"GET /slow?ms=500 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if got := statuses(raw); len(got) != 2 || got[0] != 204 || got[1] != 204 {
			t.Errorf("%s long polls on one connection, answers after 500 ms > the 200 ms timeouts: %v %q", method, got, raw)
		}
	}
}

// TestForwardedForCache: a connection's forwarding values follow each
// request's Host and scheme, and are made again only when they change.
func TestForwardedForCache(t *testing.T) {
	cc := &clientConn{}
	v4, v6 := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")
	for _, c := range []struct {
		addr        netip.Addr
		host, proto string
		ip, elem    string
		again       bool
	}{
		{v4, "mail.example.com", "http", "192.0.2.7", `for=192.0.2.7;host="mail.example.com";proto=http`, false},
		{v4, "mail.example.com", "http", "192.0.2.7", `for=192.0.2.7;host="mail.example.com";proto=http`, true},
		{v4, "other.example", "http", "192.0.2.7", `for=192.0.2.7;host="other.example";proto=http`, false},
		{v4, "other.example", "https", "192.0.2.7", `for=192.0.2.7;host="other.example";proto=https`, false},
		{v4, "", "https", "192.0.2.7", `for=192.0.2.7;proto=https`, false},
		{v6, "", "https", "2001:db8::7", `for="[2001:db8::7]";proto=https`, false},
	} {
		before := cc.fwd.Load()
		f := cc.forwardedFor(c.addr, c.host, c.proto)
		if f.ip != c.ip || f.elem != c.elem {
			t.Errorf("%v %q %s: ip %q elem %q, want %q %q", c.addr, c.host, c.proto, f.ip, f.elem, c.ip, c.elem)
		}
		if (f == before) != c.again {
			t.Errorf("%v %q %s: reused %v, want %v", c.addr, c.host, c.proto, f == before, c.again)
		}
	}
	var none *clientConn
	if none.forwardedFor(v4, "x", "http") != nil {
		t.Error("no connection: want nil")
	}
}
