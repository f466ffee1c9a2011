package mailgate_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/decoy"
	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/imapproxy"
	"github.com/postern/postern/internal/mailgate"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/pop3proxy"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// The skeleton's behaviours, one table run against both protocols: IMAP
// with LOGIN and with AUTHENTICATE PLAIN, POP3 with USER/PASS and with
// AUTH PLAIN.

// protocol is one way of logging in through one gateway.
type protocol struct {
	name    string
	service string // the configuration's services line
	imap    bool
	sasl    bool // AUTHENTICATE/AUTH PLAIN, else LOGIN or USER/PASS
	// fail is the backend's own failure (after the tag in IMAP), with its
	// own wording; postern's default failure before the backend has said
	// one is defFail.
	fail, defFail string
	// unavailable is postern's answer when the backend fails, idle when
	// the client keeps silent.
	unavailable, idle string
	// greeting is a scripted backend's greeting (offering SASL PLAIN with
	// an initial response), capa its answer to CAPA ("" not asked);
	// garbage are login answers of a backend not speaking the protocol.
	greeting, capa string
	garbage        []string
	// refuse prefixes the engine's refusal text, ok a logged-in answer
	// (without the IMAP tag).
	refuse, ok string
}

var protocols = []protocol{
	{name: "imap LOGIN", service: `imap: { listen: ":143", backend: "127.0.0.1:1" }`, imap: true,
		fail: "NO [AUTHENTICATIONFAILED] Wrong credentials, says the backend", defFail: "NO [AUTHENTICATIONFAILED] Authentication failed.",
		unavailable: "* BYE [UNAVAILABLE] Server temporarily unavailable, try again later", idle: "* BYE Disconnected for inactivity",
		greeting: "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n", garbage: []string{"r1 WHATEVER garbage\r\n", "+ go on\r\n"},
		refuse: "* BYE ", ok: "OK"},
	{name: "imap AUTHENTICATE", service: `imap: { listen: ":143", backend: "127.0.0.1:1" }`, imap: true, sasl: true,
		fail: "NO [AUTHENTICATIONFAILED] Wrong credentials, says the backend", defFail: "NO [AUTHENTICATIONFAILED] Authentication failed.",
		unavailable: "* BYE [UNAVAILABLE] Server temporarily unavailable, try again later", idle: "* BYE Disconnected for inactivity",
		greeting: "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n", garbage: []string{"r1 WHATEVER garbage\r\n", "+ go on\r\n"},
		refuse: "* BYE ", ok: "OK"},
	{name: "pop3 USER/PASS", service: `pop3: { listen: ":110", backend: "127.0.0.1:1" }`,
		fail: "-ERR [AUTH] Wrong credentials, says the backend", defFail: "-ERR [AUTH] Authentication failed.",
		unavailable: "-ERR [SYS/TEMP] Server temporarily unavailable, try again later", idle: "-ERR Disconnected for inactivity.",
		greeting: "+OK ready\r\n", capa: "+OK\r\nSASL PLAIN\r\nUSER\r\n.\r\n", garbage: []string{"Hello? This is not POP3\r\n"},
		refuse: "-ERR [SYS/PERM] ", ok: "+OK"},
	{name: "pop3 AUTH", service: `pop3: { listen: ":110", backend: "127.0.0.1:1" }`, sasl: true,
		fail: "-ERR [AUTH] Wrong credentials, says the backend", defFail: "-ERR [AUTH] Authentication failed.",
		unavailable: "-ERR [SYS/TEMP] Server temporarily unavailable, try again later", idle: "-ERR Disconnected for inactivity.",
		greeting: "+OK ready\r\n", capa: "+OK\r\nSASL PLAIN\r\nUSER\r\n.\r\n", garbage: []string{"Hello? This is not POP3\r\n"},
		refuse: "-ERR [SYS/PERM] ", ok: "+OK"},
}

// newProxy returns p's gateway.
func (p protocol) newProxy(cfg mailgate.Config, eng mailgate.Engine, pol func() *policy.Policy, log *slog.Logger) gwtest.Server {
	if p.imap {
		cfg.Service = service.IMAP
		return imapproxy.New(cfg, eng, pol, log)
	}
	cfg.Service = service.POP3
	return pop3proxy.New(cfg, eng, pol, log)
}

