package smtpproxy

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

// authMTA is an SMTP server behind a PROXY v2 listener whose failed AUTH
// has its own wording (Postfix with Cyrus SASL, not postern's default) and
// its own delay, and which records the passwords it is given. With
// acceptAll it accepts any password.
type authMTA struct {
	addr      string
	delay     time.Duration
	acceptAll bool
	mu        sync.Mutex
	passwords []string
}

const authMTAFail = "535 5.7.8 Error: authentication failed: authentication failure"

func startAuthMTA(t *testing.T, delay time.Duration, acceptAll bool) *authMTA {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }, ReadHeaderTimeout: 5 * time.Second}
	m := &authMTA{addr: ln.Addr().String(), delay: delay, acceptAll: acceptAll}
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
			go func() { defer wg.Done(); m.serve(c) }()
		}
	}()
	t.Cleanup(func() { pl.Close(); wg.Wait() })
	return m
}

func (m *authMTA) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	c.Write([]byte("220 mx.example.test ESMTP\r\n"))
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
		case cmd == "EHLO":
			c.Write([]byte("250-mx.example.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"))
		case cmd == "AUTH" && len(f) == 3:
			raw, _ := base64.StdEncoding.DecodeString(f[2])
			parts := strings.Split(string(raw), "\x00")
			if len(parts) != 3 {
				c.Write([]byte("501 5.5.2 Cannot decode response\r\n"))
				continue
			}
			m.mu.Lock()
			m.passwords = append(m.passwords, parts[2])
			m.mu.Unlock()
			if m.acceptAll || parts[2] == "right-pass" {
				c.Write([]byte("235 2.7.0 Authentication successful\r\n"))
				continue
			}
			time.Sleep(m.delay) // the backend's failure delay
			c.Write([]byte(authMTAFail + "\r\n"))
		case cmd == "QUIT":
			c.Write([]byte("221 2.0.0 Bye\r\n"))
			return
		default:
			c.Write([]byte("250 2.0.0 Ok\r\n"))
		}
	}
}

func (m *authMTA) seen() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.passwords...)
}

const restrictedIPS = baseIPS + "local_domains: \"example.test\"\nlogin_restrictions:\n  - \"@example.test=127.0.0.0/24\"\n"

func plainBlob(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// A login the restriction refuses reads and takes as long as a wrong
// password from the first login after start: the backend is asked with a
// decoy password, never the client's.
func TestRefusalIsTheBackendsFailure(t *testing.T) {
	const delay = 200 * time.Millisecond
	mta := startAuthMTA(t, delay, false)
	h := newHarness(t, restrictedIPS, func(c *Config) { c.Backend = mta.addr }, nil)

	// First login of all: refused (outside 127.0.0.0/24), right password.
	c := h.dial("127.0.1.34")
	c.expect(220)
	c.cmd("EHLO x", 250)
	start := time.Now()
	refused := c.cmd("AUTH PLAIN "+plainBlob("carol@example.test", "right-pass"), 535)
	took := time.Since(start)
	if refused != authMTAFail {
		t.Fatalf("first refused login: %q, want the backend's own %q", refused, authMTAFail)
	}
	if took < delay {
		t.Fatalf("first refused login answered in %v, before the backend's failure delay %v", took, delay)
	}
	// AUTH LOGIN, refused: the same decoy for the same password.
	c.cmd("AUTH LOGIN", 334)
	c.cmd(base64.StdEncoding.EncodeToString([]byte("carol@example.test")), 334)
	if got := c.cmd(base64.StdEncoding.EncodeToString([]byte("right-pass")), 535); got != refused {
		t.Fatalf("refused AUTH LOGIN: %q", got)
	}
	// A wrong password: the same bytes.
	c2 := h.dial("127.0.0.34")
	c2.expect(220)
	c2.cmd("EHLO x", 250)
	if wrong := c2.cmd("AUTH PLAIN "+plainBlob("carol@example.test", "wrong-pass"), 535); wrong != refused {
		t.Fatalf("wrong password %q, refused login %q: must be the same", wrong, refused)
	}
	pw := mta.seen()
	if len(pw) != 3 || pw[2] != "wrong-pass" || len(pw[0]) != decoy.Size || pw[0] == "right-pass" || pw[1] != pw[0] {
		t.Fatalf("passwords the backend saw: %q, want the same decoy twice then the wrong password", pw)
	}
	// The right password from inside gets through.
	c3 := h.dial("127.0.0.35")
	c3.expect(220)
	c3.cmd("EHLO x", 250)
	c3.cmd("AUTH PLAIN "+plainBlob("carol@example.test", "right-pass"), 235)
}

// A backend that accepts the decoy never gets a refused login through.
func TestRefusalDecoyAccepted(t *testing.T) {
	mta := startAuthMTA(t, 0, true)
	h := newHarness(t, restrictedIPS, func(c *Config) { c.Backend = mta.addr }, nil)
	c := h.dial("127.0.1.36")
	c.expect(220)
	c.cmd("EHLO x", 250)
	if got := c.cmd("AUTH PLAIN "+plainBlob("carol@example.test", "right-pass"), 535); got != "535 5.7.8 Error: authentication failed: (reason unavailable)" {
		t.Fatalf("refused login, decoy accepted: %q", got)
	}
	c.send("MAIL FROM:<carol@example.test>\r\n")
	if code, text := c.read(); code != 0 || !strings.HasPrefix(text, "EOF") {
		t.Fatalf("after a refused login whose decoy the backend accepted: %d %q, want the connection closed", code, text)
	}
	if !strings.Contains(h.logs.String(), "accepted the decoy password") {
		t.Fatalf("not logged:\n%s", h.logs.String())
	}
}
