package webproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptBackend answers the first request for /page on each connection with script
// (then, when late is set, writes late as a second write and signals it on
// wroteLate) and every other request with "ok".
// With closeAfter it closes the connection after the script.
type scriptBackend struct {
	ln         net.Listener
	script     string
	late       string
	closeAfter bool
	// closeAll: every other answer says Connection: close and ends its
	// connection too, so that no proxy keeps one and every request for
	// /page meets the script on a new connection.
	closeAll  bool
	wroteLate chan struct{}

	mu    sync.Mutex
	conns int
	reqs  []string // request heads, in order
}

func startScriptBackend(t testing.TB, script string) *scriptBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &scriptBackend{ln: ln, script: script, wroteLate: make(chan struct{}, 16)}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			b.mu.Lock()
			b.conns++
			b.mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); b.serve(c) }()
		}
	}()
	return b
}

func (b *scriptBackend) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for n := 0; ; n++ {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" || line == "\n" {
				break
			}
		}
		b.mu.Lock()
		b.reqs = append(b.reqs, head.String())
		b.mu.Unlock()
		if n > 0 || !strings.Contains(head.String(), " /page ") {
			if b.closeAll {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			continue
		}
		b.mu.Lock()
		script := b.script
		b.mu.Unlock()
		io.WriteString(c, script)
		if b.late != "" {
			io.WriteString(c, b.late)
			b.wroteLate <- struct{}{}
		}
		if b.closeAfter {
			return
		}
	}
}

func (b *scriptBackend) connCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conns
}

// clientResult is what a client sees of one exchange with postern: the
// informational answers, the final one's status, headers (but Date) and
// body, and whether reading it failed.
func clientExchange(t testing.TB, addr, method, path string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: mail.example.com\r\n\r\n", method, path)
	br := bufio.NewReader(c)
	req := &http.Request{Method: method}
	var info []int
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return fmt.Sprintf("1xx=%v no answer (%v)", info, err != nil)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != 101 {
			info = append(info, resp.StatusCode)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Header.Del("Date")
		return fmt.Sprintf("1xx=%v %d %v body=%q trailers=%v failed=%v", info, resp.StatusCode,
			sortedFields(resp.Header), body, sortedFields(resp.Trailer), err != nil)
	}
}

// sortedFields lists h's fields as "Name=v1|v2", sorted.
func sortedFields(h http.Header) []string {
	var hs []string
	for k, vv := range h {
		hs = append(hs, k+"="+strings.Join(vv, "|"))
	}
	slices.Sort(hs)
	return hs
}