// authBackend is an IMAP or POP3 server behind a PROXY v2 listener whose
// failed login has its own wording and its own delay, and which records
// the passwords it is given. With acceptAll it accepts any password (a
// passdb that checks none).
type authBackend struct {
	p         protocol
	addr      string
	delay     time.Duration
	acceptAll bool
	mu        sync.Mutex
	passwords []string
	hold      chan struct{} // logins wait here once counted (nil: none)
}

func startAuthBackend(t *testing.T, p protocol, delay time.Duration, acceptAll bool) *authBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }, ReadHeaderTimeout: 5 * time.Second}
	b := &authBackend{p: p, addr: ln.Addr().String(), delay: delay, acceptAll: acceptAll}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); b.serve(c) }()
		}
	}()
	t.Cleanup(func() { pl.Close(); wg.Wait() })
	return b
}

// check records a password and answers it: ok, or the failure after the
// backend's failure delay (auth_failure_delay).
func (b *authBackend) check(pass string) bool {
	b.mu.Lock()
	b.passwords = append(b.passwords, pass)
	hold := b.hold
	b.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if b.acceptAll || pass == "right-pass" {
		return true
	}
	time.Sleep(b.delay)
	return false
}

func plainPassword(blob string) (string, bool) {
	raw, _ := base64.StdEncoding.DecodeString(blob)
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 {
		return "", false
	}
	return parts[2], true
}

func (b *authBackend) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	if b.p.imap {
		c.Write([]byte("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN LITERAL+] Backend ready.\r\n"))
	} else {
		c.Write([]byte("+OK Backend ready.\r\n"))
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(l)
		if b.p.imap {
			if len(f) < 2 {
				return
			}
			tag, cmd := f[0], strings.ToUpper(f[1])
			switch {
			case cmd == "AUTHENTICATE" && len(f) == 4:
				pass, ok := plainPassword(f[3])
				switch {
				case !ok:
					c.Write([]byte(tag + " BAD bad blob\r\n"))
				case b.check(pass):
					c.Write([]byte(tag + " OK Logged in\r\n"))
				default:
					c.Write([]byte(tag + " " + b.p.fail + "\r\n"))
				}
			case cmd == "LOGOUT":
				c.Write([]byte("* BYE Logging out\r\n" + tag + " OK Logout completed.\r\n"))
				return
			default:
				c.Write([]byte(tag + " BAD Unknown command\r\n"))
			}
			continue
		}
		if len(f) == 0 {
			return
		}
		answer := func(pass string) {
			if b.check(pass) {
				c.Write([]byte("+OK Logged in.\r\n"))
			} else {
				c.Write([]byte(b.p.fail + "\r\n"))
			}
		}
		switch cmd := strings.ToUpper(f[0]); {
		case cmd == "CAPA":
			sasl := ""
			if b.p.sasl {
				sasl = "SASL PLAIN\r\n"
			}
			c.Write([]byte("+OK\r\nUSER\r\n" + sasl + ".\r\n"))
		case cmd == "USER":
			c.Write([]byte("+OK\r\n"))
		case cmd == "PASS" && len(f) == 2:
			answer(f[1])
		case cmd == "AUTH" && len(f) == 3 && b.p.sasl:
			pass, ok := plainPassword(f[2])
			if !ok {
				c.Write([]byte("-ERR bad blob\r\n"))
				continue
			}
			answer(pass)
		case cmd == "QUIT":
			c.Write([]byte("+OK Bye.\r\n"))
			return
		default:
			c.Write([]byte("-ERR Unknown command\r\n"))
		}
	}
}

// holdLogins makes logins wait, once counted, until the channel is closed.
func (b *authBackend) holdLogins() chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = make(chan struct{})
	return b.hold
}

// logins is the number of logins that have reached the backend.
func (b *authBackend) logins() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.passwords)
}

// waitLogins polls until n logins have reached the backend.
func (b *authBackend) waitLogins(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.logins() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d logins reached the backend, want %d", b.logins(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (b *authBackend) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.passwords...)
}

// logBuffer collects log output; safe for the gateway's goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type gateway struct {
	p    protocol
	addr string
	logs *logBuffer
	eng  *guard.Engine
}

// startGateway serves p's gateway in front of backend, under a login
// restriction that lets only 127.0.0.0/24 log in.
func startGateway(t *testing.T, p protocol, backend string, mutate ...func(*mailgate.Config)) *gateway {
	t.Helper()
	return startGatewayFailing(t, p, backend, 3, mutate...)
}

