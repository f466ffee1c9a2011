package policyd

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// e2eYAML is the engine of the end-to-end tests: policy mode only, the
// test backends' domains local.
const e2eYAML = `local_domains: "example.test; other.test"
login_restrictions: [ "carol@other.test=198.51.100.0/24" ]
intrusion_prevention:
  smtp: { relay_denials: 2, failed_logins: 5, tarpit_accounts: "trap@example.test" }
  imap_pop3: { failed_logins: 5 }
`

// e2eWorld is postern's policy servers in front of the test backends'
// Postfix (check_policy_service) and Dovecot (auth_policy_server_url),
// shared by the end-to-end tests of the binary.
type e2eWorld struct {
	env            *testenv.Env
	eng            *guard.Engine
	pfAddr, dcAddr string
	dovecot        *Dovecot // the running Dovecot policy server
	postfix        *Postfix // the running Postfix policy server
	mu             sync.Mutex
	cancel         context.CancelFunc
	done           chan struct{}
}

var (
	e2eOnce sync.Once
	e2e     *e2eWorld
	e2eErr  error
)

// start serves both policy servers on their fixed addresses until stop.
func (w *e2eWorld) start(t testing.TB) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	pl, err := net.Listen("tcp", w.pfAddr)
	if err != nil {
		t.Fatal(err)
	}
	dl, err := net.Listen("tcp", w.dcAddr)
	if err != nil {
		pl.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	w.postfix = NewPostfix(w.eng, Options{})
	wg.Go(func() { w.postfix.Serve(ctx, pl) })
	w.dovecot = NewDovecot(w.eng, Options{})
	wg.Go(func() { w.dovecot.Serve(ctx, dl) })
	go func() { wg.Wait(); close(w.done) }()
}

// restart starts the policy servers again after stop and returns once
// Postfix and Dovecot reach them: a backend's request that meets the
// stopped server's closed connection is lost (both are set not to fail
// on it), so the tests after this one would otherwise miss reports.
func (w *e2eWorld) restart(t *testing.T) {
	t.Helper()
	w.start(t)
	for end := time.Now().Add(10 * time.Second); ; {
		pf, dc := w.postfix.Stats().Requests.Load(), w.dovecot.Stats().Requests.Load()
		l := w.dial(t, w.env.SMTPProxy, "203.0.113.99:4000")
		l.smtp("")
		l.smtp("EHLO client.example")
		l.smtp("MAIL FROM:<a@b.example>")
		l.smtp("RCPT TO:<alice@example.test>")
		l.c.Close()
		w.imapLogin(t, "203.0.113.99:4001", "bob@example.test", w.env.Users["bob@example.test"])
		// Dovecot asks before the login (allow) and reports after it.
		if w.postfix.Stats().Requests.Load() > pf && w.dovecot.Stats().Requests.Load() >= dc+2 {
			return
		}
		if time.Now().After(end) {
			t.Fatal("Postfix or Dovecot did not reach the restarted policy servers within 10 s")
		}
	}
}

// stop stops both policy servers and waits for them.
func (w *e2eWorld) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel != nil {
		w.cancel()
		<-w.done
		w.cancel = nil
	}
}

// world starts the policy servers, then the backends configured to ask
// them (once per binary); it skips without POSTERN_E2E=1.
func world(t *testing.T) *e2eWorld {
	t.Helper()
	if os.Getenv("POSTERN_E2E") != "1" {
		t.Skip("end-to-end test: set POSTERN_E2E=1")
	}
	e2eOnce.Do(func() {
		w := &e2eWorld{}
		free := func() string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				e2eErr = err
				return ""
			}
			defer ln.Close()
			return ln.Addr().String()
		}
		w.pfAddr, w.dcAddr = free(), free()
		if e2eErr != nil {
			return
		}
		dir, err := os.MkdirTemp("", "postern-policyd-e2e")
		if err != nil {
			e2eErr = err
			return
		}
		nonce := filepath.Join(dir, "dovecot-nonce")
		if e2eErr = EnsureNonce(nonce); e2eErr != nil {
			return
		}
		path := filepath.Join(dir, "postern.yaml")
		if e2eErr = os.WriteFile(path, []byte(e2eYAML), 0o600); e2eErr != nil {
			return
		}
		w.eng = newEngineAt(t, path)
		os.Setenv("POSTERN_BACKENDS_POSTFIX_POLICY", "inet:"+w.pfAddr)
		os.Setenv("POSTERN_BACKENDS_DOVECOT_POLICY_URL", "http://"+w.dcAddr+"/")
		os.Setenv("POSTERN_BACKENDS_DOVECOT_POLICY_NONCE_FILE", nonce)
		e2e = w
	})
	if e2eErr != nil {
		t.Fatal(e2eErr)
	}
	if e2e.cancel == nil {
		e2e.start(t)
	}
	e2e.env = testenv.Backends(t)
	return e2e
}

