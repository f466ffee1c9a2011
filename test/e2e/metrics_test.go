package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// metricsClient is the source address of this test's IMAP clients (inside
// the gateways' PlainOK, used by no other test: Dovecot's failure delay is
// per address).
const metricsClient = "127.0.0.28"

// TestMetricsAndServiceManager runs the real `postern serve` in front of
// the real Dovecot with the metrics listener on and a fake service manager
// (NOTIFY_SOCKET): READY=1 once it serves; a failed and a good IMAP login
// against Dovecot show in postern_logins_total, the backend dials and the
// bytes of the logged-in session in their metrics; /readyz answers; SIGHUP
// gives RELOADING=1 then READY=1 and counts a good reload; SIGTERM gives
// STOPPING=1.
func TestMetricsAndServiceManager(t *testing.T) {
	env := testenv.Backends(t)
	posternBinary(t)

	// The service manager's socket, in a short folder (unix socket paths
	// are limited to 107 bytes).
	sockDir, err := os.MkdirTemp("", "pe2n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "notify")
	mgr, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram", Name: sock})
	if err != nil {
		t.Fatal(err)
	}
	next := func(t *testing.T) string {
		t.Helper()
		buf := make([]byte, 4096)
		mgr.SetReadDeadline(time.Now().Add(45 * time.Second))
		n, err := mgr.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	// Registered before the gateway, so it runs after the gateway's own
	// cleanup has stopped it with SIGTERM.
	t.Cleanup(func() {
		defer mgr.Close()
		if m := next(t); !strings.HasPrefix(m, "STOPPING=1\n") {
			t.Errorf("at SIGTERM: %q", m)
		}
	})

	gw := startGateway(t, gwConfig{Backend: env.SMTPProxy, IMAP: env.IMAPProxy, Metrics: true,
		Env: []string{"NOTIFY_SOCKET=" + sock}})
	if m := next(t); !strings.HasPrefix(m, "READY=1\n") || !strings.Contains(m, "STATUS=serving") {
		t.Fatalf("at start: %q", m)
	}
	base := "http://" + gw.Metrics
	if code, body := httpGet(t, base+"/readyz"); code != 200 || strings.TrimSpace(body) != "ready" {
		t.Fatalf("/readyz: %d %q", code, body)
	}

	if l := imapLoginFrom(t, gw.IMAP, "a LOGIN "+bob+" wrong-"+uniq("pw")); !strings.HasPrefix(l, "a NO") {
		t.Fatalf("wrong password: %q", l)
	}
	if l := imapLoginFrom(t, gw.IMAP, "a LOGIN "+bob+" "+bobPass); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("login: %q", l)
	}
	want := map[string]func(float64) bool{
		`postern_logins_total{result="failed",service="imap"}`:                                        eq(1),
		`postern_logins_total{result="ok",service="imap"}`:                                            eq(1),
		`postern_connections_accepted_total{service="imap"}`:                                          eq(2),
		`postern_backend_dial_duration_seconds_count{backend="` + env.IMAPProxy + `",service="imap"}`: eq(2),
		`postern_relayed_bytes_total{direction="to_client",service="imap"}`:                           gt(0),
		`postern_relayed_bytes_total{direction="to_backend",service="imap"}`:                          gt(0),
		`postern_trigger_events_total{group="imap_pop3",reason="L"}`:                                  eq(1),
		`postern_certificate_expiry_timestamp_seconds{service="imap"}`:                                gt(float64(time.Now().Unix())),
		`postern_geoip_build_timestamp_seconds{database="my.zone"}`:                                   gt(0),
	}
	var last map[string]float64
	if !poll(20*time.Second, func() bool {
		last = scrapeMetrics(t, base)
		for k, ok := range want {
			if v, found := last[k]; !found || !ok(v) {
				return false
			}
		}
		return true
	}) {
		for k, ok := range want {
			if v, found := last[k]; !found || !ok(v) {
				t.Errorf("%s = %v (present: %v)", k, v, found)
			}
		}
	}

	// A reload under the service manager.
	if err := gw.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if m := next(t); !strings.HasPrefix(m, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("at SIGHUP: %q", m)
	}
	if m := next(t); !strings.HasPrefix(m, "READY=1\n") {
		t.Fatalf("after the reload: %q", m)
	}
	if v := scrapeMetrics(t, base)[`postern_config_reloads_total{result="ok"}`]; v != 1 {
		t.Errorf("postern_config_reloads_total{result=ok} = %v", v)
	}
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
func gt(min float64) func(float64) bool  { return func(v float64) bool { return v > min } }

// imapLoginFrom connects from metricsClient, sends one LOGIN line and
// returns the tagged answer, then logs out.
func imapLoginFrom(t *testing.T, addr, login string) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(metricsClient)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q %v", l, err)
	}
	fmt.Fprintf(c, "%s\r\n", login)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("answer to LOGIN: %v", err)
		}
		if strings.HasPrefix(l, "a ") {
			fmt.Fprintf(c, "b LOGOUT\r\n")
			io.Copy(io.Discard, r)
			return strings.TrimRight(l, "\r\n")
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var sampleLine = regexp.MustCompile(`^([a-z_:]+(?:\{[^}]*\})?) (\S+)$`)

// scrapeMetrics reads /metrics into series → value.
func scrapeMetrics(t *testing.T, base string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	out := map[string]float64{}
	for _, l := range strings.Split(body, "\n") {
		if m := sampleLine.FindStringSubmatch(l); m != nil {
			if v, err := strconv.ParseFloat(m[2], 64); err == nil {
				out[m[1]] = v
			}
		}
	}
	return out
}
