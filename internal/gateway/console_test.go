package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/console"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

// dialPOPFrom dials the POP3 gateway from the loopback address src.
func dialPOPFrom(t *testing.T, addr net.Addr, src string) *popClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &popClient{t: t, c: c, r: bufio.NewReader(c)}
}

var consoleCSRF = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// The console runs in the gateway: a user signs in, sees a block the POP3
// gateway made from failed logins, blocks an address by hand and the POP3
// gateway refuses its login, and reloads the configuration.
func TestConsoleInGateway(t *testing.T) {
	_, backend := popBackend(t, "backend")
	dir := t.TempDir()
	users := filepath.Join(dir, "console-users")
	if err := console.SetPassword(users, "alice", "alice console pw", console.HashParams{Time: 1, Memory: 64, Threads: 1}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
console: { listen: "127.0.0.1:0", grant: "127.0.0.1", users_file: console-users }
intrusion_prevention:
  imap_pop3: { failed_logins: 3 }
services:
  pop3: { listen: "127.0.0.1:0", backend: "%s", plaintext_login: "127.0.0.0/8" }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), backend))
	var logs syncBuffer
	g, _ := runGateway(t, cfg, Options{Log: &logs, Drain: time.Second})
	logs.waitLog(t, "console listening", 1)
	base := "http://" + g.ConsoleAddr().String()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) string {
		t.Helper()
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	post := func(path string, form url.Values) string {
		t.Helper()
		from := "/blocks"
		if path == "/signin" {
			from = "/signin"
		}
		m := consoleCSRF.FindStringSubmatch(get(from))
		if m == nil {
			t.Fatalf("no CSRF token for %s", path)
		}
		form.Set("csrf", m[1])
		resp, err := hc.PostForm(base+path, form)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if body := post("/signin", url.Values{"user": {"alice"}, "password": {"alice console pw"}}); !strings.Contains(body, "Blocks made, by reason") {
		t.Fatalf("sign-in:\n%s", body)
	}
	if body := get("/"); !strings.Contains(body, "listening") || !strings.Contains(body, "pop3") || !strings.Contains(body, "backend "+backend) {
		t.Fatalf("dashboard lacks the pop3 listener:\n%s", body)
	}

	// three wrong passwords on the POP3 gateway make an L block
	pop := g.Addr(service.POP3)
	for i := range 3 {
		p := dialPOPFrom(t, pop, "127.0.0.5")
		p.line()
		p.cmd("USER alice@example.test", "+OK")
		p.cmd(fmt.Sprintf("PASS wrong-%d", i), "-ERR")
		p.c.Close()
	}
	if body := get("/blocks/rows?reason=L"); !strings.Contains(body, "127.0.0.5") || !strings.Contains(body, "pop3") {
		t.Fatalf("the L block is not in the queue:\n%s", body)
	}
	// the dashboard counts them live (metrics are off: the console has
	// the counters to itself), and a good login beside them
	ok := dialPOPFrom(t, pop, "127.0.0.8")
	ok.login()
	ok.c.Close()
	waitTraffic(t, get, "pop3", func(tr console.ServiceTraffic) bool {
		return tr.LoginsFailed == 3 && tr.LoginsOK == 1 && tr.Connections >= 4 && tr.LoginsFailedPerS > 0 && tr.ConnectionsPerS > 0
	})
	if body := get("/"); !strings.Contains(body, "Traffic, last minute") || !regexp.MustCompile(`<td>pop3</td><td class="num" title="[45] in`).MatchString(body) {
		t.Fatalf("the dashboard lacks the pop3 traffic:\n%s", body)
	}

	// a manual block in the console: the POP3 gateway refuses that login
	if body := post("/blocks/add", url.Values{"target": {"127.0.0.6"}, "comment": {"by hand"}}); !strings.Contains(body, "Blocked 127.0.0.6.") {
		t.Fatalf("manual block:\n%s", body)
	}
	p := dialPOPFrom(t, pop, "127.0.0.6")
	if l, err := p.r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "-ERR") || !strings.Contains(l, "Blocked") {
		t.Fatalf("the POP3 gateway did not refuse an address blocked in the console: %q, %v", l, err)
	}

	// the reload button
	if body := post("/config/reload", url.Values{}); !strings.Contains(body, "Reloaded.") {
		t.Fatalf("reload:\n%s", body)
	}
	// a configuration that does not load is reported, and changes nothing
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeConfig(t, cfg, string(good)+"no_such_key: 1\n")
	if body := post("/config/reload", url.Values{}); !strings.Contains(body, "Reload failed") || !strings.Contains(body, "no_such_key") {
		t.Fatalf("bad reload:\n%s", body)
	}
	// console.grant follows a reload: 127.0.0.1 is no longer let in
	writeConfig(t, cfg, strings.Replace(string(good), `grant: "127.0.0.1"`, `grant: "127.0.0.9"`, 1))
	tok := consoleCSRF.FindStringSubmatch(get("/blocks"))
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.PostForm(base+"/config/reload", url.Values{"csrf": {tok[1]}})
	if err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("reload with a new grant: %v %v", resp, err)
	}
	resp.Body.Close()
	if resp, err := hc.Get(base + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("after the grant changed, 127.0.0.1 was answered: %d", resp.StatusCode)
	}

	// a client outside console.grant is not answered
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.7")}}
	c7 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	if resp, err := c7.Get(base + "/signin"); err == nil {
		resp.Body.Close()
		t.Fatalf("a client outside console.grant was answered: %d", resp.StatusCode)
	}
}

