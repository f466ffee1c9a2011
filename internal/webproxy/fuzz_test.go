package webproxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// recordingTransport stands in for the backend: it records each request
// postern forwards and answers 200.
type recordingTransport struct {
	mu       sync.Mutex
	last     *http.Request
	lastBody []byte
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body.Close()
		if err != nil {
			return nil, err // as a transport whose body read failed
		}
	}
	rt.mu.Lock()
	rt.last, rt.lastBody = r, body
	rt.mu.Unlock()
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r, ProtoMajor: 1, ProtoMinor: 1}, nil
}

// FuzzServeHTTP: whatever request a client sends, a request that reaches
// the backend from a non-admin address never names the /admin area — not
// as postern cleans the path, nor as a backend decoding it once would —,
// a login form (a POST) that reaches it names the account restricted to
// another address, as a Go backend (the demo webmail) reads the form, only
// with a decoy password in place of the client's, and
// the handler never panics.
func FuzzServeHTTP(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /%61dmin/ HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET http://x//admin HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 22\r\n\r\nuser=boss@example.com&",
		"POST /login?user=boss@example.com HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\n\r\nuser=a&user=b",
		"GET /x/..%2fadmin HTTP/1.1\r\nHost: x\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add(s)
	}
	cfg := strings.Replace(baseCfg, "connections_per_minute: 200", "connections_per_minute: 0", 1)
	cfg = strings.Replace(cfg, "failed_logins: 3", "failed_logins: 0", 1)
	dir := f.TempDir()
	p := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		f.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), p, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	eng, err := guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { eng.Close() })
	wcfg, err := FromConfig(snap.Config.Services[service.Web], nil)
	if err != nil {
		f.Fatal(err)
	}
	// The direct path (body-less requests) reaches this loopback backend,
	// which records what it gets as rt does for the ReverseProxy path.
	rt := &recordingTransport{}
	wcfg.Backends = []*url.URL{{Scheme: "http", Host: recordingBackend(f, rt)}}
	wcfg.RefusalTime = -1 // no wait for refusals: the backend never fails a login here
	px, err := New(wcfg, eng, func() *policy.Policy { return snap.Policy }, nil)
	if err != nil {
		f.Fatal(err)
	}
	px.rp.Transport = rt
	if px.dc != nil {
		f.Cleanup(px.dc.closeIdle) // before the backend's cleanup waits for its connections
	}
	// Both paths record: a GET (direct path where there is one) and a
	// POST with a body (ReverseProxy path).
	for _, probe := range []*http.Request{httptest.NewRequest("GET", "/probe", nil),
		httptest.NewRequest("POST", "/probe", strings.NewReader("x=1"))} {
		rt.mu.Lock()
		rt.last = nil
		rt.mu.Unlock()
		px.ServeHTTP(httptest.NewRecorder(), probe)
		rt.mu.Lock()
		got := rt.last
		rt.mu.Unlock()
		if got == nil || got.URL.Path != "/probe" {
			f.Fatalf("%s /probe did not reach the recording backend", probe.Method)
		}
	}
	f.Fuzz(func(t *testing.T, raw string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http's server answers 400 before any handler
		}
		req.RemoteAddr = "127.0.0.1:40000"
		rt.mu.Lock()
		rt.last = nil
		rt.mu.Unlock()
		px.ServeHTTP(httptest.NewRecorder(), req)
		rt.mu.Lock()
		out, body := rt.last, rt.lastBody
		rt.mu.Unlock()
		if out == nil {
			return
		}
		if strings.EqualFold(out.Method, http.MethodPost) && policy.CleanPath(out.URL.EscapedPath()) == "/login" {
			back := out.Clone(context.Background())
			back.Body = io.NopCloser(strings.NewReader(string(body)))
			back.ParseMultipartForm(1 << 20)
			for _, u := range back.Form["user"] {
				if strings.EqualFold(strings.TrimSpace(u), "boss@example.com") &&
					(len(back.Form["pass"]) != 1 || !decoyRE.MatchString(back.Form["pass"][0]) || len(back.PostForm["pass"]) != 1) {
					t.Fatalf("request %q reached the backend with the restricted account %q and not only a decoy password", raw, u)
				}
			}
		}
		for _, view := range []string{policy.CleanPath(out.URL.EscapedPath()), onceDecoded(out.URL.EscapedPath())} {
			if v := strings.ToLower(view); v == "/admin" || strings.HasPrefix(v, "/admin") {
				t.Fatalf("request %q reached the backend as %q (seen as %q)", raw, out.URL.String(), view)
			}
		}
		if got := out.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Fatalf("X-Forwarded-For %q", got)
		}
	})
}

// onceDecoded is the path as a backend that decodes once and resolves dot
// segments sees it.
func onceDecoded(p string) string {
	d, err := url.PathUnescape(p)
	if err != nil {
		return ""
	}
	return path.Clean("/" + strings.ReplaceAll(d, "\\", "/"))
}

// recordingBackend serves HTTP/1.1 on loopback until the test ends,
// recording each request into rt and answering 200.
func recordingBackend(f *testing.F, rt *recordingTransport) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	var wg sync.WaitGroup
	f.Cleanup(func() { ln.Close(); wg.Wait() })
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
				br := bufio.NewReader(c)
				for {
					c.SetDeadline(time.Now().Add(time.Minute))
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
					if err != nil {
						return
					}
					rt.mu.Lock()
					rt.last, rt.lastBody = r, body
					rt.mu.Unlock()
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
