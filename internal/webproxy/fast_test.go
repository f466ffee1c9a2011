package webproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/tlsconf"
)

// fastBackend is a Go web server with answers of every framing.
func fastBackend(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	page := strings.Repeat("p", 1024)
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, page)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for i := range 3 {
			fmt.Fprintf(w, "part %d\n", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/sniff", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil // none from the backend
		w.Header().Set("Content-Length", "27")
		io.WriteString(w, "<html><body>hi</body></html")
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		w.(http.Flusher).Flush()
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %q xff=%q", r.Method, r.URL.RequestURI(), b, r.Header.Get("X-Forwarded-For"))
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		var hs []string
		for k, vv := range r.Header {
			hs = append(hs, k+"="+strings.Join(vv, "|"))
		}
		slices.Sort(hs)
		fmt.Fprintf(w, "%s host=%s\n%s", r.RequestURI, r.Host, strings.Join(hs, "\n"))
	})
	return serveBackend(t, mux)
}

// serveBackend serves h over HTTP on a free loopback port until the test
// ends, and returns its address.
func serveBackend(tb testing.TB, h http.Handler) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// exchangeScript writes script at once on a new connection and reads
// every answer until the connection closes; methods are the requests'
// methods in order (a HEAD answer has no body).
func exchangeScript(t *testing.T, addr string, useTLS bool, script string, methods []string) []string {
	t.Helper()
	var c net.Conn
	var err error
	if useTLS {
		c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, script); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []string
	for i := 0; ; i++ {
		m := "GET"
		if i < len(methods) {
			m = methods[i]
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			rest, _ := io.ReadAll(br)
			out = append(out, fmt.Sprintf("end (%v) rest=%q", err == io.EOF, rest))
			return out
		}
		body, err := io.ReadAll(resp.Body)
		resp.Header.Del("Date")
		out = append(out, fmt.Sprintf("%s len=%d te=%v close=%v\n%s\nbody=%q err=%v trailer=%v",
			resp.Status, resp.ContentLength, resp.TransferEncoding, resp.Close, strings.Join(sortedFields(resp.Header), "\n"), body, err, resp.Trailer))
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			i--
		}
	}
}

// TestFastMatchesNetHTTP: a client cannot tell the fast server from
// net/http's: the same scripts of requests — plain, pipelined, HEAD,
// conditional, every answer framing, and the requests the fast server
// hands over (a body, an upgrade, an Expect, a long head, HTTP/1.0, a
// malformed request, a path rule's refusal) in the middle of a
// connection — get the same answers, and the connection ends at the same
// point.
func TestFastMatchesNetHTTP(t *testing.T) {
	t.Run("http", func(t *testing.T) { testFastMatches(t, false) })
	t.Run("https", func(t *testing.T) { testFastMatches(t, true) })
}

