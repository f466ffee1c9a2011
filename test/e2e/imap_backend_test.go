package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// Backend failures for IMAP and POP3: a gateway of its own whose imap and
// pop3 services relay to scripted fake servers (behaving by the client
// address in postern's PROXY header, 192.0.2.N: behaviour N) and whose
// imaps and pop3s relay to a closed port. The client must get IMAP's
// "* BYE [UNAVAILABLE] …" or POP3's "-ERR [SYS/TEMP] …", postern must log
// why, and its descriptors must come back to the count before.

const (
	mfGarbageGreeting = 1 + iota // not IMAP/POP3 at all
	mfCloseAtOnce                // EOF before any greeting
	mfSilent                     // never greets (timeouts.backend is 2 s)
	mfGarbageLogin               // greets, answers the login with garbage
	mfLongLine                   // greets, answers the login with a 10000-byte line
	mfDiesInLogin                // greets, closes when the login arrives
	mfHangsOnLogin               // greets, never answers the login
)

// fakeMail is a scripted IMAP or POP3 server behind a PROXY v2 header.
type fakeMail struct {
	ln   net.Listener
	pop3 bool
	wg   sync.WaitGroup
}

func startFakeMail(t *testing.T, pop3 bool) *fakeMail {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeMail{ln: ln, pop3: pop3}
	var mu sync.Mutex
	var conns []net.Conn
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				f.handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeMail) handle(c net.Conn) {
	src, err := readProxyV2(c)
	if err != nil || !src.Is4() {
		return
	}
	mode := int(src.As4()[3])
	r := bufio.NewReader(c)
	switch mode {
	case mfGarbageGreeting:
		fmt.Fprint(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
		return
	case mfCloseAtOnce:
		return
	case mfSilent:
		r.ReadByte() // until postern gives up
		return
	}
	if f.pop3 {
		fmt.Fprint(c, "+OK fake ready.\r\n")
		if l, _ := r.ReadString('\n'); strings.HasPrefix(l, "CAPA") {
			fmt.Fprint(c, "+OK\r\nSASL PLAIN\r\nUSER\r\n.\r\n")
		}
	} else {
		fmt.Fprint(c, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] fake ready.\r\n")
	}
	if _, err := r.ReadString('\n'); err != nil { // the login
		return
	}
	switch mode {
	case mfGarbageLogin:
		if f.pop3 {
			fmt.Fprint(c, "Hello? This is not POP3\r\n")
		} else {
			for range 1100 {
				fmt.Fprint(c, "garbage without a tag\r\n")
			}
		}
		r.ReadByte()
	case mfLongLine:
		fmt.Fprint(c, strings.Repeat("x", 10000)+"\r\n")
		r.ReadByte()
	case mfDiesInLogin:
	case mfHangsOnLogin:
		r.ReadByte()
	}
}

func testMailBackendFaults(t *testing.T, s *mailSuite) {
	imapFake, pop3Fake := startFakeMail(t, false), startFakeMail(t, true)
	closed := testenv.RefusingAddr(t) // connections there are refused
	gw := startGateway(t, gwConfig{Backend: s.env.SMTPProxy, BackendWait: "2s",
		IMAP: imapFake.ln.Addr().String(), IMAPS: closed, POP3: pop3Fake.ln.Addr().String(), POP3S: closed})
	base := gw.fdsAtRest(t)

	const imapBye = "* BYE [UNAVAILABLE] Server temporarily unavailable, try again later"
	const pop3Err = "-ERR [SYS/TEMP] Server temporarily unavailable, try again later"
	for _, tc := range []struct {
		name  string
		mode  int
		login bool // the fault comes after the greeting, at the login
		log   string
		slow  bool // after timeouts.backend
	}{
		{"GarbageGreeting", mfGarbageGreeting, false, "backend unavailable", false},
		{"CloseBeforeGreeting", mfCloseAtOnce, false, "backend unavailable", false},
		{"SilentBackend", mfSilent, false, "backend unavailable", true},
		{"GarbageLoginReply", mfGarbageLogin, true, "backend failed during login", false},
		{"LongLoginReply", mfLongLine, true, "backend failed during login", false},
		{"DiesInLogin", mfDiesInLogin, true, "backend failed during login", false},
		{"HangsOnLogin", mfHangsOnLogin, true, "backend failed during login", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := fmt.Sprintf("192.0.2.%d", tc.mode)
			for _, proto := range []string{"imap", "pop3"} {
				t0 := time.Now()
				if proto == "imap" {
					c := dialRaw(t, gw.IMAP, ap(src, 40001))
					if tc.login {
						c.line("* OK [CAPABILITY IMAP4rev1 ")
						c.send("a LOGIN " + bob + " " + bobPass + "\r\n")
					}
					c.line(imapBye)
					if !c.closed() {
						t.Fatal("IMAP connection still open")
					}
				} else {
					c := dialRaw(t, gw.POP3, ap(src, 40002))
					if tc.login {
						c.line("+OK fake ready.")
						c.send("USER " + bob + "\r\n")
						c.line("+OK")
						c.send("PASS " + bobPass + "\r\n")
					}
					c.line(pop3Err)
					if !c.closed() {
						t.Fatal("POP3 connection still open")
					}
				}
				if d := time.Since(t0); tc.slow && d < 1500*time.Millisecond || d > 10*time.Second {
					t.Fatalf("%s: the answer came after %v", proto, d)
				}
				if n := len(gw.logLines(1, tc.log, "service="+proto, "client="+src)); n != 1 {
					t.Fatalf("%s: postern logged %d %q lines for %s:\n%s", proto, n, tc.log, src, gw.logTail(10))
				}
			}
		})
	}
	t.Run("BackendDown", func(t *testing.T) {
		for _, tc := range []struct{ proto, addr, want string }{
			{"imap", gw.IMAPS, imapBye},
			{"pop3", gw.POP3S, pop3Err},
		} {
			r := mailc(t, tc.proto, tc.addr, ap("192.0.2.50", 40001), "implicit", mop("noop"))
			if e := r.at(0).Error; !strings.Contains(e, tc.want) {
				t.Fatalf("%s with the backend down: %v, want %q", tc.proto, r, tc.want)
			}
		}
		if n := len(gw.logLines(2, "backend unavailable", "client=192.0.2.50", "connection refused")); n != 2 {
			t.Fatalf("postern logged %d \"backend unavailable … connection refused\" lines:\n%s", n, gw.logTail(10))
		}
	})
	gw.fdsBackTo(t, base, "the backend faults")
	gw.alive(t)
}
