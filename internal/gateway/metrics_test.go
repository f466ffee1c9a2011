package gateway

import (
	"bufio"
	"context"
	"errors"
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

	dto "github.com/prometheus/client_model/go"

	"github.com/postern/postern/internal/demo"
	"github.com/postern/postern/internal/metrics"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/smtpproxy"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/spamscan"
	"github.com/postern/postern/internal/tlsconf"
)

// metricsGateway runs a gateway with the metrics listener in front of the
// demo's IMAP and SMTP backends. The metrics grant is 127.0.0.1 only;
// clients come from other 127.x addresses.
func metricsGateway(t *testing.T, extra string, imapExtra ...string) (*Gateway, string, *syncBuffer, chan struct{}, context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	be, err := demo.Start(ctx, demo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
metrics: { listen: "127.0.0.1:0", grant: "127.0.0.1" }
local_domains: "example.com"
login_restrictions:
  - "bob@example.com=127.0.0.1"
services:
  imap: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, plaintext_login: "127.0.0.0/8"%s }
  smtp: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2 }
intrusion_prevention:
  block_minutes: 10
  refuse_blocked: true
  cross_session: true
  imap_pop3: { failed_logins: 3 }
%s`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), be.IMAP(), strings.Join(imapExtra, ""), be.SMTP(), extra))
	logs := new(syncBuffer)
	g, err := Start(ctx, cfg, Options{Log: logs, Drain: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reload := make(chan struct{})
	done := make(chan error, 1)  // Run's result, for the test
	ended := make(chan struct{}) // closed when Run has returned
	go func() {
		defer close(ended)
		done <- g.Run(ctx, reload)
	}()
	t.Cleanup(func() {
		cancel()
		<-ended
	})
	return g, cfg, logs, reload, cancel, done
}

// dialFrom connects to addr from a 127.x source address.
func dialFrom(t *testing.T, src string, addr net.Addr) (net.Conn, *bufio.Reader) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	l, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// imapLogin logs in from src and returns the tagged answer.
func imapLogin(t *testing.T, g *Gateway, src, user, pass string) string {
	t.Helper()
	c, r := dialFrom(t, src, g.Addr(service.IMAP))
	if l := readLine(t, r); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q", l)
	}
	fmt.Fprintf(c, "a LOGIN %s %s\r\n", user, pass)
	for {
		l := readLine(t, r)
		if strings.HasPrefix(l, "a ") {
			fmt.Fprintf(c, "b LOGOUT\r\n")
			io.Copy(io.Discard, r)
			c.Close()
			return l
		}
	}
}

// metricValue reads one sample from the gateway's registry: a counter's
// or gauge's value, a histogram's count; -1 when there is none.
func metricValue(t *testing.T, g *Gateway, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.obs.m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelOf(m, labels[i]) != labels[i+1] {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// waitMetric polls until the sample reaches want.
func waitMetric(t *testing.T, g *Gateway, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := metricValue(t, g, name, labels...)
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func httpGetFrom(t *testing.T, src, url string) (int, string) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, src, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Real sessions through the gateway move the metrics: IMAP logins by
// result (ok, failed, restricted by the login IP restriction), a block
// made by failed logins and the connection it then refuses, backend dials,
// the bytes a logged-in session relayed, an SMTP message relayed and its
// size; a scrape over HTTP shows them; no label names a client address.
func TestMetricsFromRealSessions(t *testing.T) {
	g, _, _, _, _, _ := metricsGateway(t, "")
	base := "http://" + g.MetricsAddr().String()
	waitReady(t, base)

	users := demo.Users()
	alice, bob := users[0], users[1]
	if l := imapLogin(t, g, "127.0.0.2", alice.Name, "wrong-password"); !strings.HasPrefix(l, "a NO") {
		t.Fatalf("wrong password: %q", l)
	}
	waitMetric(t, g, 1, "postern_logins_total", "service", "imap", "result", "failed")
	if l := imapLogin(t, g, "127.0.0.2", alice.Name, alice.Password); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("login: %q", l)
	}
	waitMetric(t, g, 1, "postern_logins_total", "service", "imap", "result", "ok")
	// The logged-in session's bytes are counted when it ends.
	waitMetric(t, g, 1, "postern_relayed_bytes_total", "service", "imap", "direction", "to_client")
	waitMetric(t, g, 1, "postern_relayed_bytes_total", "service", "imap", "direction", "to_backend")
	waitMetric(t, g, 2, "postern_backend_dial_duration_seconds", "service", "imap")

	// bob may log in from 127.0.0.1 only: from 127.0.0.4 it is restricted.
	if l := imapLogin(t, g, "127.0.0.4", bob.Name, bob.Password); !strings.HasPrefix(l, "a NO") {
		t.Fatalf("restricted login: %q", l)
	}
	waitMetric(t, g, 1, "postern_logins_total", "service", "imap", "result", "restricted")
	if v := metricValue(t, g, "postern_logins_total", "service", "imap", "result", "failed"); v != 1 {
		t.Errorf("a restricted login counted as failed too: failed = %v", v)
	}

	// Three failures from 127.0.0.3 block it (L); its next connection is
	// refused.
	for i := range 3 { // different passwords: a retry of one counts once
		imapLogin(t, g, "127.0.0.3", alice.Name, fmt.Sprintf("guess-%d", i))
	}
	waitMetric(t, g, 1, "postern_blocks_total", "reason", "L")
	waitMetric(t, g, 3, "postern_trigger_events_total", "group", "imap_pop3", "reason", "L")
	if v := metricValue(t, g, "postern_blocks_active", "reason", "L"); v != 1 {
		t.Errorf("postern_blocks_active{reason=L} = %v, want 1", v)
	}
	c, r := dialFrom(t, "127.0.0.3", g.Addr(service.IMAP))
	io.Copy(io.Discard, r)
	c.Close()
	waitMetric(t, g, 1, "postern_connections_refused_total", "service", "imap", "why", "block")
	waitMetric(t, g, 1, "postern_store_commit_duration_seconds")
	if v := metricValue(t, g, "postern_connections_accepted_total", "service", "imap"); v < 6 {
		t.Errorf("accepted imap connections = %v, want ≥ 6", v)
	}

	// An SMTP message relayed.
	sc, sr := dialFrom(t, "127.0.0.5", g.Addr(service.SMTP))
	smtpStep := func(cmd, want string) {
		t.Helper()
		if cmd != "" {
			fmt.Fprintf(sc, "%s\r\n", cmd)
		}
		for {
			l := readLine(t, sr)
			if len(l) < 4 || l[3] != '-' {
				if !strings.HasPrefix(l, want) {
					t.Fatalf("%q: got %q, want %s", cmd, l, want)
				}
				return
			}
		}
	}
	smtpStep("", "220")
	smtpStep("EHLO client.example.org", "250")
	smtpStep("MAIL FROM:<someone@example.org>", "250")
	smtpStep("RCPT TO:<"+alice.Name+">", "250")
	smtpStep("DATA", "354")
	smtpStep("Subject: hello\r\n\r\nHello Alice.\r\n.", "250")
	smtpStep("QUIT", "221")
	waitMetric(t, g, 1, "postern_smtp_messages_total", "service", "smtp", "result", "relayed")
	waitMetric(t, g, 1, "postern_smtp_message_size_bytes", "service", "smtp")
	waitMetric(t, g, 1, "postern_backend_dial_duration_seconds", "service", "smtp")
	// its bytes, when the backend connection closes: at least the
	// commands and the message one way, the replies the other
	msg := len("EHLO client.example.org\r\nMAIL FROM:<someone@example.org>\r\nRCPT TO:<" + alice.Name + ">\r\nDATA\r\nSubject: hello\r\n\r\nHello Alice.\r\n.\r\n")
	waitMetric(t, g, float64(msg), "postern_relayed_bytes_total", "service", "smtp", "direction", "to_backend")
	waitMetric(t, g, float64(len("250 \r\n250 \r\n250 \r\n354 \r\n250 \r\n")), "postern_relayed_bytes_total", "service", "smtp", "direction", "to_client")

	// The scrape over HTTP, from the granted address.
	code, body := httpGetFrom(t, "127.0.0.1", base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`postern_logins_total{result="failed",service="imap"} 4`,
		`postern_blocks_active{reason="L"} 1`,
		`postern_sessions_active{service="imap"} `,
		`postern_config_last_reload_success_timestamp_seconds `,
		"go_goroutines ", "process_open_fds ",
		"go_sched_gomaxprocs_threads ", // the processors postern runs on (processors: adaptive)
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	checkLabels(t, g, "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", alice.Name, bob.Name)
}

// allowedLabels are the only label names postern's metrics use.
var allowedLabels = map[string]bool{
	"service": true, "group": true, "reason": true, "result": true, "why": true,
	"direction": true, "backend": true, "zone": true, "database": true, "list": true,
}

// checkLabels fails if a postern_ metric has a label outside the bounded
// set, or a label value that is a client address or an account.
func checkLabels(t *testing.T, g *Gateway, forbidden ...string) {
	t.Helper()
	mfs, err := g.obs.m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "postern_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			series++
			for _, l := range m.GetLabel() {
				if !allowedLabels[l.GetName()] {
					t.Errorf("%s has label %q, not a bounded one", mf.GetName(), l.GetName())
				}
				v := l.GetValue()
				for _, f := range forbidden {
					if strings.Contains(v, f) {
						t.Errorf("%s{%s=%q} names a client or an account", mf.GetName(), l.GetName(), v)
					}
				}
				if a, err := netip.ParseAddr(v); err == nil {
					t.Errorf("%s{%s=%q} is an address", mf.GetName(), l.GetName(), a)
				}
			}
		}
	}
	// Bounded: services × reasons × results, not clients.
	if series > 1000 {
		t.Errorf("%d postern_ series", series)
	}
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpGetFrom(t, "127.0.0.1", base+"/readyz")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %s", code, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// /healthz and /readyz answer the granted address; others get 403 from
// every path.
func TestMetricsHealthAndGrant(t *testing.T) {
	g, _, _, _, _, _ := metricsGateway(t, "")
	base := "http://" + g.MetricsAddr().String()
	waitReady(t, base)
	if code, body := httpGetFrom(t, "127.0.0.1", base+"/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := httpGetFrom(t, "127.0.0.1", base+"/readyz"); code != http.StatusOK || strings.TrimSpace(body) != "ready" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		code, body := httpGetFrom(t, "127.0.0.9", base+path)
		if code != http.StatusForbidden || strings.Contains(body, "postern_") {
			t.Errorf("%s from a non-granted address: %d %q", path, code, body)
		}
	}
}

// Before Run has put the front-ends in service the gateway is alive but
// not ready; a store that is closed makes it not ready.
func TestReadyzBeforeRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
metrics: { listen: "127.0.0.1:0" }
services:
  pop3: { listen: "127.0.0.1:0", backend: "127.0.0.1:1" }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token")))
	g, err := Start(ctx, cfg, Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	h := g.obs.m.Handler(metricsServerOptions(g))
	for _, c := range []struct {
		path string
		code int
	}{{"/healthz", 200}, {"/readyz", 503}} {
		rec := &recorder{header: http.Header{}}
		req, _ := http.NewRequest("GET", c.path, nil)
		req.RemoteAddr = "127.0.0.1:5555"
		h.ServeHTTP(rec, req)
		if rec.code != c.code {
			t.Errorf("%s before Run: %d, want %d (%s)", c.path, rec.code, c.code, rec.body.String())
		}
	}
	g.obs.serving.Store(true)
	if err := g.ready(); err != nil {
		t.Errorf("ready once serving: %v", err)
	}
	g.db.Close()
	if err := g.ready(); err == nil {
		t.Error("ready with the store closed")
	}
}

type recorder struct {
	header http.Header
	code   int
	body   strings.Builder
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return r.body.Write(p)
}
func (r *recorder) WriteHeader(code int) { r.code = code }

// Reloads are counted by result, and a good one sets the time of the last
// good reload.
func TestMetricsReloads(t *testing.T) {
	g, cfg, logs, reload, _, _ := metricsGateway(t, "")
	waitReady(t, "http://"+g.MetricsAddr().String())
	before := metricValue(t, g, "postern_config_last_reload_success_timestamp_seconds")
	if before <= 0 {
		t.Fatalf("no time of the last good load: %v", before)
	}
	reload <- struct{}{}
	logs.waitLog(t, "configuration reloaded", 1)
	waitMetric(t, g, 1, "postern_config_reloads_total", "result", "ok")
	if after := metricValue(t, g, "postern_config_last_reload_success_timestamp_seconds"); after < before {
		t.Errorf("last good reload went back: %v < %v", after, before)
	}
	writeConfig(t, cfg, "services: { nonsense\n")
	reload <- struct{}{}
	logs.waitLog(t, "configuration reload failed", 1)
	waitMetric(t, g, 1, "postern_config_reloads_total", "result", "failed")
	if v := metricValue(t, g, "postern_config_reloads_total", "result", "ok"); v != 1 {
		t.Errorf("ok reloads = %v after a failed one", v)
	}
}

// Without metrics.listen nothing is measured and nothing listens.
func TestMetricsOff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
services:
  pop3: { listen: "127.0.0.1:0", backend: "127.0.0.1:1" }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token")))
	g, err := Start(ctx, cfg, Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	if g.MetricsAddr() != nil || g.observer() != nil {
		t.Error("metrics on without metrics.listen")
	}
}

// The service manager hears READY when the gateway serves, RELOADING then
// READY around a reload (Type=notify-reload), and STOPPING at shutdown.
func TestServiceManagerNotifications(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	mgr, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram", Name: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "")
	next := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		mgr.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := mgr.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	g, _, logs, reload, cancel, done := metricsGateway(t, "")
	if m := next(); !strings.HasPrefix(m, "READY=1\n") || !strings.Contains(m, "STATUS=serving 2 services") {
		t.Fatalf("at start: %q", m)
	}
	reload <- struct{}{}
	if m := next(); !strings.HasPrefix(m, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("at reload: %q", m)
	}
	if m := next(); !strings.HasPrefix(m, "READY=1\n") {
		t.Fatalf("after reload: %q", m)
	}
	logs.waitLog(t, "configuration reloaded", 1)
	_ = g
	cancel()
	if m := next(); !strings.HasPrefix(m, "STOPPING=1\n") {
		t.Fatalf("at stop: %q", m)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// metrics.grant takes addresses and networks only: a host mask is refused
// at start and on a reload (the running grant stays).
func TestMetricsGrantNoHostMasks(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
metrics: { listen: "127.0.0.1:0", grant: "*.example.com" }
services:
  pop3: { listen: "127.0.0.1:0", backend: "127.0.0.1:1" }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token")))
	_, err := Start(ctx, cfg, Options{Log: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "metrics.grant takes addresses and networks") {
		t.Fatalf("Start: %v", err)
	}

	g, cfg2, logs, reload, _, _ := metricsGateway(t, "")
	waitReady(t, "http://"+g.MetricsAddr().String())
	body := strings.Replace(readFile(t, cfg2), `grant: "127.0.0.1"`, `grant: "*.example.com"`, 1)
	writeConfig(t, cfg2, body)
	reload <- struct{}{}
	logs.waitLog(t, "configuration reload failed", 1)
	if !strings.Contains(logs.String(), "metrics.grant takes addresses and networks") {
		t.Errorf("reload log: %s", logs.String())
	}
	if code, _ := httpGetFrom(t, "127.0.0.1", "http://"+g.MetricsAddr().String()+"/healthz"); code != http.StatusOK {
		t.Errorf("the running grant changed: %d", code)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A connection over max_connections_per_address is counted as refused
// (why="limit"), and a failed STARTTLS handshake as a TLS handshake
// failure of its service.
func TestMetricsLimitAndHandshake(t *testing.T) {
	dir := t.TempDir()
	cert, key, err := tlsconf.SelfSigned(dir, []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	g, _, _, _, _, _ := metricsGateway(t, "", fmt.Sprintf(", max_connections_per_address: 1, tls: { cert: %q, key: %q }", cert, key))
	waitReady(t, "http://"+g.MetricsAddr().String())

	first, r := dialFrom(t, "127.0.0.6", g.Addr(service.IMAP))
	if l := readLine(t, r); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q", l)
	}
	second, r2 := dialFrom(t, "127.0.0.6", g.Addr(service.IMAP))
	if l := readLine(t, r2); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("over the limit: %q", l)
	}
	second.Close()
	waitMetric(t, g, 1, "postern_connections_refused_total", "service", "imap", "why", "limit")

	// STARTTLS, then bytes that are no TLS handshake.
	fmt.Fprintf(first, "s STARTTLS\r\n")
	if l := readLine(t, r); !strings.HasPrefix(l, "s OK") {
		t.Fatalf("STARTTLS: %q", l)
	}
	fmt.Fprintf(first, "this is not a TLS ClientHello\r\n\r\n")
	io.Copy(io.Discard, first)
	waitMetric(t, g, 1, "postern_tls_handshake_failures_total", "service", "imap")
	if v := metricValue(t, g, "postern_certificate_expiry_timestamp_seconds", "service", "imap"); v < float64(time.Now().Unix()) {
		t.Errorf("certificate expiry %v", v)
	}
}

// The spam scanner and DNSBL wrappers count results and keep the answers.
func TestMeasuredScannerAndDNSBL(t *testing.T) {
	g := &Gateway{}
	g.obs.m = metrics.New()
	for _, c := range []struct {
		v      spamscan.Verdict
		err    error
		result string
	}{
		{spamscan.Verdict{Score: 1, Threshold: 15}, nil, "ham"},
		{spamscan.Verdict{Score: 20, Threshold: 15}, nil, "spam"},
		{spamscan.Verdict{Score: 3, Action: "reject"}, nil, "spam"},
		{spamscan.Verdict{}, io.ErrUnexpectedEOF, "error"},
	} {
		before := metricValue(t, g, "postern_spam_scans_total", "result", c.result)
		v, err := g.scanner(fakeScanner{c.v, c.err}).Scan(context.Background(), spamscan.Message{})
		if v.Score != c.v.Score || err != c.err {
			t.Errorf("the wrapper changed the answer: %v %v", v, err)
		}
		if after := metricValue(t, g, "postern_spam_scans_total", "result", c.result); after != max(before, 0)+1 {
			t.Errorf("%+v: %s %v → %v", c.v, c.result, before, after)
		}
	}
	var d smtpproxy.DNSBL = measuredDNSBL{fakeDNSBL{}, g.obs.m, func() []string { return []string{"list.dnswl.example"} }}
	if zone, _ := d.Listed(context.Background(), netip.MustParseAddr("192.0.2.1"), []string{"zen.example"}); zone != "zen.example" {
		t.Fatalf("zone %q", zone)
	}
	d.Listed(context.Background(), netip.MustParseAddr("192.0.2.2"), []string{"zen.example"})
	d.Listed(context.Background(), netip.MustParseAddr("192.0.2.2"), nil) // no zones: no lookup
	d.Listed(context.Background(), netip.MustParseAddr("192.0.2.1"), []string{"list.dnswl.example"})
	if v := metricValue(t, g, "postern_dnsbl_listings_total", "list", "block", "zone", "zen.example"); v != 1 {
		t.Errorf("listings %v", v)
	}
	if v := metricValue(t, g, "postern_dnsbl_lookups_total", "list", "block", "result", "clean"); v != 1 {
		t.Errorf("clean lookups %v", v)
	}
	if v := metricValue(t, g, "postern_dnsbl_listings_total", "list", "allow", "zone", "list.dnswl.example"); v != 1 {
		t.Errorf("whitelist listings %v", v)
	}
	if v := metricValue(t, g, "postern_dnsbl_lookup_duration_seconds"); v != 3 {
		t.Errorf("timed lookups %v", v)
	}
	if (&Gateway{}).dnsbl(nil) != nil {
		t.Error("a nil DNSBL became one")
	}
}

type fakeScanner struct {
	v   spamscan.Verdict
	err error
}

func (f fakeScanner) Scan(context.Context, spamscan.Message) (spamscan.Verdict, error) {
	return f.v, f.err
}
func (f fakeScanner) Name() string { return "fake" }

// fakeDNSBL lists 192.0.2.1 only.
type fakeDNSBL struct{}

func (fakeDNSBL) Listed(_ context.Context, a netip.Addr, zones []string) (string, string) {
	if a == netip.MustParseAddr("192.0.2.1") && len(zones) > 0 {
		return zones[0], "127.0.0.2"
	}
	return "", ""
}

// A reload abandoned at its deadline is counted as failed.
func TestMetricsReloadTimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
metrics: { listen: "127.0.0.1:0" }
services:
  pop3: { listen: "127.0.0.1:0", backend: "127.0.0.1:1" }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token")))
	var calls atomic.Int32
	release := make(chan struct{}) // the stuck read ends when the test says
	logs := new(syncBuffer)
	g, err := Start(ctx, cfg, Options{Log: logs, ReloadTimeout: 50 * time.Millisecond,
		Load: func(ctx context.Context, path string, now time.Time) (*snapshot.Snapshot, error) {
			if calls.Add(1) == 1 {
				return snapshot.Load(ctx, path, now)
			}
			<-release // a reload stuck in a read that ignores cancellation
			return nil, errors.New("released")
		}})
	if err != nil {
		t.Fatal(err)
	}
	reload := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, reload) }()
	reload <- struct{}{}
	logs.waitLog(t, "not finished within", 1)
	waitMetric(t, g, 1, "postern_config_reloads_total", "result", "failed")
	close(release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A client that speaks before the greeting is counted as an early talker
// (postern logs it and goes on). Its bytes come in the same segment as a
// trusted load balancer's PROXY header, so they are there before the
// gateway looks.
func TestMetricsEarlyTalker(t *testing.T) {
	g, _, logs, _, _, _ := metricsGateway(t, "trusted_upstreams: \"127.0.0.8\"\n")
	waitReady(t, "http://"+g.MetricsAddr().String())
	c, r := dialFrom(t, "127.0.0.8", g.Addr(service.IMAP))
	local := g.Addr(service.IMAP).(*net.TCPAddr)
	fmt.Fprintf(c, "PROXY TCP4 192.0.2.50 %s 40000 %d\r\na NOOP\r\n", local.IP, local.Port)
	if l := readLine(t, r); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q", l)
	}
	waitMetric(t, g, 1, "postern_early_talkers_total", "service", "imap")
	logs.waitLog(t, "early talker", 1)
	checkLabels(t, g, "192.0.2.50")
}

// A backend that refuses connections shows in
// postern_backend_dial_errors_total for its service and address.
func TestMetricsBackendDialErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	dead, err := net.Listen("tcp", "127.0.0.1:0") // a port nobody answers on once closed
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
metrics: { listen: "127.0.0.1:0" }
services:
  pop3: { listen: "127.0.0.1:0", backend: %q }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), deadAddr))
	g, err := Start(ctx, cfg, Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	waitReady(t, "http://"+g.MetricsAddr().String())
	c, r := dialFrom(t, "127.0.0.9", g.Addr(service.POP3))
	if l := readLine(t, r); !strings.HasPrefix(l, "-ERR") {
		t.Fatalf("with the backend down: %q", l)
	}
	c.Close()
	waitMetric(t, g, 1, "postern_backend_dial_errors_total", "service", "pop3", "backend", deadAddr)
	if v := metricValue(t, g, "postern_backend_dial_duration_seconds", "service", "pop3"); v > 0 {
		t.Errorf("a failed dial was timed as a connection: %v", v)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