func testFastMatches(t *testing.T, useTLS bool) {
	be := fastBackend(t)
	var serverTLS *tls.Config
	if useTLS {
		serverTLS = selfSigned(t)
	}
	fastAddr, fp := startProxy(t, be, true, func(c *Config, p *Proxy) {
		if c != nil {
			c.TLS = serverTLS
		}
	})
	slowAddr, _ := startProxy(t, be, true, func(c *Config, p *Proxy) {
		if c != nil {
			c.TLS = serverTLS
		}
		if p != nil {
			p.noFast = true
		}
	})
	get := func(path string, extra ...string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: mail.example.com\r\n" + strings.Join(extra, "") + "\r\n"
	}
	last := get("/page", "Connection: close\r\n")
	cases := []struct {
		name    string
		script  string
		methods []string
		fast    bool // served without a hand-over
	}{
		{"plain", get("/page") + get("/page", "User-Agent: t\r\nAccept: */*\r\n") + last, nil, true},
		{"head", "HEAD /page HTTP/1.1\r\nHost: x\r\n\r\n" + last, []string{"HEAD"}, true},
		{"conditional", get("/page", "If-None-Match: \"v1\"\r\n") + last, nil, true},
		{"framings", get("/chunked") + get("/sniff") + get("/empty") + get("/trailer", "TE: trailers\r\n") + last, nil, true},
		{"headers", get("/headers?a=1;b=2", "X-Forwarded-For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nCookie: a=1\r\nCookie: b=2\r\nPragma: no-cache\r\n") + last, nil, true},
		{"missing", get("/nothing-here") + last, nil, true},
		{"path rule", get("/admin/x") + last, nil, true},
		{"close first", last + get("/page"), nil, true},
		// "close" among other words: the handler's Close is false, yet
		// net/http's server ends the connection after the answer.
		{"loose close", get("/headers", "Connection: Close 0\r\n") + get("/page"), nil, true},
		{"body in the middle", get("/page") + "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + get("/echo") + last, nil, false},
		{"chunked body", get("/page") + "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + last, nil, false},
		{"expect", get("/page") + get("/echo", "Expect: 100-continue\r\n") + last, nil, false},
		{"long head", get("/headers", "Cookie: "+strings.Repeat("c", 6000)+"\r\n") + last, nil, false},
		{"http/1.0", "GET /page HTTP/1.0\r\nHost: x\r\n\r\n", nil, false},
		{"bare LF", get("/page") + "GET /page HTTP/1.1\nHost: x\n\n" + last, nil, false},
		{"garbage", get("/page") + "GARBAGE\r\n\r\n", nil, false},
		{"two hosts", get("/page", "Host: y\r\n"), nil, false},
		{"no host", "GET /page HTTP/1.1\r\n\r\n", nil, false},
		{"absolute form", "GET http://other/page HTTP/1.1\r\nHost: x\r\n\r\n" + last, nil, false},
		{"login form", get("/login?user=a&pass=b") + "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\n\r\nuser=a&pass=bb" + last, nil, false},
		{"upgrade", get("/page", "Upgrade: websocket\r\nConnection: Upgrade\r\n") + last, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := fp.fast.handedOff.Load()
			want := exchangeScript(t, slowAddr, useTLS, tc.script, tc.methods)
			got := exchangeScript(t, fastAddr, useTLS, tc.script, tc.methods)
			if testing.Verbose() {
				t.Logf("%s", strings.Join(got, "\n--\n"))
			}
			if !slices.Equal(got, want) {
				t.Errorf("fast server:\n%s\n\nnet/http:\n%s", strings.Join(got, "\n--\n"), strings.Join(want, "\n--\n"))
			}
			if handed := fp.fast.handedOff.Load() != before; handed == tc.fast {
				t.Errorf("handed over to net/http: %v, want %v", handed, !tc.fast)
			}
			if tc.name == "headers" && useTLS != strings.Contains(got[0], "X-Forwarded-Proto=https") {
				t.Errorf("the backend was not told the scheme: %s", got[0])
			}
		})
	}
	if !useTLS {
		return
	}
	// HTTP/2 goes to net/http's server at once; plain HTTP on the HTTPS
	// port gets net/http's answer.
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + fastAddr + "/headers")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || !strings.Contains(string(b), "X-Forwarded-Proto=https") {
		t.Errorf("HTTP/2: %s %q", resp.Proto, b)
	}
	for _, addr := range []string{fastAddr, slowAddr} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		b, _ := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(b), "400 Bad Request") || !strings.Contains(string(b), "HTTP request to an HTTPS server") {
			t.Errorf("plain HTTP to %s: %q", addr, b)
		}
	}
}

// selfSigned returns a server configuration with a new self-signed
// certificate.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	cert, key, err := tlsconf.SelfSigned(t.TempDir(), []string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsconf.Load(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return certs.ServerConfig()
}

// gatedBackend answers "ok PATH" on keep-alive connections; a request
// for /held is announced on held and waits until release is closed.
func gatedBackend(t *testing.T) (addr string, held, release chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held, release = make(chan struct{}, 8), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/held" {
			held <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "ok "+r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), held, release
}

