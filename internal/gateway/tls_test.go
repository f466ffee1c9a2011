package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/demo"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/tlsconf"
)

// tlsDialer opens one session to a TLS service as a client does and
// reports whether the handshake resumed a session. Each reads one answer
// after the handshake, so a TLS 1.3 ticket (sent after the handshake)
// reaches the client's cache.
type tlsDialer func(t *testing.T, addr string, cfg *tls.Config) bool

func implicitTLSGreeting(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if l := readLine(t, bufio.NewReader(c)); !strings.HasPrefix(l, "* OK") && !strings.HasPrefix(l, "220") {
		t.Fatalf("greeting %q", l)
	}
	return c.ConnectionState().DidResume
}

// startTLS speaks the protocol's upgrade: cmd is sent after the greeting,
// the line starting with ok ends its answer; after the handshake probe is
// sent and its answer read.
func startTLS(cmd, ok, probe string) tlsDialer {
	return func(t *testing.T, addr string, cfg *tls.Config) bool {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		readLine(t, r) // greeting
		if strings.HasPrefix(cmd, "EHLO") {
			fmt.Fprintf(c, "EHLO client.example\r\n")
			for l := readLine(t, r); !strings.HasPrefix(l, "250 "); l = readLine(t, r) {
			}
			cmd = "STARTTLS"
		}
		fmt.Fprintf(c, "%s\r\n", cmd)
		for l := readLine(t, r); !strings.HasPrefix(l, ok); l = readLine(t, r) {
			if strings.HasPrefix(l, "a NO") || strings.HasPrefix(l, "a BAD") || strings.HasPrefix(l, "5") || strings.HasPrefix(l, "4") {
				t.Fatalf("%s refused: %q", cmd, l)
			}
		}
		if r.Buffered() != 0 {
			t.Fatal("bytes after the STARTTLS answer")
		}
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			t.Fatalf("STARTTLS handshake: %v", err)
		}
		fmt.Fprintf(tc, "%s\r\n", probe)
		if l := readLine(t, bufio.NewReader(tc)); l == "" {
			t.Fatal("no answer after STARTTLS")
		}
		return tc.ConnectionState().DidResume
	}
}

func httpsGet(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	if l := readLine(t, bufio.NewReader(c)); !strings.HasPrefix(l, "HTTP/1.1 200") {
		t.Fatalf("status line %q", l)
	}
	return c.ConnectionState().DidResume
}

// Session resumption on every listener where postern terminates TLS, with
// TLS 1.3 and TLS 1.2, before and after a reload: the configs a reload
// builds seal tickets with the keys the gateway keeps per service.
func TestTLSResumptionAcrossReload(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	be, err := demo.Start(ctx, demo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "webmail") }))
	t.Cleanup(web.Close)

	dir := t.TempDir()
	cert, key, err := tlsconf.SelfSigned(dir, []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	var confWith func(level, tlsLine string) string
	tlsLine := fmt.Sprintf("tls: { cert: %q, key: %q }", cert, key)
	cfg := filepath.Join(dir, "postern.yaml")
	conf := func(level string) string {
		return confWith(level, tlsLine)
	}
	confWith = func(level, tlsLine string) string {
		return fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
log: { level: %s }
services:
  imaps: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, %s }
  imap: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, %s }
  smtps: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, %s }
  smtp: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, %s }
  web: { listen: "127.0.0.1:0", backend: %q, %s }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), level,
			be.IMAP(), tlsLine, be.IMAP(), tlsLine, be.SMTP(), tlsLine, be.SMTP(), tlsLine, web.URL, tlsLine)
	}
	writeConfig(t, cfg, conf("info"))
	var logs syncBuffer
	g, reload := runGateway(t, cfg, Options{Log: &logs, Drain: time.Second})

	services := []struct {
		svc  service.Service
		dial tlsDialer
	}{
		{service.IMAPS, implicitTLSGreeting},
		{service.SMTPS, implicitTLSGreeting},
		{service.IMAP, startTLS("a STARTTLS", "a OK", "b NOOP")},
		{service.SMTP, startTLS("EHLO", "220", "NOOP")},
		{service.Web, httpsGet},
	}
	versions := []uint16{tls.VersionTLS13, tls.VersionTLS12}
	clientCfg := func(v uint16) *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: v, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	}
	// One client (session cache) per service and version.
	clients := map[string]*tls.Config{}
	for _, s := range services {
		for _, v := range versions {
			name := fmt.Sprintf("%s/%s", s.svc, tls.VersionName(v))
			c := clientCfg(v)
			clients[name] = c
			if s.dial(t, g.Addr(s.svc).String(), c) {
				t.Errorf("%s: the first handshake resumed", name)
			}
			if !s.dial(t, g.Addr(s.svc).String(), c) {
				t.Errorf("%s: the second handshake did not resume", name)
			}
		}
	}

	writeConfig(t, cfg, conf("debug"))
	reload <- struct{}{}
	logs.waitLog(t, "configuration reloaded", 1)

	for _, s := range services {
		for _, v := range versions {
			name := fmt.Sprintf("%s/%s", s.svc, tls.VersionName(v))
			if !s.dial(t, g.Addr(s.svc).String(), clients[name]) {
				t.Errorf("%s: a ticket issued before the reload did not resume after it", name)
			}
		}
	}
	// The same pair under other file names: every service loads it anew
	// (a new certificate source, a new config on the implicit-TLS
	// listeners too); sessions still resume.
	dir2 := t.TempDir()
	cert2, key2 := filepath.Join(dir2, "c.pem"), filepath.Join(dir2, "k.pem")
	for _, f := range [][2]string{{cert, cert2}, {key, key2}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(t, cfg, confWith("info", fmt.Sprintf("tls: { cert: %q, key: %q }", cert2, key2)))
	reload <- struct{}{}
	logs.waitLog(t, "configuration reloaded", 2)
	for _, s := range services {
		for _, v := range versions {
			name := fmt.Sprintf("%s/%s", s.svc, tls.VersionName(v))
			if !s.dial(t, g.Addr(s.svc).String(), clients[name]) {
				t.Errorf("%s: no resumption after the certificate files changed names", name)
			}
		}
	}

	// A ticket of one service does not resume on another.
	if implicitTLSGreeting(t, g.Addr(service.SMTPS).String(), clients["imaps/TLS 1.3"]) {
		t.Error("an IMAPS ticket resumed on SMTPS")
	}
}
