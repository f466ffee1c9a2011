package admin_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/admin/admintest"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

const testToken = "0123456789abcdef0123456789abcdef-test"

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// sample is a block table with every kind of field: addresses and
// prefixes of both families, never-expiring and expired blocks, awkward
// text for CSV, nanoseconds and a non-UTC zone.
func sample() []store.Block {
	kl := time.FixedZone("MYT", 8*3600)
	return []store.Block{
		{Prefix: pfx("203.0.113.7/32"), Reason: reason.Login, Service: "imap", Detail: "alice@example.com",
			FirstSeen: t0.Add(-2 * time.Hour), LastSeen: t0.Add(-time.Hour), Hits: 5, Expires: t0.Add(3 * time.Hour), Node: "gw1", By: "engine"},
		{Prefix: pfx("2001:db8:1::/64"), Reason: reason.UnknownRecipients, Service: "smtp", Detail: "bob, \"carol\"\nand =dave",
			FirstSeen: t0.Add(-48 * time.Hour).In(kl), LastSeen: t0.Add(-30*time.Minute + 123456789).In(kl), Hits: 12,
			Expires: t0.Add(-time.Hour), Node: "gw2", By: "engine", Level: 2},
		{Prefix: pfx("198.51.100.0/24"), Reason: reason.Manual, Comment: "office scanner, forever",
			FirstSeen: t0.Add(-10 * time.Minute), LastSeen: t0.Add(-10 * time.Minute), Node: "gw1", By: "admin:cli"},
		{Prefix: pfx("192.0.2.1/32"), Reason: reason.DNSBL, Service: "smtp", Detail: "zen.example.org",
			FirstSeen: t0.Add(-6 * time.Hour), LastSeen: t0.Add(-5 * time.Hour), Hits: 1, Expires: t0.Add(-2 * time.Hour), Node: "gw1", By: "engine"},
		{Prefix: pfx("2001:db8::99/128"), Reason: reason.Login, Service: "pop3", Detail: "ünïcödé@example.com",
			FirstSeen: t0.Add(-3 * time.Hour), LastSeen: t0.Add(-3 * time.Hour), Hits: 7, Expires: t0.Add(time.Hour), Node: "gw3", By: "engine", Level: 1},
	}
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fixture is a server with a fake engine, running on a real listener.
type fixture struct {
	eng    *admintest.Engine
	srv    *admin.Server
	listen string // for NewClient
	path   string // unix socket path, "" for TCP
	log    *syncBuffer
	c      *admin.Client
	stop   func() // idempotent; called at cleanup
}

type options struct {
	explain admin.Explainer
	grant   func(netip.Addr) bool
	token   string
}

// shortDir returns a temporary directory short enough for socket paths.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "pa")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func startUnix(t *testing.T, o options) *fixture {
	t.Helper()
	return start(t, "unix:"+filepath.Join(shortDir(t), "a.sock"), o)
}

func startTCP(t *testing.T, o options) *fixture {
	t.Helper()
	return start(t, "tcp:127.0.0.1:0", o)
}

func start(t *testing.T, listen string, o options) *fixture {
	t.Helper()
	if o.token == "" {
		o.token = testToken
	}
	f := &fixture{eng: admintest.New(t0), log: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.srv = admin.NewServer(f.eng, o.explain, o.token, log, o.grant)
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := f.srv.Listen(ctx, listen)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	f.listen = listen
	if strings.HasPrefix(listen, "unix:") {
		f.path = strings.TrimPrefix(listen, "unix:")
	} else {
		f.listen = "tcp:" + ln.Addr().String()
	}
	done := make(chan error, 1)
	go func() { done <- f.srv.ServeListener(ctx, ln) }()
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			f.c.CloseIdleConnections()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("ServeListener: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("ServeListener did not return after cancel")
			}
		})
	}
	f.c = admin.NewClient(f.listen, testToken)
	t.Cleanup(f.stop)
	return f
}

// raw sends one request with a plain HTTP client and returns the status,
// the header and the body.
func (f *fixture) raw(t *testing.T, method, target, token string, body io.Reader, ctype string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return f.rawReq(t, req)
}

// rawReq sends req, whose URL is a path and query, to the server.
func (f *fixture) rawReq(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	network, addr := "unix", f.path
	if f.path == "" {
		network, addr = "tcp", strings.TrimPrefix(f.listen, "tcp:")
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	req.URL.Scheme, req.URL.Host, req.Host = "http", "postern", "postern"
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// do is raw with the right token.
func (f *fixture) do(t *testing.T, method, target string, body string, ctype string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	code, _, b := f.raw(t, method, target, testToken, r, ctype)
	return code, b
}

// wantStatus checks an answer's status and that the body holds each of
// the wanted substrings.
func wantStatus(t *testing.T, what string, code int, body string, want int, subs ...string) {
	t.Helper()
	if code != want {
		t.Errorf("%s: status %d, want %d; body %s", what, code, want, body)
		return
	}
	for _, s := range subs {
		if !strings.Contains(body, s) {
			t.Errorf("%s: body %s does not contain %q", what, body, s)
		}
	}
}

func statusOf(err error) int {
	if ae, ok := err.(*admin.APIError); ok {
		return ae.Status
	}
	return 0
}

// osUser is the actor the API records for this process over the unix
// socket: its user's name from the peer credentials.
func osUser(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil || u.Username == "" {
		return "uid " + strconv.Itoa(os.Getuid())
	}
	return u.Username
}
