package webproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/service"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/snapshot"
)

// seen is one request as the backend received it.
type seen struct {
	Method, URI, Host string
	Header            http.Header
	Body              string
	Remote            string
}

// testBackend is an in-process webmail stand-in: a static page, an admin
// area, a login form (alice / right-password; 401 otherwise), a streaming
// endpoint and a WebSocket echo.
type testBackend struct {
	url    *url.URL
	srv    *http.Server
	mu     sync.Mutex
	reqs   []seen
	stream chan string     // /stream writes each string received, until closed
	logins gwtest.Arrivals // POSTs that reached /login
}

func startBackend(t *testing.T) *testBackend {
	t.Helper()
	b := &testBackend{stream: make(chan string)}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && (r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/index.php")) {
			// Roundcube's routing: a login is _action=login from the
			// query or the body, on / or /index.php.
			r.ParseMultipartForm(1 << 20)
			if r.FormValue("_action") == "login" {
				if r.PostFormValue("_user") == "alice@example.com" && r.PostFormValue("_pass") == "right-password" {
					http.Redirect(w, r, "/?_task=mail", http.StatusFound)
					return
				}
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, "login failed")
				return
			}
		}
		io.WriteString(w, "hello from the backend")
	})
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "admin area")
	})
	login := func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			io.WriteString(w, "<form method=post>")
			return
		}
		b.logins.Arrive()
		r.ParseMultipartForm(1 << 20)
		if r.FormValue("user") == "alice@example.com" && r.FormValue("pass") == "right-password" ||
			r.FormValue("user") == "boss@example.com" && r.FormValue("pass") == "boss-password" {
			http.Redirect(w, r, "/inbox", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, "wrong user or password")
	}
	mux.HandleFunc("/login", login)
	mux.HandleFunc("/redir-login", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		if r.FormValue("pass") == "right-password" {
			http.Redirect(w, r, "/inbox", http.StatusFound)
			return
		}
		http.Redirect(w, r, "http://"+r.Host+"/login?error=1", http.StatusFound)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		// A long poll: the answer comes after ?ms= milliseconds.
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		for s := range b.stream {
			io.WriteString(w, s)
			http.NewResponseController(w).Flush()
		}
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(c, brw) // echo
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.url = &url.URL{Scheme: "http", Host: ln.Addr().String()}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		b.mu.Lock()
		b.reqs = append(b.reqs, seen{Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: string(body), Remote: r.RemoteAddr})
		b.mu.Unlock()
		mux.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); b.srv.Serve(ln) }()
	t.Cleanup(func() { b.srv.Close(); <-done })
	return b
}

func (b *testBackend) requests() []seen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seen(nil), b.reqs...)
}

// sawPath reports whether the backend received a request whose URI
// contains s (case-insensitively).
func (b *testBackend) sawPath(s string) bool {
	for _, r := range b.requests() {
		if strings.Contains(strings.ToLower(r.URI), strings.ToLower(s)) {
			return true
		}
	}
	return false
}

const baseCfg = `patterns:
  Admins: "127.0.0.2"
  Boss: "127.0.0.3"
services:
  web:
    listen: ":443"
    backend: "http://127.0.0.1:1"
    deny: "127.0.0.66"
    paths:
      - { prefix: /admin, grant: "[Admins]" }
    login_forms:
      - { path: /login, user_field: user, password_field: pass, fail_status: 401 }
      - { path: /redir-login, user_field: user, fail_redirect: "/login?error" }
trusted_upstreams: "127.0.0.5"
login_restrictions:
  - "boss@example.com=[Boss]"
intrusion_prevention:
  web: { failed_logins: 3, connections_per_minute: 200 }
`

type harness struct {
	t    *testing.T
	be   *testBackend
	eng  *guard.Engine
	p    *Proxy
	ln   *netlisten.Listener
	addr string
	tls  bool
	stop func()
}

