package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// startRelay starts svc's relay in mode on a free loopback port and
// returns its address; the test's end stops it.
func startRelay(t *testing.T, mode string, svc service) string {
	t.Helper()
	switch mode {
	case "goroutine":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { serveGoroutines(ln, svc); close(done) }()
		t.Cleanup(func() { ln.Close(); <-done })
		return ln.Addr().String()
	case "loop", "loop-blocking":
		return startLoop(t, svc, mode == "loop-blocking")
	case "goroutine-own":
		return startOwn(t, svc)
	case "loop-costs":
		return startLoopCosts(t, svc)
	}
	t.Fatalf("mode %q", mode)
	return ""
}

var modes = []string{"goroutine", "goroutine-own", "loop", "loop-blocking", "loop-costs"}

// backendListener is a loopback listener that the test's end closes.
func backendListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func deadline(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestTCPRelay: the backend receives a PROXY v2 header with the client's
// address, then the client's bytes; each side's half-close reaches the
// other after its bytes, and bytes still flow the other way after it.
func TestTCPRelay(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			ln := backendListener(t)
			type result struct {
				src  string
				got  string
				err  error
				sent int
			}
			res := make(chan result, 1)
			big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB: more than a socket takes at once
			go func() {
				var r result
				defer func() { res <- r }()
				c, err := ln.Accept()
				if err != nil {
					r.err = err
					return
				}
				defer c.Close()
				deadline(t, c)
				br := bufio.NewReader(c)
				h, err := proxyproto.Read(br)
				if err != nil {
					r.err = fmt.Errorf("PROXY header: %w", err)
					return
				}
				r.src = h.SourceAddr.String()
				bs, err := io.ReadAll(br) // until the client's half-close
				if err != nil {
					r.err = err
					return
				}
				r.got = string(bs)
				r.sent, r.err = io.WriteString(c, big)
			}()
			svc := service{name: "imap", backend: netip.MustParseAddrPort(ln.Addr().String())}
			addr := startRelay(t, mode, svc)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			deadline(t, c)
			if _, err := io.WriteString(c, "a LOGIN alice secret\r\n"); err != nil {
				t.Fatal(err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			bs, err := io.ReadAll(c) // until the backend's close reaches it
			if err != nil {
				t.Fatal(err)
			}
			r := <-res
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.src != c.LocalAddr().String() {
				t.Errorf("PROXY source %s, want the client's %s", r.src, c.LocalAddr())
			}
			if r.got != "a LOGIN alice secret\r\n" {
				t.Errorf("backend got %q", r.got)
			}
			if string(bs) != big {
				t.Errorf("client got %d bytes, want the %d the backend sent", len(bs), len(big))
			}
		})
	}
}

