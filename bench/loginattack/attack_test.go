package loginattack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/imapproxy"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/pop3proxy"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/smtpproxy"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/testenv"
)

func TestMain(m *testing.M) {
	// Dovecot's default: a wrong password is answered after 2 s.
	if os.Getenv("POSTERN_BACKENDS_AUTH_FAILURE_DELAY") == "" {
		os.Setenv("POSTERN_BACKENDS_AUTH_FAILURE_DELAY", "2s")
	}
	testenv.Main(m)
}

const threshold = 5

const gatewayCfg = `services:
  imap: { listen: ":143", backend: "127.0.0.1:1" }
  pop3: { listen: ":110", backend: "127.0.0.1:1" }
  submission: { listen: ":587", backend: "127.0.0.1:1" }
intrusion_prevention:
  block_minutes: 60
  imap_pop3: { failed_logins: 5 }
  smtp: { failed_logins: 5 }
`

// gateway is postern's IMAP, POP3 and SMTP submission gateways with one
// engine, in front of Dovecot's and Postfix's PROXY ports (Postfix checks
// passwords with Dovecot's SASL).
type gateway struct {
	eng              *guard.Engine
	imap, pop3, smtp string
}

func startGateway(t testing.TB, env *testenv.Env) *gateway {
	t.Helper()
	path := filepath.Join(t.TempDir(), "postern.yaml")
	if err := os.WriteFile(path, []byte(gatewayCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	pol := func() *policy.Policy { return snap.Policy }
	plain := func(netip.Addr) bool { return true }
	log := slog.New(slog.DiscardHandler)
	ip := imapproxy.New(imapproxy.Config{Service: service.IMAP, Backend: relay.Dialer{Addr: env.IMAPProxy, Proxy: "v2"},
		PlaintextLogin: plain, PreAuthIdle: 30 * time.Second, BackendTimeout: 30 * time.Second}, eng, pol, log)
	pp := pop3proxy.New(pop3proxy.Config{Service: service.POP3, Backend: relay.Dialer{Addr: env.POP3Proxy, Proxy: "v2"},
		PlaintextLogin: plain, PreAuthIdle: 30 * time.Second, BackendTimeout: 30 * time.Second}, eng, pol, log)
	sp := smtpproxy.New(smtpproxy.Config{Service: service.Submission, Hostname: "gw.e2e.test", Backend: env.SMTPProxy, BackendProxy: "v2",
		AllowInsecureAuth: true, Timeouts: smtpproxy.Timeouts{Command: 30 * time.Second, Data: 30 * time.Second, Session: 5 * time.Minute,
			Connect: 5 * time.Second, Backend: 30 * time.Second}},
		eng, func() smtpproxy.Env { return smtpproxy.Env{Policy: snap.Policy} }, nil, log)
	g := &gateway{eng: eng}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range []struct {
		addr  *string
		serve func(context.Context, relay.Acceptor, time.Duration) error
	}{{&g.imap, ip.Serve}, {&g.pop3, pp.Serve}, {&g.smtp, sp.Serve}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		*s.addr = ln.Addr().String()
		wg.Go(func() { s.serve(ctx, gwtest.Acceptor{Listener: ln}, time.Second) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return g
}

// conn is a line client from a loopback source address.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

func dial(addr, src string) (*conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return &conn{c: c, r: bufio.NewReader(c)}, nil
}

func (c *conn) line() string {
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "EOF"
	}
	return strings.TrimRight(l, "\r\n")
}

func (c *conn) cmd(s string) string {
	if _, err := io.WriteString(c.c, s+"\r\n"); err != nil {
		return "EOF"
	}
	return c.line()
}

// imapLogin sends a LOGIN and returns the tagged answer, or the BYE that
// refused it.
func (c *conn) imapLogin(user, pass string) string {
	l := c.cmd("a LOGIN " + user + " " + pass)
	for strings.HasPrefix(l, "* ") && !strings.HasPrefix(l, "* BYE") {
		l = c.line()
	}
	return l
}

// smtpReply reads one SMTP reply and returns its last line.
func (c *conn) smtpReply() string {
	for {
		l := c.line()
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

// smtpLogin says EHLO and sends AUTH PLAIN; it returns the answer to AUTH.
func (c *conn) smtpLogin(user, pass string) string {
	io.WriteString(c.c, "EHLO attacker.example\r\n")
	if l := c.smtpReply(); !strings.HasPrefix(l, "250") {
		return l
	}
	io.WriteString(c.c, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))+"\r\n")
	return c.smtpReply()
}

func (c *conn) pop3Login(user, pass string) string {
	if l := c.cmd("USER " + user); !strings.HasPrefix(l, "+OK") {
		return l
	}
	return c.cmd("PASS " + pass)
}

// dovecotLog returns Dovecot's log written after mark.
func dovecotLog(t testing.TB, env *testenv.Env, mark int64) []byte {
	t.Helper()
	f, err := os.Open(env.DovecotLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, mark, 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// failures counts the wrong passwords Dovecot checked for a client address
// since mark. Dovecot's log is written by its log process, a little after
// the answer; the count is read until it has not changed for 500 ms (at
// most 10 s).
func failures(t testing.TB, env *testenv.Env, mark int64, src string) int {
	t.Helper()
	count := func() int {
		n := 0
		for _, l := range bytes.Split(dovecotLog(t, env, mark), []byte("\n")) {
			// "passwd-file(user,rip,<session>)" from IMAP and POP3,
			// "passwd-file(user,rip)" from Postfix's SASL requests.
			if bytes.Contains(l, []byte("Password mismatch")) && (bytes.Contains(l, []byte(","+src+",")) || bytes.Contains(l, []byte(","+src+")"))) {
				n++
			}
		}
		return n
	}
	last, since := count(), time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if n := count(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= 500*time.Millisecond {
			break
		}
	}
	return last
}

// logins counts Dovecot's successful logins for a client address since
// mark.
func logins(t testing.TB, env *testenv.Env, mark int64, src string) int {
	t.Helper()
	n := 0
	for _, l := range bytes.Split(dovecotLog(t, env, mark), []byte("\n")) {
		if bytes.Contains(l, []byte("Login: user=<")) && bytes.Contains(l, []byte("rip="+src+",")) {
			n++
		}
	}
	return n
}

type proto struct {
	name  string
	addr  func(*gateway) string
	login func(c *conn, user, pass string) string
	ok    func(string) bool
	fail  func(string) bool
	block func(string) bool
}

var protos = []proto{
	{"IMAP", func(g *gateway) string { return g.imap }, (*conn).imapLogin,
		func(l string) bool { return strings.HasPrefix(l, "a OK") },
		func(l string) bool { return strings.HasPrefix(l, "a NO") },
		func(l string) bool { return strings.HasPrefix(l, "* BYE Blocked (failed logins)") }},
	{"POP3", func(g *gateway) string { return g.pop3 }, (*conn).pop3Login,
		func(l string) bool { return strings.HasPrefix(l, "+OK") },
		func(l string) bool { return strings.HasPrefix(l, "-ERR [AUTH]") },
		func(l string) bool { return strings.HasPrefix(l, "-ERR [SYS/PERM] Blocked (failed logins)") }},
	{"SMTP", func(g *gateway) string { return g.smtp }, (*conn).smtpLogin,
		func(l string) bool { return strings.HasPrefix(l, "235 ") },
		func(l string) bool { return strings.HasPrefix(l, "535 ") },
		func(l string) bool { return strings.HasPrefix(l, "421 4.7.1 gw.e2e.test Blocked (failed logins)") }},
}

// TestOpenConnectionsAfterBlock: twenty connections opened before the
// block; five wrong passwords block the address; then every connection
// tries, the right password included: Dovecot sees exactly five failures
// and no login.
func TestOpenConnectionsAfterBlock(t *testing.T) {
	env := testenv.Backends(t)
	for i, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			g := startGateway(t, env)
			src := fmt.Sprintf("127.0.3.%d", 10+i)
			mark := env.LogMark(t, "dovecot")
			var cs []*conn
			for range 20 {
				c, err := dial(p.addr(g), src)
				if err != nil {
					t.Fatal(err)
				}
				defer c.c.Close()
				c.line()
				cs = append(cs, c)
			}
			for i := range threshold {
				if l := p.login(cs[i], "alice@example.test", fmt.Sprintf("guess%d", i)); !p.fail(l) {
					t.Fatalf("guess %d: %q", i, l)
				}
			}
			for i, c := range cs[threshold:] {
				if l := p.login(c, "alice@example.test", env.Users["alice@example.test"]); !p.block(l) {
					t.Fatalf("connection %d after the block: %q", i+threshold, l)
				}
			}
			if n := failures(t, env, mark, src); n != threshold {
				t.Fatalf("Dovecot checked %d wrong passwords, want %d", n, threshold)
			}
			if n := logins(t, env, mark, src); n != 0 {
				t.Fatalf("Dovecot logged %d logins after the block", n)
			}
		})
	}
}

// TestConcurrentAttempts: ten wrong passwords at once on ten connections:
// Dovecot sees exactly five; five right passwords at once all log in
// without waiting for each other.
func TestConcurrentAttempts(t *testing.T) {
	env := testenv.Backends(t)
	for i, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			g := startGateway(t, env)
			src := fmt.Sprintf("127.0.3.%d", 20+i)
			mark := env.LogMark(t, "dovecot")
			answers := make(chan string, 10)
			var wg sync.WaitGroup
			for i := range 10 {
				c, err := dial(p.addr(g), src)
				if err != nil {
					t.Fatal(err)
				}
				defer c.c.Close()
				c.line()
				wg.Go(func() { answers <- p.login(c, "alice@example.test", fmt.Sprintf("guess%d", i)) })
			}
			wg.Wait()
			close(answers)
			failed, blocked := 0, 0
			for a := range answers {
				switch {
				case p.fail(a):
					failed++
				case p.block(a):
					blocked++
				default:
					t.Errorf("answer %q", a)
				}
			}
			if n := failures(t, env, mark, src); n != threshold || failed != threshold || blocked != 10-threshold {
				t.Fatalf("Dovecot checked %d wrong passwords; answers: %d failed, %d blocked; want %d, %d, %d",
					n, failed, blocked, threshold, threshold, 10-threshold)
			}

			// Five right passwords at once, from another address: none is
			// held, so the five finish together in about one login's time.
			right := fmt.Sprintf("127.0.3.%d", 30+i)
			var cs []*conn
			for range threshold {
				c, err := dial(p.addr(g), right)
				if err != nil {
					t.Fatal(err)
				}
				defer c.c.Close()
				c.line()
				cs = append(cs, c)
			}
			start := time.Now()
			for _, c := range cs {
				wg.Go(func() {
					if l := p.login(c, "alice@example.test", env.Users["alice@example.test"]); !p.ok(l) {
						t.Errorf("right password: %q", l)
					}
				})
			}
			wg.Wait()
			t.Logf("five parallel right logins took %v", time.Since(start))
		})
	}
}