type harnessOpts struct {
	cfg      string
	tls      bool
	maxPer   int
	mutate   func(*Config)
	backends []*url.URL
	logw     io.Writer // the gateway's log (text, info); nil: none
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	if o.cfg == "" {
		o.cfg = baseCfg
	}
	h := &harness{t: t, be: startBackend(t), tls: o.tls}
	dir := t.TempDir()
	path := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(path, []byte(o.cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.eng, err = guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.eng.Close() })
	svc := snap.Config.Services[service.Web]
	var serverTLS *tls.Config
	if o.tls {
		serverTLS = selfSigned(t)
	}
	cfg, err := FromConfig(svc, serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Backends = []*url.URL{h.be.url}
	if o.backends != nil {
		cfg.Backends = o.backends
	}
	cfg.Trusted = snap.Policy.TrustedUpstream
	cfg.HeaderTimeout = 2 * time.Second
	cfg.RefusalTime = -1 // refusals answer at once until a failure is timed (refusal_test.go sets it)
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	var log *slog.Logger
	if o.logw != nil {
		log = slog.New(slog.NewTextHandler(o.logw, nil))
	}
	h.p, err = New(cfg, h.eng, func() *policy.Policy { return snap.Policy }, log)
	if err != nil {
		t.Fatal(err)
	}
	h.ln, err = netlisten.Listen(context.Background(), netlisten.Config{
		Listen: "127.0.0.1:0", Trusted: snap.Policy.TrustedUpstream, MaxPerAddr: o.maxPer,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.ln.SetOverLimit(func(c *netlisten.Conn, reason string) {
		io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	})
	h.addr = h.ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.p.Serve(ctx, h.ln.NetListener(), time.Second) }()
	var once sync.Once
	h.stop = func() { once.Do(func() { cancel(); <-done; h.ln.Shutdown(context.Background()) }) }
	t.Cleanup(h.stop)
	return h
}

// client returns an HTTP client whose connections come from src (HTTP/2
// when the harness has TLS).
func (h *harness) client(src string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	tr := &http.Transport{DialContext: d.DialContext, ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableCompression: true}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (h *harness) url(path string) string {
	if h.tls {
		return "https://" + h.addr + path
	}
	return "http://" + h.addr + path
}

// get does a GET from src and returns status and body.
func (h *harness) get(src, path string) (int, string) {
	h.t.Helper()
	resp, err := h.client(src).Get(h.url(path))
	if err != nil {
		h.t.Fatalf("GET %s from %s: %v", path, src, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// postForm posts a login form from src on a fresh connection.
func (h *harness) postForm(src, path string, form url.Values) *http.Response {
	h.t.Helper()
	resp, err := h.client(src).PostForm(h.url(path), form)
	if err != nil {
		h.t.Fatalf("POST %s from %s: %v", path, src, err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp
}

// raw sends text on a new plain connection from src and returns everything
// the gateway answers until it closes the connection or 5 s pass.
func (h *harness) raw(src, text string) string {
	h.t.Helper()
	c := h.dial(src)
	defer c.Close()
	if _, err := io.WriteString(c, text); err != nil {
		h.t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

func (h *harness) dial(src string) net.Conn {
	h.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// statusOf returns the status code of the first response in raw text.
func statusOf(raw string) int {
	var code int
	line, _, _ := strings.Cut(raw, "\r\n")
	fmt.Sscanf(line, "HTTP/1.1 %d", &code)
	return code
}

// statuses returns the status codes of every response in raw text.
func statuses(raw string) []int {
	var out []int
	r := bufio.NewReader(strings.NewReader(raw))
	for {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return out
		}
		io.ReadAll(resp.Body)
		out = append(out, resp.StatusCode)
	}
}

// blocked reports whether addr has an active block, and its reason letter.
func (h *harness) blocked(addr string) (bool, string) {
	b, ok := h.eng.BlockOf(netip.MustParseAddr(addr))
	if !ok {
		return false, ""
	}
	return true, b.Reason.String()
}