// line is a raw line-protocol client.
type line struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (l *line) read() string {
	l.t.Helper()
	s, err := l.r.ReadString('\n')
	if err != nil {
		l.t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n")
}

func (l *line) send(s string) {
	l.t.Helper()
	if _, err := fmt.Fprintf(l.c, "%s\r\n", s); err != nil {
		l.t.Fatalf("write %q: %v", s, err)
	}
}

// smtp sends a command and returns the last line of its reply.
func (l *line) smtp(cmd string) string {
	l.t.Helper()
	if cmd != "" {
		l.send(cmd)
	}
	for range 100 {
		if s := l.read(); len(s) < 4 || s[3] != '-' {
			return s
		}
	}
	l.t.Fatal("endless SMTP reply")
	return ""
}

func (w *e2eWorld) dial(t *testing.T, addr, src string) *line {
	c := w.env.DialProxy(t, addr, netip.MustParseAddrPort(src))
	return &line{t: t, c: c, r: bufio.NewReader(c)}
}

// imapLogin logs in to Dovecot's IMAP from src and returns the tagged reply.
func (w *e2eWorld) imapLogin(t *testing.T, src, user, pass string) string {
	t.Helper()
	l := w.dial(t, w.env.IMAPProxy, src)
	defer l.c.Close()
	if g := l.read(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q", g)
	}
	l.send(`a LOGIN "` + user + `" "` + pass + `"`)
	for range 100 {
		if s := l.read(); strings.HasPrefix(s, "a ") {
			return s
		}
	}
	t.Fatal("no tagged reply")
	return ""
}

// waitBlocked polls until addr is blocked.
func waitBlocked(t *testing.T, eng *guard.Engine, addr string) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !blocked(eng, addr); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s not blocked", addr)
		}
	}
}

// Five wrong IMAP passwords sent straight to Dovecot get the address
// blocked through the authentication policy; the sixth login, with the
// right password, is refused by Dovecot; another address logs in.
func TestE2EDovecotFailedLogins(t *testing.T) {
	w := world(t)
	const src = "203.0.113.70"
	for i := range 5 {
		if r := w.imapLogin(t, src+":4000", "alice@example.test", fmt.Sprintf("wrong-%d", i)); !strings.HasPrefix(r, "a NO") {
			t.Fatalf("wrong password %d: %q", i+1, r)
		}
	}
	waitBlocked(t, w.eng, src)
	if r := w.imapLogin(t, src+":4001", "alice@example.test", w.env.Users["alice@example.test"]); !strings.HasPrefix(r, "a NO") {
		t.Fatalf("right password from the blocked address: %q", r)
	}
	if r := w.imapLogin(t, "203.0.113.71:4000", "alice@example.test", w.env.Users["alice@example.test"]); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("right password from another address: %q", r)
	}
}

// Postfix asks postern at RCPT: a blocked client gets Postfix's reply
// with postern's text; relay probing is answered like
// reject_unauth_destination and blocks the client.
func TestE2EPostfix(t *testing.T) {
	w := world(t)
	if _, err := w.eng.BlockManual(context.Background(), netip.MustParsePrefix("203.0.113.80/32"), time.Hour, "e2e", "test"); err != nil {
		t.Fatal(err)
	}
	l := w.dial(t, w.env.SMTPProxy, "203.0.113.80:4000")
	l.smtp("")
	l.smtp("EHLO client.example")
	l.smtp("MAIL FROM:<a@b.example>")
	if r := l.smtp("RCPT TO:<alice@example.test>"); !strings.Contains(r, "Blocked (manual)") || r[0] != '4' && r[0] != '5' {
		t.Fatalf("blocked client: %q", r)
	}

	l = w.dial(t, w.env.SMTPProxy, "203.0.113.81:4000")
	l.smtp("")
	l.smtp("EHLO client.example")
	l.smtp("MAIL FROM:<a@b.example>")
	if r := l.smtp("RCPT TO:<alice@example.test>"); !strings.HasPrefix(r, "250") {
		t.Fatalf("local recipient: %q", r)
	}
	if r := l.smtp("RCPT TO:<victim1@elsewhere.invalid>"); r != "554 5.7.1 <victim1@elsewhere.invalid>: Recipient address rejected: Relay access denied" {
		t.Fatalf("relay: %q", r)
	}
	l.smtp("RCPT TO:<victim2@elsewhere.invalid>")
	waitBlocked(t, w.eng, "203.0.113.81")
	l = w.dial(t, w.env.SMTPProxy, "203.0.113.81:4001")
	l.smtp("")
	l.smtp("EHLO client.example")
	l.smtp("MAIL FROM:<a@b.example>")
	if r := l.smtp("RCPT TO:<alice@example.test>"); !strings.Contains(r, "Blocked (relay denials)") {
		t.Fatalf("after relay probing: %q", r)
	}
}