// waitFor polls cond until it holds, failing t after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFastSlowAnswerPipelined: while a slow answer is awaited the client
// is watched; a request it pipelines meanwhile is not lost, and both
// answers come in order on the fast server.
func TestFastSlowAnswerPipelined(t *testing.T) {
	be, _, release := gatedBackend(t)
	addr, p := startProxy(t, be, true)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
	// The second request is sent once the watcher reads the client.
	waitFor(t, "the watcher", func() bool { return fastWatching(p) })
	io.WriteString(c, "GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	close(release)
	for _, want := range []string{"ok /held", "ok /two"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != want {
			t.Fatalf("got %q, want %q", b, want)
		}
	}
	if n := p.fast.handedOff.Load(); n != 0 {
		t.Errorf("%d hand-overs", n)
	}
}

// fastWatching reports whether a connection of p's fast server has its
// watcher running.
func fastWatching(p *Proxy) bool {
	p.fast.mu.Lock()
	defer p.fast.mu.Unlock()
	for fc := range p.fast.conns {
		if fc.watchOn.Load() {
			return true
		}
	}
	return false
}

// TestFastTimeouts: a head that stalls is dropped after the header
// timeout and an idle keep-alive connection after the idle timeout,
// without an answer, as net/http's server does.
func TestFastTimeouts(t *testing.T) {
	be := fastBackend(t)
	addr, _ := startProxy(t, be, true, func(c *Config, p *Proxy) {
		if c != nil {
			c.HeaderTimeout = 150 * time.Millisecond
			c.IdleTimeout = 300 * time.Millisecond
		}
	})
	for _, tc := range []struct{ name, send string }{
		{"stalled head", "GET /page HTTP/1.1\r\nHost: x\r\n"},
		{"idle", "GET /page HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		io.WriteString(c, tc.send)
		b, err := io.ReadAll(c) // until postern closes it
		c.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s: closed after %v", tc.name, time.Since(start))
		}
		answered := strings.Count(string(b), "HTTP/1.1 200 OK")
		if want := strings.Count(tc.send, "\r\n\r\n"); answered != want {
			t.Fatalf("%s: %d answers, want %d: %q", tc.name, answered, want, b)
		}
	}
}

// TestFastShutdown: at shutdown a keep-alive connection waiting for its
// next request is closed at once, and one whose answer is awaited gets it
// (with Connection: close) before Serve returns.
func TestFastShutdown(t *testing.T) {
	be, held, release := gatedBackend(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, p := startProxy(t, be, true) // for its configuration and engine
	q, err := New(p.cfg, p.eng, p.policy, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- q.Serve(ctx, ln, 5*time.Second) }()
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	idle.SetDeadline(time.Now().Add(10 * time.Second))
	busy.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(idle, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	ibr := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(ibr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first answer: %v %v", resp, err)
	} else {
		io.ReadAll(resp.Body)
	}
	io.WriteString(busy, "GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
	<-held
	cancel()
	if _, err := ibr.ReadByte(); err == nil {
		t.Fatal("the idle connection got bytes at shutdown")
	}
	waitFor(t, "the shutdown", q.fast.isStopping)
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatalf("the request in flight lost its answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "ok /held" || !resp.Close {
		t.Fatalf("answer in flight: %q close=%v", b, resp.Close)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// TestFastRealClients: curl and Python's http.client, over HTTP and
// HTTPS (HTTP/1.1), reuse their connection through the fast server,
// across a hand-over (a POST with a body) too.
func TestFastRealClients(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		be := fastBackend(t)
		var serverTLS *tls.Config
		scheme := "http"
		if useTLS {
			serverTLS, scheme = selfSigned(t), "https"
		}
		addr, p := startProxy(t, be, true, func(c *Config, _ *Proxy) {
			if c != nil {
				c.TLS = serverTLS
			}
		})
		base := scheme + "://" + addr
		if _, err := exec.LookPath("curl"); err == nil {
			out, err := exec.Command("curl", "-sk", "--http1.1", "-w", "%{http_code} %{num_connects}\n",
				"-o", "/dev/null", base+"/page", "-o", "/dev/null", base+"/admin/", "-o", "/dev/null", base+"/chunked",
				"-o", "/dev/null", "-d", "x=1", base+"/echo", "-o", "/dev/null", base+"/page").CombinedOutput()
			if got := string(out); err != nil || got != "200 1\n403 0\n200 0\n200 0\n200 0\n" {
				t.Errorf("%s: curl: %q %v", scheme, got, err)
			}
		}
		if _, err := exec.LookPath("python3"); err == nil {
			script := `
import http.client, ssl, sys
host, port = sys.argv[2].rsplit(":", 1)
if sys.argv[1] == "https":
    c = http.client.HTTPSConnection(host, int(port), context=ssl._create_unverified_context(), timeout=10)
else:
    c = http.client.HTTPConnection(host, int(port), timeout=10)
out = []
for method, path, body in [("GET", "/page", None), ("HEAD", "/page", None), ("GET", "/chunked", None),
                           ("POST", "/echo", "hello"), ("GET", "/echo?q=1", None)]:
    c.request(method, path, body=body)
    r = c.getresponse()
    data = r.read()
    out.append("%d %d %s" % (r.status, len(data), data[:40].decode() if path.startswith("/echo") else ""))
print("|".join(out))
`
			out, err := exec.Command("python3", "-c", script, scheme, addr).CombinedOutput()
			want := `200 1024 |200 0 |200 21 |200 34 POST /echo "hello" xff="127.0.0.1"|200 32 GET /echo?q=1 "" xff="127.0.0.1"` + "\n"
			if err != nil || string(out) != want {
				t.Errorf("%s: python: %q %v\nwant %q", scheme, out, err, want)
			}
		}
		if p.fast.handedOff.Load() == 0 {
			t.Errorf("%s: the POSTs were never handed over", scheme)
		}
	}
}

// echoBackend answers every request with a fixed-length page naming what
// reached it: the method, the target, Host and the forwarding headers.
func echoBackend(tb testing.TB) string {
	tb.Helper()
	return serveBackend(tb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		body := fmt.Sprintf("%s %s host=%q xff=%q fwd=%q proto=%q ua=%q cookie=%q\n", r.Method, r.RequestURI, r.Host,
			r.Header.Values("X-Forwarded-For"), r.Header.Values("Forwarded"), r.Header.Values("X-Forwarded-Proto"),
			r.Header.Values("User-Agent"), r.Header.Values("Cookie"))
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		io.WriteString(w, body)
	}))
}

// rawExchange sends b and then a last request asking to close on a new
// connection, and returns all that comes back until the server closes it,
// Date lines left out. (The sending side is not shut: net/http's server
// takes a client's end of sending for the client gone.)
func rawExchange(t *testing.T, addr string, b []byte) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(append(b[:len(b):len(b)], "GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"...))
	out, _ := io.ReadAll(c)
	var keep []string
	for _, line := range strings.SplitAfter(string(out), "\n") {
		if !strings.HasPrefix(line, "Date: ") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "")
}

// FuzzFastConnection: whatever bytes a client sends on a connection —
// any number of requests, pipelined, well formed or not, with bodies or
// not — the fast server sends back exactly what net/http's server sends
// (Date lines aside), and the backend hears the same.
func FuzzFastConnection(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /a?b HTTP/1.1\r\nHost: x\r\nUser-Agent: u\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nCookie: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\nHost: x\n\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET /admin/ HTTP/1.1\r\nHost: x\r\n\r\nGET /login?user=a HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTT",
		"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Close 0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		// Forwarded names each request's own Host, whatever the last one's.
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: y\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\nGET /d HTTP/1.1\r\nHost: \r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	// No intrusion prevention: thousands of connections from one address
	// must not block it on one side first.
	conf := baseCfg[:strings.Index(baseCfg, "intrusion_prevention:")]
	be := echoBackend(f)
	quick := func(c *Config, p *Proxy) {
		if c != nil {
			c.RefusalTime = -1
			// A request left waiting for more (a body never sent, a
			// cut head) ends the connection soon, on both sides alike.
			c.HeaderTimeout = 500 * time.Millisecond
			c.IdleTimeout = 500 * time.Millisecond
			c.BodyTimeout = 500 * time.Millisecond
		}
	}
	fastAddr, slowAddr := fastAndNetHTTP(f, conf, be, quick)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 16<<10 {
			return
		}
		want := rawExchange(t, slowAddr, b)
		got := rawExchange(t, fastAddr, b)
		if got != want {
			t.Fatalf("for %q\nfast server: %q\nnet/http:    %q", b, got, want)
		}
	})
}