// startGatewayFailing is startGateway with failed_logins failed.
func startGatewayFailing(t *testing.T, p protocol, backend string, failed int, mutate ...func(*mailgate.Config)) *gateway {
	t.Helper()
	yaml := "services:\n  " + p.service + "\nintrusion_prevention:\n  imap_pop3: { failed_logins: " + strconv.Itoa(failed) + " }\n" +
		"login_restrictions: [ \"*=127.0.0.0/24\" ]\n"
	path := filepath.Join(t.TempDir(), "postern.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
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
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := mailgate.Config{Backend: relay.Dialer{Addr: backend, Proxy: "v2"}, PlaintextLogin: func(netip.Addr) bool { return true },
		PreAuthIdle: 5 * time.Second, BackendTimeout: 5 * time.Second, Loops: gwtest.Loops(t)}
	for _, m := range mutate {
		m(&cfg)
	}
	pol := func() *policy.Policy { return snap.Policy }
	srv := p.newProxy(cfg, eng, pol, log)
	addr := gwtest.Serve(t, srv)
	return &gateway{p: p, addr: addr, logs: logs, eng: eng}
}

// client is a raw client for exact assertions.
type client struct {
	t   *testing.T
	p   protocol
	c   net.Conn
	r   *bufio.Reader
	seq int
}

// dial connects from src and reads the greeting.
func (g *gateway) dial(t *testing.T, src string) *client {
	t.Helper()
	cl := g.dialRaw(t, src)
	cl.line()
	return cl
}

// dialRaw connects from src.
func (g *gateway) dialRaw(t *testing.T, src string) *client {
	t.Helper()
	c := gwtest.DialFrom(t, g.addr, src)
	return &client{t: t, p: g.p, c: c, r: bufio.NewReader(c)}
}

func (c *client) line() string {
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "EOF"
	}
	return strings.TrimRight(l, "\r\n")
}

func (c *client) cmd(line string) string {
	c.c.Write([]byte(line + "\r\n"))
	return c.line()
}

// until reads lines until one starts with prefix and returns it.
func (c *client) until(prefix string) string {
	for range 100 {
		l := c.line()
		if strings.HasPrefix(l, prefix) || l == "EOF" {
			return l
		}
	}
	c.t.Fatalf("no line starting with %q", prefix)
	return ""
}

// sendLogin sends carol's login (for POP3's USER/PASS, USER first and
// its answer read) and returns the IMAP tag.
func (c *client) sendLogin(pass string) string {
	blob := base64.StdEncoding.EncodeToString([]byte("\x00carol@example.test\x00" + pass))
	if !c.p.imap {
		if c.p.sasl {
			c.c.Write([]byte("AUTH PLAIN " + blob + "\r\n"))
		} else {
			c.cmd("USER carol@example.test")
			c.c.Write([]byte("PASS " + pass + "\r\n"))
		}
		return ""
	}
	c.seq++
	tag := "r" + string(rune('0'+c.seq))
	if c.p.sasl {
		c.c.Write([]byte(tag + " AUTHENTICATE PLAIN " + blob + "\r\n"))
	} else {
		c.c.Write([]byte(tag + " LOGIN carol@example.test " + pass + "\r\n"))
	}
	return tag
}

// answer logs in as carol and returns the first line after the login,
// without its IMAP tag.
func (c *client) answer(pass string) string {
	tag := c.sendLogin(pass)
	l := c.line()
	if rest, ok := strings.CutPrefix(l, tag+" "); ok && tag != "" {
		return rest
	}
	return l
}

// login logs in as carol and returns the answer, without its IMAP tag.
func (c *client) login(pass string) string {
	tag := c.sendLogin(pass)
	if tag == "" {
		return c.line()
	}
	l := c.until(tag + " ")
	if rest, ok := strings.CutPrefix(l, tag+" "); ok {
		return rest
	}
	return l
}

// closed reports whether the gateway closes the connection.
func (c *client) closed() bool {
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 100 {
		if _, err := c.r.ReadString('\n'); err != nil {
			return true
		}
	}
	return false
}