// TestHTTPRelay: keep-alive requests of a real HTTP client reach the
// backend over one connection and come back whole, HEAD and 304 answers
// included; pipelined requests are answered in order; a request with a
// body and an answer without a length end the connection.
func TestHTTPRelay(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			ln := backendListener(t)
			var conns atomic.Int32
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					switch r.URL.Path {
					case "/big":
						w.Header().Set("Content-Length", "300000")
						io.WriteString(w, strings.Repeat("x", 300000))
					case "/304":
						w.WriteHeader(http.StatusNotModified)
					case "/chunked":
						w.(http.Flusher).Flush() // no length: chunked
						io.WriteString(w, "piece")
						w.(http.Flusher).Flush()
						io.WriteString(w, strings.Repeat("y", 100000))
					case "/close":
						// No length: delimited by the close.
						c, _, err := w.(http.Hijacker).Hijack()
						if err == nil {
							io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
							c.Close()
						}
					default:
						w.Header().Set("Content-Length", fmt.Sprint(len(r.URL.Path)))
						io.WriteString(w, r.URL.Path)
					}
				}),
				ConnState: func(_ net.Conn, s http.ConnState) {
					if s == http.StateNew {
						conns.Add(1)
					}
				},
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			addr := startRelay(t, mode, service{name: "web", http: true, backend: netip.MustParseAddrPort(ln.Addr().String())})

			var dials atomic.Int32
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					dials.Add(1)
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				},
			}}
			defer client.CloseIdleConnections()
			for i := range 20 {
				path := fmt.Sprintf("/page/%d", i)
				resp, err := client.Get("http://" + addr + path)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(body) != path {
					t.Fatalf("GET %s: %q, %v", path, body, err)
				}
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("20 keep-alive requests: the backend saw %d connections, want 1", n)
			}
			resp, err := client.Get("http://" + addr + "/big")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if len(body) != 300000 {
				t.Fatalf("GET /big: %d bytes", len(body))
			}
			resp, err = client.Get("http://" + addr + "/chunked")
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "piece"+strings.Repeat("y", 100000) || len(resp.TransferEncoding) != 1 {
				t.Fatalf("GET /chunked: %d bytes, %v", len(body), resp.TransferEncoding)
			}
			for _, path := range []string{"/304", "/after"} {
				resp, err := client.Get("http://" + addr + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			resp, err = client.Head("http://" + addr + "/head")
			if err != nil || resp.ContentLength != 5 {
				t.Fatalf("HEAD: %v, %v", resp, err)
			}
			resp.Body.Close()
			if n, d := conns.Load(), dials.Load(); n != d {
				t.Errorf("the backend saw %d connections for the client's %d, want one each", n, d)
			}

			// Pipelined: three requests in one write, answered in order.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			deadline(t, c)
			io.WriteString(c, "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(c)
			for _, want := range []string{"/one", "/two", "/three"} {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("pipelined %s: %v", want, err)
				}
				body, _ := io.ReadAll(resp.Body)
				if string(body) != want {
					t.Fatalf("pipelined: %q, want %q", body, want)
				}
			}

			// Not relayed: the connection ends without an answer.
			for _, req := range []string{
				"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
				"GET /close HTTP/1.1\r\nHost: x\r\n\r\n",
				"GET / HTTP/1.0\r\n\r\n",
			} {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				deadline(t, c)
				io.WriteString(c, req)
				bs, err := io.ReadAll(c)
				c.Close()
				if err != nil && !isReset(err) {
					t.Fatalf("%q: %v", req, err)
				}
				if strings.Contains(string(bs), "until") || strings.Contains(string(bs), "HTTP/1.1 2") {
					t.Errorf("%q was relayed: %q", req, bs)
				}
			}
		})
	}
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// TestLoadServices reads a configuration as bench/peers writes it for
// postern, and refuses what the relay cannot serve.
func TestLoadServices(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "postern.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	svcs, err := loadServices(write(`services:
  imap: { listen: "127.0.0.1:2000", backend: "127.0.0.1:3000", backend_proxy: v2, plaintext_login: "127.0.0.0/8" }
  web: { listen: "127.0.0.1:2001", backend: "http://127.0.0.1:3001" }
store: { path: x }
`))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]service{}
	for _, s := range svcs {
		got[s.name] = s
	}
	if s := got["imap"]; s.http || s.listen.Port() != 2000 || s.backend.Port() != 3000 {
		t.Errorf("imap: %+v", s)
	}
	if s := got["web"]; !s.http || s.listen.Port() != 2001 || s.backend.Port() != 3001 {
		t.Errorf("web: %+v", s)
	}
	for conf, want := range map[string]string{
		"services: {}\n": "no services",
		"services:\n  imap: { listen: \"127.0.0.1:1\", backend: \"127.0.0.1:2\" }\n": "backend_proxy",
		"services:\n  imap: { listen: \"here\", backend: \"127.0.0.1:2\" }\n":        "listen",
		"services: [\n": "yaml",
	} {
		if _, err := loadServices(write(conf)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one about %s", conf, err, want)
		}
	}
}

// TestChunks: a chunked body's end is found wherever the reads split it,
// extensions and trailers included, and broken framing is refused.
func TestChunks(t *testing.T) {
	for _, tc := range []struct{ body, after string }{
		{"0\r\n\r\n", ""},
		{"5\r\npiece\r\n0\r\n\r\n", "HTTP/1.1 200 OK\r\n"},
		{"A;name=value\r\n0123456789\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nExpires: never\r\nX: y\r\n\r\n", ""},
		{"00003\r\nabc\r\n0;last\r\n\r\n", "x"},
	} {
		all := tc.body + tc.after
		for split := 0; split <= len(all); split++ {
			var c chunks
			total, done := 0, false
			for _, part := range []string{all[:split], all[split:]} {
				if done {
					break
				}
				n, d, err := c.scan([]byte(part))
				if err != nil {
					t.Fatalf("%q split at %d: %v", all, split, err)
				}
				total, done = total+n, d
			}
			if !done || total != len(tc.body) {
				t.Errorf("%q split at %d: ended %v after %d bytes, want after %d", all, split, done, total, len(tc.body))
			}
		}
	}
	for _, bad := range []string{
		"\r\n", "g\r\n", "5\npiece", "5\r\npieceX\r\n", "0\r\nbad\nline\r\n\r\n", "12345678901234567\r\n",
	} {
		var c chunks
		if _, _, err := c.scan([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