// TestFastHalfClose: a client that shuts its sending side after its
// requests still gets every answer from the fast server.
func TestFastHalfClose(t *testing.T) {
	addr, _ := startProxy(t, echoBackend(t), true)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "GET /one host=") || !strings.Contains(string(out), "GET /two host=") {
		t.Fatalf("answers after the client's end of sending: %q", out)
	}
}

// FuzzFastAnswer: whatever a backend answers a plain GET, the client of
// the fast server gets byte for byte what net/http's server sends it
// (Date lines aside) — the fast server writing the plainest answers'
// header lines as read, without a map.
func FuzzFastAnswer(f *testing.F) {
	for _, c := range fastResponseCases {
		f.Add([]byte(c.head))
	}
	for _, c := range fieldsCases {
		f.Add([]byte(c))
	}
	for _, a := range backendAnswers {
		f.Add([]byte(a.script))
	}
	be, fastAddr, slowAddr := answerGateways(f, "")
	req := []byte("GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Fuzz(func(t *testing.T, answer []byte) {
		if len(answer) > 16<<10 {
			return
		}
		be.mu.Lock()
		be.script = string(answer)
		be.mu.Unlock()
		want := rawExchange(t, slowAddr, req)
		got := rawExchange(t, fastAddr, req)
		if got != want {
			t.Fatalf("for %q\nfast server: %q\nnet/http:    %q", answer, got, want)
		}
	})
}