// A login the restriction refuses reads and takes as long as a wrong
// password from the first login after start: the backend is asked with a
// decoy password, never the client's; the same refused password again
// gets the same decoy (a repeat stays a repeat for the backend's auth
// penalty), and the session goes on.
func TestRefusalIsTheBackendsFailure(t *testing.T) {
	const delay = 200 * time.Millisecond
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			be := startAuthBackend(t, p, delay, false)
			g := startGateway(t, p, be.addr)

			// First login of all: refused (outside 127.0.0.0/24), right password.
			c := g.dial(t, "127.0.1.30")
			start := time.Now()
			refused := c.login("right-pass")
			took := time.Since(start)
			if refused != p.fail {
				t.Fatalf("first refused login: %q, want the backend's own %q", refused, p.fail)
			}
			if took < delay {
				t.Fatalf("first refused login answered in %v, before the backend's failure delay %v", took, delay)
			}
			// A wrong password: the same bytes.
			c2 := g.dial(t, "127.0.0.30")
			if wrong := c2.login("wrong-pass"); wrong != refused {
				t.Fatalf("wrong password %q, refused login %q: must be the same", wrong, refused)
			}
			pw := be.seen()
			if len(pw) != 2 || pw[1] != "wrong-pass" || len(pw[0]) != decoy.Size || pw[0] == "right-pass" {
				t.Fatalf("passwords the backend saw: %q, want a decoy then the wrong password", pw)
			}
			if got := c.login("right-pass"); got != p.fail {
				t.Fatalf("second refused login: %q", got)
			}
			if pw := be.seen(); len(pw) != 3 || pw[2] != pw[0] {
				t.Fatalf("passwords the backend saw: %q, want the same decoy twice", pw)
			}
		})
	}
}

// A backend that accepts the decoy (a passdb checking no password) never
// gets a refused login through: the client gets a failure and the
// connection closes.
func TestRefusalDecoyAccepted(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			be := startAuthBackend(t, p, 0, true)
			g := startGateway(t, p, be.addr)
			c := g.dial(t, "127.0.1.31")
			if got := c.login("right-pass"); got != p.defFail {
				t.Fatalf("refused login, decoy accepted: %q, want %q", got, p.defFail)
			}
			if !c.closed() {
				t.Fatal("the connection must close")
			}
			if !strings.Contains(g.logs.String(), "accepted the decoy password") {
				t.Fatalf("not logged:\n%s", g.logs.String())
			}
		})
	}
}

// scriptedBackend greets like a server offering SASL PLAIN, reads the
// PROXY header (and CAPA), reads the login and answers it with reply.
func scriptedBackend(t *testing.T, p protocol, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		hdr := make([]byte, 16+12)
		if _, err := io.ReadFull(r, hdr); err != nil { // PROXY v2, TCP over IPv4
			return
		}
		io.WriteString(c, p.greeting)
		if p.capa != "" {
			r.ReadString('\n') // CAPA
			io.WriteString(c, p.capa)
		}
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
		io.WriteString(c, reply)
		r.ReadByte() // until postern closes
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// Found by the end-to-end suite's fake backends: a login answer that is not
// the protocol's (IMAP: a tagged OK, NO or BAD; POP3: +OK or -ERR) was
// relayed to the client as it was. postern now says the backend is
// unavailable and closes.
func TestBackendGarbageLoginReply(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			for _, reply := range p.garbage {
				g := startGateway(t, p, scriptedBackend(t, p, reply))
				c := g.dial(t, "127.0.0.11")
				c.sendLogin("alice-pass-1")
				if l := c.line(); l != p.unavailable {
					t.Fatalf("backend answered %q: client got %q", reply, l)
				}
				if !c.closed() {
					t.Fatal("the connection must close")
				}
			}
		})
	}
}

// badGreetingBackend greets with greeting and reports whether postern then
// closed the connection (EOF within 3 s).
func badGreetingBackend(t *testing.T, greeting string) (string, <-chan bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	closed := make(chan bool, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			closed <- false
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		io.ReadFull(c, make([]byte, 16+12))
		io.WriteString(c, greeting)
		_, err = c.Read(make([]byte, 1))
		closed <- err == io.EOF
	}()
	return ln.Addr().String(), closed
}

