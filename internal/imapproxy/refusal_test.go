package imapproxy

import (
	"bufio"
	"encoding/base64"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/decoy"
)

// authBackend is an IMAP server behind a PROXY v2 listener whose failed
// login has its own wording (no trailing period, unlike Dovecot's) and its
// own delay, and which records the passwords it is given. With acceptAll
// it accepts any password (a passdb that checks none).
type authBackend struct {
	addr      string
	delay     time.Duration
	acceptAll bool
	mu        sync.Mutex
	passwords []string
}

const authBackendFail = "NO [AUTHENTICATIONFAILED] Wrong credentials, says the backend"

func startAuthBackend(t *testing.T, delay time.Duration, acceptAll bool) *authBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }, ReadHeaderTimeout: 5 * time.Second}
	b := &authBackend{addr: ln.Addr().String(), delay: delay, acceptAll: acceptAll}
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

func (b *authBackend) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	c.Write([]byte("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN LITERAL+] Backend ready.\r\n"))
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(l)
		if len(f) < 2 {
			return
		}
		tag, cmd := f[0], strings.ToUpper(f[1])
		switch {
		case cmd == "AUTHENTICATE" && len(f) == 4:
			raw, _ := base64.StdEncoding.DecodeString(f[3])
			parts := strings.Split(string(raw), "\x00")
			if len(parts) != 3 {
				c.Write([]byte(tag + " BAD bad blob\r\n"))
				continue
			}
			b.mu.Lock()
			b.passwords = append(b.passwords, parts[2])
			b.mu.Unlock()
			if b.acceptAll || parts[2] == "right-pass" {
				c.Write([]byte(tag + " OK Logged in\r\n"))
				continue
			}
			time.Sleep(b.delay) // the backend's failure delay (auth_failure_delay)
			c.Write([]byte(tag + " " + authBackendFail + "\r\n"))
		case cmd == "LOGOUT":
			c.Write([]byte("* BYE Logging out\r\n" + tag + " OK Logout completed.\r\n"))
			return
		default:
			c.Write([]byte(tag + " BAD Unknown command\r\n"))
		}
	}
}

func (b *authBackend) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.passwords...)
}

// A login the restriction refuses reads and takes as long as a wrong
// password from the first login after start: the backend is asked with a
// decoy password, never the client's.
func TestRefusalIsTheBackendsFailure(t *testing.T) {
	const delay = 200 * time.Millisecond
	be := startAuthBackend(t, delay, false)
	h := newHarness(t, baseCfg+"login_restrictions: [ \"*=127.0.0.0/24\" ]\n", func(c *Config) { c.Backend.Addr = be.addr })

	// First login of all: refused (outside 127.0.0.0/24), right password.
	c := h.dial("127.0.1.30")
	c.line()
	start := time.Now()
	c.send("r1 LOGIN carol@example.test right-pass\r\n")
	refused := c.until("r1 ")
	took := time.Since(start)
	if refused != "r1 "+authBackendFail {
		t.Fatalf("first refused login: %q, want the backend's own %q", refused, "r1 "+authBackendFail)
	}
	if took < delay {
		t.Fatalf("first refused login answered in %v, before the backend's failure delay %v", took, delay)
	}
	// A wrong password: the same bytes.
	c2 := h.dial("127.0.0.30")
	c2.line()
	c2.send("r1 LOGIN carol@example.test wrong-pass\r\n")
	if wrong := c2.until("r1 "); wrong != refused {
		t.Fatalf("wrong password %q, refused login %q: must be the same", wrong, refused)
	}
	pw := be.seen()
	if len(pw) != 2 || pw[1] != "wrong-pass" || len(pw[0]) != decoy.Size || pw[0] == "right-pass" {
		t.Fatalf("passwords the backend saw: %q, want a decoy then the wrong password", pw)
	}
	// The same refused password again: the same decoy (a repeat stays a
	// repeat for the backend's auth penalty); the session goes on.
	c.send("r2 AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00carol@example.test\x00right-pass")) + "\r\n")
	if got := c.until("r2 "); got != "r2 "+authBackendFail {
		t.Fatalf("second refused login: %q", got)
	}
	if pw := be.seen(); len(pw) != 3 || pw[2] != pw[0] {
		t.Fatalf("passwords the backend saw: %q, want the same decoy twice", pw)
	}
}

// A backend that accepts the decoy (a passdb checking no password) never
// gets a refused login through: the client gets a failure and the
// connection closes.
func TestRefusalDecoyAccepted(t *testing.T) {
	be := startAuthBackend(t, 0, true)
	h := newHarness(t, baseCfg+"login_restrictions: [ \"*=127.0.0.0/24\" ]\n", func(c *Config) { c.Backend.Addr = be.addr })
	c := h.dial("127.0.1.31")
	c.line()
	c.send("r1 LOGIN carol@example.test right-pass\r\n")
	if got := c.until("r1 "); got != "r1 NO [AUTHENTICATIONFAILED] Authentication failed." {
		t.Fatalf("refused login, decoy accepted: %q", got)
	}
	if !c.closed() {
		t.Fatal("the connection must close")
	}
	if !strings.Contains(h.logs.String(), "accepted the decoy password") {
		t.Fatalf("not logged:\n%s", h.logs.String())
	}
}
