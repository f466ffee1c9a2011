package pop3proxy

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

// authBackend is a POP3 server behind a PROXY v2 listener whose failed
// login has its own wording and its own delay, and which records the
// passwords it is given. With acceptAll it accepts any password. With sasl
// it offers SASL PLAIN (else postern logs in with USER and PASS).
type authBackend struct {
	addr      string
	delay     time.Duration
	acceptAll bool
	sasl      bool
	mu        sync.Mutex
	passwords []string
}

const authBackendFail = "-ERR [AUTH] Wrong credentials, says the backend"

func startAuthBackend(t *testing.T, delay time.Duration, acceptAll, sasl bool) *authBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }, ReadHeaderTimeout: 5 * time.Second}
	b := &authBackend{addr: ln.Addr().String(), delay: delay, acceptAll: acceptAll, sasl: sasl}
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
	c.Write([]byte("+OK Backend ready.\r\n"))
	check := func(pass string) {
		b.mu.Lock()
		b.passwords = append(b.passwords, pass)
		b.mu.Unlock()
		if b.acceptAll || pass == "right-pass" {
			c.Write([]byte("+OK Logged in.\r\n"))
			return
		}
		time.Sleep(b.delay) // the backend's failure delay
		c.Write([]byte(authBackendFail + "\r\n"))
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(l)
		if len(f) == 0 {
			return
		}
		switch cmd := strings.ToUpper(f[0]); {
		case cmd == "CAPA":
			sasl := ""
			if b.sasl {
				sasl = "SASL PLAIN\r\n"
			}
			c.Write([]byte("+OK\r\nUSER\r\n" + sasl + ".\r\n"))
		case cmd == "USER":
			c.Write([]byte("+OK\r\n"))
		case cmd == "PASS" && len(f) == 2:
			check(f[1])
		case cmd == "AUTH" && len(f) == 3 && b.sasl:
			raw, _ := base64.StdEncoding.DecodeString(f[2])
			parts := strings.Split(string(raw), "\x00")
			if len(parts) != 3 {
				c.Write([]byte("-ERR bad blob\r\n"))
				continue
			}
			check(parts[2])
		case cmd == "QUIT":
			c.Write([]byte("+OK Logging out.\r\n"))
			return
		default:
			c.Write([]byte("-ERR Unknown command\r\n"))
		}
	}
}

func (b *authBackend) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.passwords...)
}

const restrictedCfg = cfg + "login_restrictions: [ \"*=127.0.0.0/24\" ]\n"

// A login the restriction refuses reads and takes as long as a wrong
// password from the first login after start: the backend is asked with a
// decoy password, never the client's. Both ways of logging in.
func TestRefusalIsTheBackendsFailure(t *testing.T) {
	const delay = 200 * time.Millisecond
	for _, sasl := range []bool{false, true} {
		be := startAuthBackend(t, delay, false, sasl)
		h := newHarnessIdle(t, restrictedCfg, be.addr, 5*time.Second)
		login := func(c *client, pass string) string {
			if sasl {
				return c.cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00carol@example.test\x00"+pass)))
			}
			c.cmd("USER carol@example.test")
			return c.cmd("PASS " + pass)
		}
		// First login of all: refused (outside 127.0.0.0/24), right password.
		c := h.dial(t, "127.0.1.32")
		c.cmd("")
		start := time.Now()
		refused := login(c, "right-pass")
		took := time.Since(start)
		if refused != authBackendFail {
			t.Fatalf("sasl %v: first refused login: %q, want the backend's own %q", sasl, refused, authBackendFail)
		}
		if took < delay {
			t.Fatalf("sasl %v: first refused login answered in %v, before the backend's failure delay %v", sasl, took, delay)
		}
		c2 := h.dial(t, "127.0.0.32")
		c2.cmd("")
		if wrong := login(c2, "wrong-pass"); wrong != refused {
			t.Fatalf("sasl %v: wrong password %q, refused login %q: must be the same", sasl, wrong, refused)
		}
		if pw := be.seen(); len(pw) != 2 || pw[1] != "wrong-pass" || len(pw[0]) != decoy.Size || pw[0] == "right-pass" {
			t.Fatalf("sasl %v: passwords the backend saw: %q, want a decoy then the wrong password", sasl, pw)
		}
	}
}

// A backend that accepts the decoy never gets a refused login through.
func TestRefusalDecoyAccepted(t *testing.T) {
	be := startAuthBackend(t, 0, true, true)
	h := newHarnessIdle(t, restrictedCfg, be.addr, 5*time.Second)
	c := h.dial(t, "127.0.1.33")
	c.cmd("")
	if got := c.cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00carol@example.test\x00right-pass"))); got != "-ERR [AUTH] Authentication failed." {
		t.Fatalf("refused login, decoy accepted: %q", got)
	}
	if got := c.cmd("STAT"); got != "EOF" {
		t.Fatalf("the connection must close; STAT got %q", got)
	}
	if !strings.Contains(h.logs.String(), "accepted the decoy password") {
		t.Fatalf("not logged:\n%s", h.logs.String())
	}
}