// Found by the end-to-end suite's descriptor count: after a bad backend
// greeting postern kept the backend connection open until the process
// ended.
func TestBadGreetingClosesBackend(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			be, closed := badGreetingBackend(t, "HTTP/1.1 400 Bad Request\r\n")
			g := startGateway(t, p, be)
			c := g.dialRaw(t, "127.0.0.12")
			if l := c.line(); l != p.unavailable {
				t.Fatalf("bad greeting: %q", l)
			}
			if !<-closed {
				t.Fatal("postern did not close the backend connection after its bad greeting")
			}
		})
	}
}

// Found by the real-client end-to-end suite: a client that never answers
// a SASL continuation was dropped without a word; it now gets the same
// answer as one that never sends a command.
func TestSASLContinuationTimeout(t *testing.T) {
	for _, p := range protocols {
		if !p.sasl {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			be := startAuthBackend(t, p, 0, false)
			g := startGateway(t, p, be.addr, func(c *mailgate.Config) { c.PreAuthIdle = 300 * time.Millisecond })
			c := g.dial(t, "127.0.0.10")
			cmd := "AUTH PLAIN"
			if p.imap {
				cmd = "a1 AUTHENTICATE PLAIN"
			}
			if l := c.cmd(cmd); l != "+ " {
				t.Fatalf("continuation: %q", l)
			}
			if l := c.line(); l != p.idle {
				t.Fatalf("after the idle timeout: %q", l)
			}
			if !c.closed() {
				t.Fatal("the connection must close")
			}
		})
	}
}

// imaps and pop3s check grant and blocks before the TLS handshake
// (gwtest says how).
func TestImplicitTLSRefusesBeforeHandshake(t *testing.T) {
	for _, p := range protocols {
		if p.sasl {
			continue // one row per gateway
		}
		t.Run(p.name, func(t *testing.T) {
			service := "pop3"
			if p.imap {
				service = "imap"
			}
			gwtest.ImplicitTLSRefusesBeforeHandshake(t, service, "imap_pop3", func(snap *snapshot.Snapshot, eng *guard.Engine) gwtest.Server {
				return p.newProxy(mailgate.Config{ImplicitTLS: true, Backend: relay.Dialer{Addr: "127.0.0.1:1"},
					PlaintextLogin: func(netip.Addr) bool { return true }, PreAuthIdle: 5 * time.Second, BackendTimeout: time.Second},
					eng, func() *policy.Policy { return snap.Policy }, slog.New(slog.DiscardHandler))
			})
		})
	}
}

// Twenty connections opened before the block (close_all off): after the
// fifth failure none of them gets a login to the backend, the right
// password included, and each closes.
func TestBlockReachesOpenConnections(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			be := startAuthBackend(t, p, 0, false)
			g := startGatewayFailing(t, p, be.addr, 5)
			var cs []*client
			for range 20 {
				cs = append(cs, g.dial(t, "127.0.0.31"))
			}
			for i := range 5 {
				if l := cs[i].answer(fmt.Sprintf("wrong%d", i)); l != p.fail {
					t.Fatalf("guess %d: %q", i, l)
				}
			}
			for i, c := range cs[5:] {
				if l := c.answer("right-pass"); !strings.HasPrefix(l, p.refuse+"Blocked (failed logins)") {
					t.Fatalf("connection %d after the block: %q", i+5, l)
				}
				if !c.closed() {
					t.Fatalf("connection %d stays open after a refused attempt", i+5)
				}
			}
			if n := be.logins(); n != 5 {
				t.Fatalf("%d logins reached the backend, want 5", n)
			}
		})
	}
}

// Ten wrong logins at once on ten connections, failed_logins 5: exactly
// five reach the backend; the other five are refused as blocked.
func TestConcurrentWrongLogins(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			be := startAuthBackend(t, p, 0, false)
			g := startGatewayFailing(t, p, be.addr, 5)
			release := be.holdLogins()
			var wg sync.WaitGroup
			answers := make(chan string, 10)
			for i := range 10 {
				c := g.dial(t, "127.0.0.32")
				wg.Go(func() { answers <- c.answer(fmt.Sprintf("wrong%d", i)) })
			}
			be.waitLogins(t, 5)
			close(release)
			wg.Wait()
			close(answers)
			failed, blocked := 0, 0
			for a := range answers {
				switch {
				case a == p.fail:
					failed++
				case strings.HasPrefix(a, p.refuse+"Blocked"):
					blocked++
				default:
					t.Errorf("answer %q", a)
				}
			}
			if n := be.logins(); n != 5 || failed != 5 || blocked != 5 {
				t.Fatalf("%d logins reached the backend, %d failed, %d blocked; want 5, 5, 5", n, failed, blocked)
			}
		})
	}
}