// backendAnswers are answers a backend could give, honest and broken:
// each is read by the direct path exactly as by http.Transport.
var backendAnswers = []struct{ name, method, script string }{
	{"length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"},
	{"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	{"chunked trailers", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: t\r\nX-U: u\r\n\r\n"},
	{"length and chunked", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	{"two lengths differ", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
	{"two lengths same", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"},
	{"length list", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"},
	{"negative length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello"},
	{"length with sign", "GET", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"},
	{"space before colon", "GET", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"},
	{"obs-fold", "GET", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello"},
	{"bare LF", "GET", "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"},
	{"bad chunk size", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n"},
	{"gzip, chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	{"identity encoding", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello"},
	{"bad status", "GET", "HTTP/1.1 2OO OK\r\nContent-Length: 5\r\n\r\nhello"},
	{"early hints", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
	{"continue", "GET", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
	{"six 1xx", "GET", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
	{"switch unasked", "GET", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
	{"204 with body", "GET", "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"},
	{"304 with length", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\nSMUGGLED"},
	{"HEAD with body", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"},
	{"event stream", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nContent-Length: 9\r\n\r\ndata: x\n\n"},
	{"close", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"},
	{"hop-by-hop", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\n\r\nhello"},
	{"pipelined extra answer", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"},
	{"short body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello"},
	{"nothing", "GET", ""},
	{"garbage", "GET", "hello\r\n\r\n"},
}

// TestDirectMatchesReverseProxy: for every backend answer the client gets
// the same from the direct path as from httputil.ReverseProxy over
// http.Transport, and the request after it on a new client connection
// gets a clean answer ("ok" on a reused backend connection, the script
// again on a new one), never bytes left over from the first.
func TestDirectMatchesReverseProxy(t *testing.T) {
	for _, tc := range backendAnswers {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			var second [2]string
			for i, direct := range []bool{false, true} {
				be := startScriptBackend(t, tc.script)
				// Answers without a length end when the backend closes.
				be.closeAfter = tc.script == "" || strings.Contains(tc.name, "short") || strings.Contains(tc.name, "switch") ||
					strings.Contains(tc.name, "colon") || strings.Contains(tc.name, "negative")
				addr, _ := startProxy(t, be.ln.Addr().String(), direct, referenceFresh(direct))
				got[i] = clientExchange(t, addr, tc.method, "/page")
				second[i] = clientExchange(t, addr, "GET", "/next")
				if !strings.Contains(second[i], `200 [Content-Length=2 Content-Type=text/plain; charset=utf-8] body="ok"`) {
					t.Errorf("direct=%v: the next request got %s", direct, second[i])
				}
			}
			if got[0] != got[1] && normalize(got[0], tc.script) != normalize(got[1], tc.script) {
				t.Errorf("ReverseProxy: %s\ndirect:       %s", got[0], got[1])
			}
			if tc.script != "" && !strings.Contains(got[1], "no answer") && strings.Contains(tc.script, "SMUGGLED") && strings.Contains(got[1], "SMUGGLED") {
				t.Errorf("an answer's leftovers reached the client: %s", got[1])
			}
		})
	}
}

// TestDirectLateAnswer: an answer the backend sends unasked on a
// connection that is idle in the pool is never given to the next request;
// the connection is dropped and the next request goes to a new one.
func TestDirectLateAnswer(t *testing.T) {
	be := startScriptBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	be.late = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
	addr, _ := startProxy(t, be.ln.Addr().String(), true)
	if got := clientExchange(t, addr, "GET", "/page"); !strings.Contains(got, `body="hello"`) {
		t.Fatalf("first answer: %s", got)
	}
	<-be.wroteLate // in postern's socket buffer now (loopback)
	got := clientExchange(t, addr, "GET", "/page")
	if strings.Contains(got, "SMUGGLED") || !strings.Contains(got, `body="hello"`) {
		t.Fatalf("second answer: %s (want the script from a new connection)", got)
	}
	if n := be.connCount(); n != 2 {
		t.Fatalf("%d backend connections, want 2 (the tainted one dropped)", n)
	}
}

// TestDirectReuse: a connection whose answer was read to its end is used
// again; one the backend closed while idle is noticed and replaced, and
// the request does not fail.
func TestDirectReuse(t *testing.T) {
	be := startScriptBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	addr, _ := startProxy(t, be.ln.Addr().String(), true)
	clientExchange(t, addr, "GET", "/page")
	if got := clientExchange(t, addr, "GET", "/page"); !strings.Contains(got, `body="ok"`) {
		t.Fatalf("second answer %s, want ok from the reused connection", got)
	}
	if n := be.connCount(); n != 1 {
		t.Fatalf("%d backend connections, want 1", n)
	}

	closing := startScriptBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	closing.closeAfter = true // closes without saying so
	addr, p := startProxy(t, closing.ln.Addr().String(), true)
	clientExchange(t, addr, "GET", "/page")
	// The close reaches postern's socket: wait until the pooled
	// connection reads as closed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.dc.mu.Lock()
		var bc *backendConn
		if len(p.dc.idle) > 0 {
			bc = p.dc.idle[0]
		}
		p.dc.mu.Unlock()
		if bc != nil && !bc.idleClean() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the backend's close never reached the pooled connection")
		}
		time.Sleep(time.Millisecond)
	}
	if got := clientExchange(t, addr, "GET", "/page"); !strings.Contains(got, `200`) || !strings.Contains(got, `body="hello"`) {
		t.Fatalf("after the backend closed the idle connection: %s", got)
	}
}

// TestDirectRequestForm: the request the backend gets on the direct path
// is the one the ReverseProxy path sends: hop-by-hop and forwarding
// headers dropped, postern's forwarding headers, no Go User-Agent, the
// query cleaned.
func TestDirectRequestForm(t *testing.T) {
	req := "GET /page?a=1;b=2 HTTP/1.1\r\nHost: mail.example.com\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n" +
		"X-Forwarded-For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nTE: trailers, deflate\r\nProxy-Authorization: x\r\nX-Keep: k\r\n\r\n"
	var heads [2]string
	for i, direct := range []bool{false, true} {
		be := startScriptBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
		addr, _ := startProxy(t, be.ln.Addr().String(), direct)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		c.Close()
		be.mu.Lock()
		heads[i] = be.reqs[0]
		be.mu.Unlock()
	}
	if heads[0] != heads[1] {
		t.Fatalf("ReverseProxy sent\n%s\ndirect sent\n%s", heads[0], heads[1])
	}
	for _, bad := range []string{"6.6.6.6", "X-Drop", "Proxy-Authorization", "Go-http-client", "deflate", "a=1;b=2"} {
		if strings.Contains(heads[1], bad) {
			t.Errorf("backend got %q:\n%s", bad, heads[1])
		}
	}
	for _, want := range []string{"X-Forwarded-For: 127.0.0.1\r\n", "Te: trailers\r\n", "X-Keep: k\r\n", "Host: mail.example.com\r\n"} {
		if !strings.Contains(heads[1], want) {
			t.Errorf("backend did not get %q:\n%s", want, heads[1])
		}
	}
}

// sniffedType is a Content-Type net/http's server sniffed (text/plain;
// charset=utf-8, application/octet-stream, ...) in clientExchange's text.
var sniffedType = regexp.MustCompile(` ?Content-Type=[^ ;\]]+(; charset=[^ \]]+)?`)

// normalize forgives what httputil.ReverseProxy leaves to chance: for an
// answer of unknown length it sends the headers from a timer (so the
// server may or may not have sniffed a Content-Type before they go, and a
// client of an answer cut short may or may not have got its headers),
// where the direct path sends them at once.
func normalize(result, script string) string {
	if strings.Contains(result, "no answer") || strings.Contains(result, "failed=true") {
		return "cut short"
	}
	if !strings.Contains(script, "Content-Type") {
		result = strings.ReplaceAll(sniffedType.ReplaceAllString(result, ""), "[ ", "[")
	}
	return result
}

// FuzzDirectResponse: whatever a backend answers, the client gets from
// the direct path what it gets from httputil.ReverseProxy over
// http.Transport (as normalize forgives), and nothing panics.
func FuzzDirectResponse(f *testing.F) {
	for _, a := range backendAnswers {
		f.Add(a.method == "HEAD", []byte(a.script))
	}
	var bes [2]*scriptBackend
	var addrs [2]string
	for i, direct := range []bool{false, true} {
		bes[i] = startScriptBackend(f, "")
		bes[i].closeAfter = true // every answer ends, with a length or not
		addrs[i], _ = startProxy(f, bes[i].ln.Addr().String(), direct, referenceFresh(direct))
	}
	f.Fuzz(func(t *testing.T, head bool, answer []byte) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		var got [2]string
		for i := range bes {
			bes[i].mu.Lock()
			bes[i].script = string(answer)
			bes[i].mu.Unlock()
			got[i] = clientExchange(t, addrs[i], method, "/page")
		}
		if got[0] != got[1] && normalize(got[0], string(answer)) != normalize(got[1], string(answer)) {
			t.Errorf("answer %q\nReverseProxy: %s\ndirect:       %s", answer, got[0], got[1])
		}
	})
}

// silentBackend reads requests and never answers; got receives when a
// connection brought its first bytes, gone when postern closed it.
func silentBackend(t *testing.T) (addr string, got, gone chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got, gone = make(chan struct{}, 16), make(chan struct{}, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				var b [1]byte
				if _, err := c.Read(b[:]); err == nil {
					got <- struct{}{}
				}
				io.Copy(io.Discard, c) // until postern closes it
				gone <- struct{}{}
			}()
		}
	}()
	return ln.Addr().String(), got, gone
}

// TestDirectBackendTimeout: a backend that does not answer in time gets
// the client a 504 on both paths.
func TestDirectBackendTimeout(t *testing.T) {
	addr, _, _ := silentBackend(t)
	var got [2]string
	for i, direct := range []bool{false, true} {
		paddr, _ := startProxy(t, addr, direct, func(c *Config, _ *Proxy) {
			if c != nil {
				c.BackendTimeout = 200 * time.Millisecond
			}
		})
		got[i] = clientExchange(t, paddr, "GET", "/page")
	}
	if got[0] != got[1] || !strings.Contains(got[1], " 504 ") {
		t.Fatalf("ReverseProxy: %s\ndirect:       %s", got[0], got[1])
	}
}

// TestDirectClientGone: a client that goes away while the backend has not
// answered ends the backend connection at once, not at the timeout.
func TestDirectClientGone(t *testing.T) {
	addr, got, gone := silentBackend(t)
	paddr, _ := startProxy(t, addr, true, func(c *Config, _ *Proxy) {
		if c != nil {
			c.BackendTimeout = time.Minute
		}
	})
	c, err := net.Dial("tcp", paddr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-got: // the request is at the backend
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the backend")
	}
	c.Close()
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend connection outlived the client")
	}
}

// TestDirectIdleExpiry: connections idle longer than the idle timeout are
// closed when another goes back to the pool, and never taken again.
func TestDirectIdleExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	d := &directClient{now: func() time.Time { return now }}
	var peers []net.Conn
	conn := func() *backendConn {
		a, b := net.Pipe()
		peers = append(peers, b)
		t.Cleanup(func() { a.Close(); b.Close() })
		return &backendConn{c: a}
	}
	old1, old2 := conn(), conn()
	d.put(old1)
	d.put(old2)
	now = now.Add(directIdleTimeout)
	fresh := conn()
	d.put(fresh)
	if len(d.idle) != 1 || d.idle[0] != fresh {
		t.Fatalf("pool after expiry: %d connections", len(d.idle))
	}
	for i, p := range peers[:2] {
		p.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := p.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("expired connection %d: read %v, want EOF (closed)", i, err)
		}
	}
}

// referenceFresh gives the reference (ReverseProxy) path a new backend
// connection for every request: the Transport's reuse of a connection the
// backend is closing can fail a request (a race of its own, not the
// question of these tests).
func referenceFresh(direct bool) func(*Config, *Proxy) {
	return func(_ *Config, p *Proxy) {
		if p != nil && !direct {
			p.tr.DisableKeepAlives = true
		}
	}
}

// TestDirectEventStream: an event stream reaches the client event by event
// on the direct path, even with a Content-Length (as ReverseProxy flushes
// it).
func TestDirectEventStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 18\r\n\r\ndata: a\n\n")
		select {
		case <-release:
		case <-time.After(15 * time.Second):
		}
		io.WriteString(c, "data: b\n\n")
	}()
	addr, _ := startProxy(t, ln.Addr().String(), true)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 9)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "data: a\n\n" {
		t.Fatalf("first event: %q, %v (not flushed?)", first, err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "data: b\n\n" {
		t.Fatalf("second event: %q, %v", rest, err)
	}
}

// TestTrailerOrder: the trailers an answer announces are announced to the
// client in one order every time, on the fast server and on net/http's
// (read from a map, they came out in a random order, and the two servers
// differed from one exchange to the next).
func TestTrailerOrder(t *testing.T) {
	conf := baseCfg[:strings.Index(baseCfg, "intrusion_prevention:")]
	be := startScriptBackend(t, "HTTP/1.1 200 OK\r\nTrailer: Zed, Alpha, Mid\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"2\r\nok\r\n0\r\nZed: 1\r\nAlpha: 2\r\nMid: 3\r\n\r\n")
	be.closeAfter, be.closeAll = true, true // each /page on a new connection
	quick := func(c *Config, p *Proxy) {
		if c != nil {
			c.RefusalTime = -1
		}
	}
	fastAddr, slowAddr := fastAndNetHTTP(t, conf, be.ln.Addr().String(), quick)
	req := []byte("GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
	for i := range 20 {
		for _, addr := range []string{fastAddr, slowAddr} {
			got := rawExchange(t, addr, req)
			if !strings.Contains(got, "\r\nTrailer: Alpha, Mid, Zed\r\n") {
				t.Fatalf("exchange %d through %s: %q", i, addr, got)
			}
		}
	}
}