// With postern down, Postfix (smtpd_policy_service_default_action =
// DUNNO) and Dovecot (auth_policy_reject_on_fail = no) keep serving.
func TestE2EPosternDown(t *testing.T) {
	w := world(t)
	w.stop()
	defer w.restart(t)
	l := w.dial(t, w.env.SMTPProxy, "203.0.113.90:4000")
	l.smtp("")
	l.smtp("EHLO client.example")
	l.smtp("MAIL FROM:<a@b.example>")
	if r := l.smtp("RCPT TO:<alice@example.test>"); !strings.HasPrefix(r, "250") {
		t.Fatalf("Postfix with postern down: %q", r)
	}
	if r := w.imapLogin(t, "203.0.113.91:4000", "bob@example.test", w.env.Users["bob@example.test"]); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("Dovecot with postern down: %q", r)
	}
}

// The same through POP3: five wrong passwords block the address; and a
// restricted account is refused by Dovecot with the right password from
// an address its login restriction does not grant.
func TestE2EDovecotPOP3AndRestriction(t *testing.T) {
	w := world(t)
	const src = "203.0.113.72"
	pop := func(src, user, pass string) string {
		l := w.dial(t, w.env.POP3Proxy, src)
		defer l.c.Close()
		if g := l.read(); !strings.HasPrefix(g, "+OK") {
			t.Fatalf("greeting %q", g)
		}
		l.send("USER " + user)
		l.read()
		l.send("PASS " + pass)
		return l.read()
	}
	for i := range 5 {
		if r := pop(src+":4000", "bob@example.test", fmt.Sprintf("wrong-%d", i)); !strings.HasPrefix(r, "-ERR") {
			t.Fatalf("wrong password %d: %q", i+1, r)
		}
	}
	waitBlocked(t, w.eng, src)
	if r := pop(src+":4001", "bob@example.test", w.env.Users["bob@example.test"]); !strings.HasPrefix(r, "-ERR") {
		t.Fatalf("right password from the blocked address: %q", r)
	}
	carol := w.env.Users["carol@other.test"]
	if r := w.imapLogin(t, "203.0.113.73:4000", "carol@other.test", carol); !strings.HasPrefix(r, "a NO") {
		t.Fatalf("restricted account from a non-granted address: %q", r)
	}
	if r := w.imapLogin(t, "198.51.100.73:4000", "carol@other.test", carol); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("restricted account from its network: %q", r)
	}
}

// Postfix SMTP AUTH through Dovecot SASL: Dovecot reports the failures
// (protocol smtp) and five block the address, which Postfix's policy
// then refuses too; mail to a tarpit account blocks at once.
func TestE2EPostfixAuthAndTarpit(t *testing.T) {
	w := world(t)
	const src = "203.0.113.85"
	l := w.dial(t, w.env.SMTPProxy, src+":4000")
	l.smtp("")
	l.smtp("EHLO client.example")
	for i := range 5 {
		blob := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00wrong-" + fmt.Sprint(i)))
		if r := l.smtp("AUTH PLAIN " + blob); !strings.HasPrefix(r, "535") {
			t.Fatalf("wrong password %d: %q", i+1, r)
		}
	}
	waitBlocked(t, w.eng, src)
	l = w.dial(t, w.env.SMTPProxy, src+":4001")
	l.smtp("")
	l.smtp("EHLO client.example")
	l.smtp("MAIL FROM:<a@b.example>")
	if r := l.smtp("RCPT TO:<alice@example.test>"); !strings.Contains(r, "Blocked (failed logins)") {
		t.Fatalf("after failed SMTP AUTH: %q", r)
	}

	// A restricted account: its SMTP AUTH is refused (by Dovecot's policy,
	// which Postfix's SASL asks) from an address its restriction does not
	// grant, with the right password; from its network it logs in and
	// relays.
	carol := base64.StdEncoding.EncodeToString([]byte("\x00carol@other.test\x00" + w.env.Users["carol@other.test"]))
	l = w.dial(t, w.env.SMTPProxy, "203.0.113.87:4000")
	l.smtp("")
	l.smtp("EHLO client.example")
	if r := l.smtp("AUTH PLAIN " + carol); !strings.HasPrefix(r, "535") {
		t.Fatalf("restricted account from a non-granted address: %q", r)
	}
	l = w.dial(t, w.env.SMTPProxy, "198.51.100.87:4000")
	l.smtp("")
	l.smtp("EHLO client.example")
	if r := l.smtp("AUTH PLAIN " + carol); !strings.HasPrefix(r, "235") {
		t.Fatalf("restricted account from its network: %q", r)
	}
	l.smtp("MAIL FROM:<carol@other.test>")
	if r := l.smtp("RCPT TO:<someone@elsewhere.invalid>"); !strings.HasPrefix(r, "250") {
		t.Fatalf("authenticated relay: %q", r)
	}

	l = w.dial(t, w.env.SMTPProxy, "203.0.113.86:4000")
	l.smtp("")
	l.smtp("EHLO client.example")
	l.smtp("MAIL FROM:<a@b.example>")
	if r := l.smtp("RCPT TO:<trap@example.test>"); !strings.Contains(r, "Blocked (tarpit account)") {
		t.Fatalf("tarpit account: %q", r)
	}
	if !blocked(w.eng, "203.0.113.86") {
		t.Fatal("tarpit account: not blocked")
	}
}