// Five right logins at once with failed_logins 5 are all at the backend
// together: none waits.
func TestParallelRightLogins(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			be := startAuthBackend(t, p, 0, false)
			g := startGatewayFailing(t, p, be.addr, 5)
			release := be.holdLogins()
			var wg sync.WaitGroup
			for i := range 5 {
				c := g.dial(t, "127.0.0.33")
				wg.Go(func() {
					if l := c.answer("right-pass"); !strings.HasPrefix(l, p.ok) {
						t.Errorf("login %d: %q", i, l)
					}
				})
			}
			be.waitLogins(t, 5) // all five held in the backend at once
			close(release)
			wg.Wait()
		})
	}
}

// A login the backend took but never answered properly (Dovecot dropping
// a connection in its failure delay when its connection queue is full)
// counts as a failure: the backend may have checked the password, and the
// slot it held must not let one more guess through uncounted.
func TestUnansweredLoginCounts(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			g := startGatewayFailing(t, p, scriptedBackend(t, p, p.garbage[0]), 1)
			c := g.dial(t, "127.0.0.44")
			if l := c.answer("guess"); l != p.unavailable {
				t.Fatalf("answer %q", l)
			}
			if b, ok := g.eng.BlockOf(netip.MustParseAddr("127.0.0.44")); !ok || b.Reason != reason.Login {
				t.Fatalf("the unanswered attempt was not counted: %+v", b)
			}
		})
	}
}

// Sessions run on event loops from the greeting to the login, with the
// same answers, and leave them only where they would wait for something
// else. After the login the relay goes on on the loop while bytes move,
// and hands an idle session to the idle poller.
func TestSessionsOnEventLoops(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			loops, err := evloop.Start(2, nil)
			if err != nil {
				t.Skip(err) // not Linux
			}
			be := startAuthBackend(t, p, 0, false)
			g := startGatewayFailing(t, p, be.addr, 3, func(c *mailgate.Config) { c.Loops = loops })
			t.Cleanup(loops.Close) // after the gateway's cleanup: sessions end first
			st := loops.Stats()
			ended := func(n int64) {
				t.Helper()
				for deadline := time.Now().Add(10 * time.Second); st.Ended.Load() < n; {
					if time.Now().After(deadline) {
						t.Fatalf("%d handlers ended on their loop, want %d", st.Ended.Load(), n)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			unknown, quit, bye := "FOO", "QUIT", "+OK Bye."
			if p.imap {
				unknown, quit, bye = "x FOO", "y LOGOUT", "* BYE Logging out"
			}
			// Logged in, a command at once, and the end: all on the loop.
			c := g.dial(t, "127.0.0.51")
			if l := c.answer("wrong-pass"); l != p.fail {
				t.Errorf("wrong password: %q", l)
			}
			if l := c.answer("right-pass"); !strings.HasPrefix(l, p.ok) {
				t.Errorf("right password: %q", l)
			}
			if l := c.cmd(unknown); !strings.Contains(l, "Unknown command") {
				t.Errorf("relayed command: %q", l)
			}
			if l := c.cmd(quit); l != bye {
				t.Errorf("relayed %s: %q", quit, l)
			}
			if !c.closed() {
				t.Error("the session did not end with the backend's")
			}
			ended(1)
			// Logged in and idle: handed to the idle poller, still relayed.
			c2 := g.dial(t, "127.0.0.52")
			if l := c2.answer("right-pass"); !strings.HasPrefix(l, p.ok) {
				t.Errorf("right password: %q", l)
			}
			ended(2)
			if l := c2.cmd(unknown); !strings.Contains(l, "Unknown command") {
				t.Errorf("relayed command after the hand-off: %q", l)
			}
			// Before login, waiting for a command.
			idle := g.dial(t, "127.0.0.53")
			if l := idle.cmd(map[bool]string{true: "a NOOP", false: "CAPA"}[p.imap]); !strings.Contains(l, "OK") {
				t.Errorf("NOOP or CAPA: %q", l)
			}
			if st.Started.Load() != 3 || st.Detached.Load() != 0 {
				t.Errorf("on the loops: %d started, %d left them; want 3 and 0", st.Started.Load(), st.Detached.Load())
			}
		})
	}
}