// fastAndNetHTTP starts two gateways in front of backend with conf and
// opts, one serving with the fast server and one with net/http's, and
// returns their addresses.
func fastAndNetHTTP(tb testing.TB, conf, backend string, opts ...func(c *Config, p *Proxy)) (fast, slow string) {
	tb.Helper()
	fast, _ = startProxyConfig(tb, conf, backend, true, opts...)
	slow, _ = startProxyConfig(tb, conf, backend, true, append(opts[:len(opts):len(opts)], func(_ *Config, p *Proxy) {
		if p != nil {
			p.noFast = true
		}
	})...)
	return fast, slow
}

// answerGateways starts a backend answering script (be.script, which a
// test may change) and fastAndNetHTTP's two gateways in front of it,
// without intrusion prevention, for comparing what each sends a client
// of the backend's answers. The answer ends with its connection, however
// framed, and neither gateway keeps a backend connection: whether one was
// kept (which the backend closes after 10 s, at a moment of its own for
// each gateway) must not decide which of them meets the script.
func answerGateways(tb testing.TB, script string) (be *scriptBackend, fast, slow string) {
	tb.Helper()
	conf := baseCfg[:strings.Index(baseCfg, "intrusion_prevention:")]
	be = startScriptBackend(tb, script)
	be.closeAfter, be.closeAll = true, true
	fast, slow = fastAndNetHTTP(tb, conf, be.ln.Addr().String(), func(c *Config, p *Proxy) {
		if c != nil {
			c.RefusalTime = -1
			c.BackendTimeout = 500 * time.Millisecond
		}
	})
	return be, fast, slow
}

