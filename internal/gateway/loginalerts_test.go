package gateway

import (
	"encoding/json"
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
	"github.com/postern/postern/internal/webhook"
)

// proxyIMAPLogin logs in to IMAP through a trusted load balancer
// (127.0.0.8) whose PROXY header claims the client address src; it
// returns the tagged answer.
func proxyIMAPLogin(t *testing.T, g *Gateway, src, user, pass string) string {
	t.Helper()
	c, r := dialFrom(t, "127.0.0.8", g.Addr(service.IMAP))
	local := g.Addr(service.IMAP).(*net.TCPAddr)
	fmt.Fprintf(c, "PROXY TCP4 %s %s 40000 %d\r\n", src, local.IP, local.Port)
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

// loginAlertsGateway runs a gateway in front of the demo backends with a
// GeoIP file that puts 192.0.2.0/24 in DE and 198.51.100.0/24 in TH, and
// login_alerts (alerts, plus the given keys); clients come through a
// trusted load balancer's PROXY header.
func loginAlertsGateway(t *testing.T, keys, extra string) (*Gateway, *syncBuffer, string) {
	dir := t.TempDir()
	extra = strings.ReplaceAll(extra, "DIR", dir)
	if err := os.WriteFile(filepath.Join(dir, "geo.csv"), []byte("192.0.2.0,192.0.2.255,DE\n198.51.100.0,198.51.100.255,TH\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hist := filepath.Join(dir, "logins.json")
	be, err := demo.Start(t.Context(), demo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
metrics: { listen: "127.0.0.1:0", grant: "127.0.0.1" }
trusted_upstreams: "127.0.0.8"
geoip: { databases: [ { path: %s } ] }
login_alerts: { enabled: true, file: %s%s }
%s
services:
  imap: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, plaintext_login: "0.0.0.0/0" }
  pop3: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, plaintext_login: "0.0.0.0/0" }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), filepath.Join(dir, "geo.csv"), hist, keys, extra, be.IMAP(), be.POP3()))
	logs := new(syncBuffer)
	g, _ := runGateway(t, cfg, Options{Log: logs})
	waitReady(t, "http://"+g.MetricsAddr().String())
	return g, logs, hist
}

// A successful IMAP login from a second country (PROXY-claimed addresses)
// is logged and counted, and, coming moments after one from DE, counted
// as impossible travel; the first login of the account only records; the
// history is saved to its file.
func TestLoginAlertsNewCountry(t *testing.T) {
	got := make(chan webhook.Event, 8)
	secret := "login-alerts-secret-0123456789"
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(secret), r.Header.Get(webhook.SignatureHeader), b, time.Now(), 0); err != nil {
			t.Errorf("signature: %v", err)
		}
		var ev webhook.Event
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Errorf("body %s: %v", b, err)
		}
		got <- ev
	}))
	defer recv.Close()
	key := filepath.Join(t.TempDir(), "hook.key")
	if err := os.WriteFile(key, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	g, logs, hist := loginAlertsGateway(t, "", `webhooks:
  - { name: ops, url: "`+recv.URL+`/hook", events: [new_country_login, impossible_travel], secret_file: `+key+`, timeout: 2s }`)
	alice := demo.Users()[0]
	if l := proxyIMAPLogin(t, g, "192.0.2.10", alice.Name, alice.Password); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("first login from DE: %q", l)
	}
	if l := proxyIMAPLogin(t, g, "192.0.2.11", alice.Name, alice.Password); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("second login from DE: %q", l)
	}
	if v := metricValue(t, g, "postern_new_country_logins_total", "service", "imap"); v > 0 {
		t.Fatalf("a known country counted as new: %v", v)
	}
	if l := proxyIMAPLogin(t, g, "198.51.100.7", alice.Name, alice.Password); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("login from TH without block_new_country: %q", l)
	}
	waitMetric(t, g, 1, "postern_new_country_logins_total", "service", "imap")
	waitMetric(t, g, 1, "postern_impossible_travel_total", "service", "imap")
	logs.waitLog(t, "login from a new country", 1)
	seen := map[string]*webhook.Login{}
	for range 2 {
		ev := next(t, got)
		seen[ev.Type] = ev.Login
	}
	if l := seen["new_country_login"]; l == nil || l.Account != alice.Name || l.Country != "TH" || l.Service != "imap" || l.Address != "198.51.100.7" || len(l.Previous) != 1 {
		t.Fatalf("new_country_login event: %+v", l)
	}
	if l := seen["impossible_travel"]; l == nil || l.FromCountry != "DE" || l.DistanceKm < 8000 {
		t.Fatalf("impossible_travel event: %+v", l)
	}
	if s := logs.String(); !strings.Contains(s, "country=TH") || !strings.Contains(s, "previous=[DE]") || strings.Contains(s, alice.Password) {
		t.Fatalf("log lacks the country and the previous ones, or has the password:\n%s", s)
	}
	g.saveLoginHistory()
	b, err := os.ReadFile(hist)
	if err != nil {
		t.Fatal(err)
	}
	var saved struct {
		Accounts []struct {
			Account string
			Seen    []struct{ Country string }
		}
	}
	if err := json.Unmarshal(b, &saved); err != nil || len(saved.Accounts) != 1 || len(saved.Accounts[0].Seen) != 2 {
		t.Fatalf("saved history %s: %v", b, err)
	}
}