// waitTraffic polls the console's /traffic until svc's line satisfies ok.
func waitTraffic(t *testing.T, get func(string) string, svc string, ok func(console.ServiceTraffic) bool) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		last = get("/traffic")
		var trs []console.ServiceTraffic
		if err := json.Unmarshal([]byte(last), &trs); err != nil {
			t.Fatalf("/traffic: %v\n%s", err, last)
		}
		for _, tr := range trs {
			if tr.Service == svc && ok(tr) {
				return
			}
		}
	}
	t.Fatalf("/traffic never showed what was wanted of %s: %s", svc, last)
}

// Wrong console passwords are failed logins of service console: they
// block the address with service console (after the web group's
// failed_logins, or DefaultConsoleFailedLogins when that is off), and the
// metrics and the dashboard count them as the console's.
func TestConsoleSignInsAreServiceConsole(t *testing.T) {
	t.Run("web failed_logins", func(t *testing.T) { consoleSignIns(t, "  web: { failed_logins: 2 }\n", 2) })
	t.Run("web off", func(t *testing.T) { consoleSignIns(t, "", guard.DefaultConsoleFailedLogins) })
}

func consoleSignIns(t *testing.T, web string, n int) {
	dir := t.TempDir()
	users := filepath.Join(dir, "console-users")
	if err := console.SetPassword(users, "alice", "alice console pw", console.HashParams{Time: 1, Memory: 64, Threads: 1}); err != nil {
		t.Fatal(err)
	}
	g, _, logs, _, _, _ := metricsGateway(t, fmt.Sprintf(`%sconsole: { listen: "127.0.0.1:0", grant: "127.0.0.0/8", users_file: %s }
`, web, users))
	logs.waitLog(t, "console listening", 1)
	base := "http://" + g.ConsoleAddr().String()
	from := func(src string) *http.Client {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	}
	signIn := func(hc *http.Client, password string) int {
		t.Helper()
		resp, err := hc.Get(base + "/signin")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := consoleCSRF.FindSubmatch(b)
		if m == nil {
			t.Fatalf("no CSRF token on the sign-in page:\n%s", b)
		}
		resp, err = hc.PostForm(base+"/signin", url.Values{"csrf": {string(m[1])}, "user": {"alice"}, "password": {password}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	bad := from("127.0.0.33")
	for i := range n {
		if _, ok := g.Engine().BlockOf(netip.MustParseAddr("127.0.0.33")); ok {
			t.Fatalf("blocked after %d wrong console passwords", i)
		}
		if code := signIn(bad, fmt.Sprintf("wrong %d", i)); code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d", i, code)
		}
	}
	b, ok := g.Engine().BlockOf(netip.MustParseAddr("127.0.0.33"))
	if !ok || b.Reason != reason.Login || b.Service != "console" || !strings.Contains(b.Detail, "console:alice") {
		t.Fatalf("after %d wrong console passwords: %+v, %v", n, b, ok)
	}
	if v := metricValue(t, g, "postern_logins_total", "service", "console", "result", "failed"); v != float64(n) {
		t.Errorf("console failed logins in the metrics: %v", v)
	}
	if v := metricValue(t, g, "postern_logins_total", "service", "web", "result", "failed"); v != 0 {
		t.Errorf("console sign-ins counted as web's: %v", v)
	}
	good := from("127.0.0.34")
	if code := signIn(good, "alice console pw"); code != http.StatusOK {
		t.Fatalf("sign-in: %d", code)
	}
	get := func(path string) string {
		t.Helper()
		resp, err := good.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitTraffic(t, get, "console", func(tr console.ServiceTraffic) bool { return tr.LoginsFailed == uint64(n) && tr.LoginsOK == 1 })
}