// TestFastInvalidLength: an answer whose Content-Length reaches the
// handler invalid ("0 ", a folded line appended to it) is written by the
// fast server as net/http's server writes it: with chunked framing for a
// GET over HTTP/1.1, and the header as it is for a HEAD and over HTTP/1.0
// (which cannot be chunked) — never with a length of its own making.
func TestFastInvalidLength(t *testing.T) {
	_, fastAddr, slowAddr := answerGateways(t, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n \r\nX-A: a\r\n\r\n")
	for _, tc := range []struct{ req, want string }{
		{"GET /page HTTP/1.1\r\nHost: x\r\n\r\n", "Transfer-Encoding: chunked\r\n"},
		{"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\n", "Content-Length: 0\r\n"},
		{"GET /page HTTP/1.0\r\nHost: x\r\n\r\n", "Content-Length: 0\r\n"},
	} {
		want := rawExchange(t, slowAddr, []byte(tc.req))
		got := rawExchange(t, fastAddr, []byte(tc.req))
		if got != want {
			t.Errorf("%q\nfast server: %q\nnet/http:    %q", tc.req, got, want)
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%q: %q, want %q in it", tc.req, got, tc.want)
		}
	}
}

// TestFastWriteDeadline: on the fast server every write to the client has
// the write timeout from the moment it is made: a client that stops
// reading a large answer is dropped (and the backend exchange ended),
// while an answer that takes the backend longer than the timeout to begin
// still reaches the client.
func TestFastWriteDeadline(t *testing.T) {
	const big = 64 << 20
	dropped := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(big))
		chunk := make([]byte, 64<<10)
		for n := 0; n < big; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				dropped <- struct{}{}
				return
			}
		}
	})
	mux.HandleFunc("/late", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(500 * time.Millisecond) // a long poll's answer
		io.WriteString(w, "late")
	})
	addr, p := startProxy(t, serveBackend(t, mux), true, func(c *Config, _ *Proxy) {
		if c != nil {
			c.WriteTimeout = 200 * time.Millisecond
		}
	})

	got := rawExchange(t, addr, []byte("GET /late HTTP/1.1\r\nHost: x\r\n\r\n"))
	if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.Contains(got, "\r\n\r\nlate") {
		t.Errorf("an answer begun after the write timeout: %q", got)
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-dropped: // postern stopped writing to the client, and ended the exchange
	case <-time.After(20 * time.Second):
		t.Fatal("a client that does not read held its answer for 20 s (write timeout 200 ms)")
	}
	if p.fast.handedOff.Load() != 0 {
		t.Error("handed to net/http: the fast server was not tested")
	}
}

// TestFastLateWrite: the short first wait for an answer (after which the
// fast server watches its client) never fails a request by itself. When
// more than that wait passes between the request's start and its write
// to the backend (a slow connect, a busy machine), the request still goes
// out and its answer comes back, as through net/http's server.
func TestFastLateWrite(t *testing.T) {
	conf := baseCfg[:strings.Index(baseCfg, "intrusion_prevention:")]
	be := startScriptBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npage")
	addr, p := startProxyConfig(t, conf, be.ln.Addr().String(), true, func(c *Config, p *Proxy) {
		if c != nil {
			c.RefusalTime = -1
		}
	})
	// The request's clock reads 2 × slowAnswer before the write happens.
	p.dc.now = func() time.Time { return time.Now().Add(-2 * slowAnswer) }
	for i := range 3 { // a new backend connection, then reused ones
		got := rawExchange(t, addr, []byte("GET /page HTTP/1.1\r\nHost: x\r\n\r\n"))
		// The backend answers the page on a new connection, "ok" on a
		// reused one and to /end (startScriptBackend).
		if st := statuses(got); len(st) != 2 || st[0] != 200 || st[1] != 200 || i == 0 && !strings.Contains(got, "\r\n\r\npage") {
			t.Fatalf("exchange %d: %q", i, got)
		}
	}
}