// With block_new_country, a login from a country never seen for the
// account is refused as the login IP restriction refuses (the backend's
// own failure), while a known country and a first login go through.
func TestLoginAlertsBlockNewCountry(t *testing.T) {
	g, logs, _ := loginAlertsGateway(t, ", block_new_country: true", "")
	users := demo.Users()
	alice := users[0]
	if l := proxyIMAPLogin(t, g, "192.0.2.10", alice.Name, alice.Password); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("first login from DE: %q", l)
	}
	if l := proxyIMAPLogin(t, g, "198.51.100.7", alice.Name, alice.Password); !strings.HasPrefix(l, "a NO") {
		t.Fatalf("login from a new country with block_new_country: %q", l)
	}
	logs.waitLog(t, "a country never seen for the account", 1)
	if l := proxyIMAPLogin(t, g, "192.0.2.12", alice.Name, alice.Password); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("login from the known country after a refusal: %q", l)
	}
	waitMetric(t, g, 1, "postern_logins_total", "service", "imap", "result", "restricted")
}

// proxyPOP3Login logs in to POP3 as proxyIMAPLogin does to IMAP; it
// returns the answer to PASS.
func proxyPOP3Login(t *testing.T, g *Gateway, src, user, pass string) string {
	t.Helper()
	c, r := dialFrom(t, "127.0.0.8", g.Addr(service.POP3))
	local := g.Addr(service.POP3).(*net.TCPAddr)
	fmt.Fprintf(c, "PROXY TCP4 %s %s 40000 %d\r\n", src, local.IP, local.Port)
	if l := readLine(t, r); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("greeting %q", l)
	}
	fmt.Fprintf(c, "USER %s\r\n", user)
	if l := readLine(t, r); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("USER: %q", l)
	}
	fmt.Fprintf(c, "PASS %s\r\n", pass)
	l := readLine(t, r)
	fmt.Fprintf(c, "QUIT\r\n")
	io.Copy(io.Discard, r)
	c.Close()
	return l
}

// The history is the account's, across services: a POP3 login from TH
// after an IMAP login from DE is a new country, counted for pop3; a
// failed login from TH before it records nothing (else the success would
// not be new).
func TestLoginAlertsAcrossServices(t *testing.T) {
	g, _, _ := loginAlertsGateway(t, ", max_speed_kmh: 0", "")
	alice := demo.Users()[0]
	if l := proxyIMAPLogin(t, g, "192.0.2.10", alice.Name, alice.Password); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("IMAP login from DE: %q", l)
	}
	if l := proxyPOP3Login(t, g, "198.51.100.7", alice.Name, "wrong-password"); !strings.HasPrefix(l, "-ERR") {
		t.Fatalf("POP3 login with a wrong password: %q", l)
	}
	if l := proxyPOP3Login(t, g, "198.51.100.7", alice.Name, alice.Password); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("POP3 login from TH: %q", l)
	}
	waitMetric(t, g, 1, "postern_new_country_logins_total", "service", "pop3")
	if v := metricValue(t, g, "postern_impossible_travel_total", "service", "pop3"); v > 0 {
		t.Fatalf("impossible travel counted with max_speed_kmh 0: %v", v)
	}
	if c := g.logins.alerts.History.Countries(alice.Name); len(c) != 2 {
		t.Fatalf("countries %+v", c)
	}
}

// login_alerts is read at start: a reload that changes it says the change
// waits for a restart.
func TestLoginAlertsNeedRestart(t *testing.T) {
	if !needsRestart("login_alerts.block_new_country") || !needsRestart("login_alerts") {
		t.Fatal("login_alerts is not among the keys that need a restart")
	}
}