// The latency a Dovecot login sees with postern's policy: IMAP logins
// (right password) timed from LOGIN to the tagged OK, in one run with the
// policy on, off (auth_policy_server_url removed and Dovecot reloaded),
// on again, then with the policy server down. Down is not "off":
// Dovecot's HTTP client retries the refused connection until
// auth_policy_server_timeout_msecs, for the check before and the one after
// authentication (2 × 2 s here), and only then lets the login through. The
// figures are logged; BENCHMARKS.md records them.
func TestE2EDovecotLoginLatency(t *testing.T) {
	w := world(t)
	login := func(src string) time.Duration {
		l := w.dial(t, w.env.IMAPProxy, src)
		defer l.c.Close()
		if g := l.read(); !strings.HasPrefix(g, "* OK") {
			t.Fatalf("greeting %q", g)
		}
		t0 := time.Now()
		l.send(`a LOGIN "alice@example.test" "` + w.env.Users["alice@example.test"] + `"`)
		for {
			s := l.read()
			if strings.HasPrefix(s, "a ") {
				if !strings.HasPrefix(s, "a OK") {
					t.Fatalf("login: %q", s)
				}
				break
			}
		}
		d := time.Since(t0)
		l.send("b LOGOUT")
		return d
	}
	measure := func(prefix string, n int) (p50, p99 time.Duration) {
		lat := make([]time.Duration, 0, n)
		for i := range n {
			lat = append(lat, login(fmt.Sprintf("%s.%d:4000", prefix, i+1)))
		}
		slices.Sort(lat)
		return lat[n/2], lat[n*99/100]
	}
	// policy turns Dovecot's policy off or on (its configuration file
	// rewritten, Dovecot reloaded) and waits until a login shows it: the
	// policy server is asked, or not.
	conf := filepath.Join(w.env.Dir, "dovecot", "dovecot.conf")
	orig, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	policy := func(on bool) {
		t.Helper()
		body := orig
		if !on {
			body = []byte(strings.ReplaceAll(string(orig), "\nauth_policy_server_url =", "\n#auth_policy_server_url ="))
		}
		if err := os.WriteFile(conf, body, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("doveadm", "-c", conf, "reload").CombinedOutput(); err != nil {
			t.Fatalf("doveadm reload: %v\n%s", err, out)
		}
		for end, i := time.Now().Add(15*time.Second), 0; ; i++ {
			before := w.dovecot.Stats().Requests.Load()
			login(fmt.Sprintf("192.0.2.%d:5000", 100+i%100))
			if asked := w.dovecot.Stats().Requests.Load() > before; asked == on {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("Dovecot's policy is not %v after a reload", on)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	const n = 100
	on50, on99 := measure("198.51.100", n)
	policy(false)
	restored := false
	defer func() {
		if !restored {
			os.WriteFile(conf, orig, 0o644)
			exec.Command("doveadm", "-c", conf, "reload").Run()
		}
	}()
	off50, off99 := measure("198.51.100", n)
	policy(true)
	restored = true
	again50, again99 := measure("198.51.100", n)
	if on50 > time.Second || again50 > time.Second {
		t.Errorf("a login with the policy takes %v, then %v (p50)", on50, again50)
	}
	t.Logf("Dovecot IMAP login, %d logins each: policy on p50 %v p99 %v; off p50 %v p99 %v; on again p50 %v p99 %v",
		n, on50, on99, off50, off99, again50, again99)
	w.stop()
	defer w.restart(t)
	down50, down99 := measure("192.0.2", 3)
	t.Logf("Dovecot IMAP login: postern down (3 logins) p50 %v p99 %v", down50, down99)
}
