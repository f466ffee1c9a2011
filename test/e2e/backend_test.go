package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// Backend failures: a gateway of its own whose smtp and smtps services
// relay to a scripted fake backend and whose submission service relays to
// a closed port. The fake reads postern's PROXY header and behaves by the
// client address in it (192.0.2.N: behaviour N), so one listener plays
// every fault.

// fakeBackend is a scripted SMTP server behind a PROXY v2 header.
type fakeBackend struct {
	ln net.Listener
	wg sync.WaitGroup

	mu          sync.Mutex
	transcripts map[string]*bytes.Buffer // client address → bytes received after the header
}

const (
	fakeGarbageGreeting = 1 + iota // not SMTP at all
	fakeCloseAtOnce                // EOF before any greeting
	fake554Greeting                // "554 no service"
	fakeDiesInDATA                 // closes after the first bytes of the message (DATA or BDAT)
	fakeDiesInBDAT                 // the same, for the client's BDAT test
	fakeGarbageEHLO                // answers EHLO with garbage
	fakeHangsOnMAIL                // never answers MAIL
	fakeLongReply                  // an EHLO reply line of 5000 bytes
	fakeRecorder                   // a well-behaved server offering SMTPUTF8; records everything
	fakeFinal452                   // answers the end of data with 452
)

func startFake(t *testing.T) *fakeBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBackend{ln: ln, transcripts: map[string]*bytes.Buffer{}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				f.handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeBackend) transcript(addr string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b := f.transcripts[addr]; b != nil {
		return b.String()
	}
	return ""
}

// readProxyV2 reads a PROXY v2 header and returns the source address.
func readProxyV2(r io.Reader) (netip.Addr, error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return netip.Addr{}, err
	}
	if !bytes.Equal(h[:12], []byte("\r\n\r\n\x00\r\nQUIT\n")) || h[12] != 0x21 {
		return netip.Addr{}, fmt.Errorf("not a PROXY v2 PROXY header: % x", h)
	}
	body := make([]byte, binary.BigEndian.Uint16(h[14:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return netip.Addr{}, err
	}
	switch {
	case h[13] == 0x11 && len(body) >= 12:
		return netip.AddrFrom4([4]byte(body[:4])), nil
	case h[13] == 0x21 && len(body) >= 36:
		return netip.AddrFrom16([16]byte(body[:16])).Unmap(), nil
	}
	return netip.Addr{}, fmt.Errorf("PROXY v2 family %#x", h[13])
}

type teeRecorder struct {
	f    *fakeBackend
	addr string
}

func (w teeRecorder) Write(p []byte) (int, error) {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	b := w.f.transcripts[w.addr]
	if b == nil {
		b = new(bytes.Buffer)
		w.f.transcripts[w.addr] = b
	}
	return b.Write(p)
}

func (f *fakeBackend) handle(c net.Conn) {
	src, err := readProxyV2(c)
	if err != nil {
		fmt.Fprintf(c, "421 4.3.0 fake: %v\r\n", err)
		return
	}
	r := bufio.NewReader(io.TeeReader(c, teeRecorder{f, src.String()}))
	mode := 0
	if src.Is4() && src.As4()[0] == 192 && src.As4()[1] == 0 && src.As4()[2] == 2 {
		mode = int(src.As4()[3])
	}
	say := func(s string) { io.WriteString(c, s) }
	switch mode {
	case fakeGarbageGreeting:
		say("HELLO I AM NOT SMTP\r\n")
		return
	case fakeCloseAtOnce:
		return
	case fake554Greeting:
		say("554 5.3.2 fake.backend no service today\r\n")
		return
	}
	say("220 fake.backend ESMTP\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			switch mode {
			case fakeGarbageEHLO:
				say("what is this\r\n")
				continue
			case fakeLongReply:
				say("250-fake.backend " + strings.Repeat("x", 5000) + "\r\n250 PIPELINING\r\n")
				continue
			}
			say("250-fake.backend\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n")
		case "MAIL":
			if mode == fakeHangsOnMAIL {
				io.Copy(io.Discard, r) // until postern gives up and closes
				return
			}
			say("250 2.1.0 Ok\r\n")
		case "RCPT":
			say("250 2.1.5 Ok\r\n")
		case "DATA":
			say("354 End data with <CR><LF>.<CR><LF>\r\n")
			if mode == fakeDiesInDATA || mode == fakeDiesInBDAT {
				r.ReadString('\n')
				return
			}
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			if mode == fakeFinal452 {
				say("452 4.3.1 Insufficient system storage (fake)\r\n")
			} else {
				say("250 2.0.0 Ok: queued as FAKE" + strconv.Itoa(mode) + "\r\n")
			}
		case "BDAT":
			f := strings.Fields(arg)
			n, _ := strconv.Atoi(f[0])
			if mode == fakeDiesInDATA || mode == fakeDiesInBDAT {
				io.CopyN(io.Discard, r, int64(min(n, 10)))
				return
			}
			io.CopyN(io.Discard, r, int64(n))
			if len(f) > 1 {
				say("250 2.0.0 Ok: queued as FAKEBDAT\r\n")
			} else {
				say(fmt.Sprintf("250 2.0.0 Ok: %d octets\r\n", n))
			}
		case "QUIT":
			say("221 2.0.0 Bye\r\n")
			return
		default:
			say("250 2.0.0 Ok\r\n")
		}
	}
}

func testBackendFaults(t *testing.T, s *suite) {
	fake := startFake(t)
	closed := testenv.RefusingAddr(t) // connections there are refused
	gw := startGateway(t, gwConfig{Backend: fake.ln.Addr().String(), Submission: closed, Rspamd: s.rspamd, BackendWait: "2s"})
	src := func(n int) netip.AddrPort { return ap(fmt.Sprintf("192.0.2.%d", n), 40000) }
	msg := richMessage(uniq("fake"))
	big := append(append([]byte(nil), msg[:len(msg)-2]...), bytes.Repeat([]byte(strings.Repeat("b", 78)+"\r\n"), 3000)...) // ~240 KB
	msgFile, bigFile := writeFile(t, "m.eml", msg), writeFile(t, "big.eml", big)
	unavailable := "4.3.0 " + gwHost + " Service temporarily unavailable, try again later"
	lost := "4.4.2 " + gwHost + " Error: lost connection to the mail server, try again later"
	tempFail := "4.3.0 Error: the mail server failed, message not accepted; try again later"

	t.Run("Down", func(t *testing.T) {
		r := python(t, gw.Submission, ap("198.51.100.80", 40000), false, ehlo())
		if got := r.reply(0); got.Code != 421 || got.Msg != unavailable {
			t.Fatalf("backend down: %v, want 421 %s%v", got, unavailable, r)
		}
		gw.alive(t)
	})
	for _, tc := range []struct {
		name string
		mode int
		want string
	}{
		{"GarbageGreeting", fakeGarbageGreeting, unavailable},
		{"ClosedBeforeGreeting", fakeCloseAtOnce, unavailable},
		{"554Greeting", fake554Greeting, unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := python(t, gw.SMTP, src(tc.mode), false, ehlo())
			if got := r.reply(0); got.Code != 421 || got.Msg != tc.want {
				t.Fatalf("%v, want 421 %s%v", got, tc.want, r)
			}
			gw.alive(t)
		})
	}
	t.Run("GarbageEHLOReply", func(t *testing.T) {
		r := python(t, gw.SMTP, src(fakeGarbageEHLO), false, ehlo())
		if got := r.reply(1); got.Code != 421 || got.Msg != lost {
			t.Fatalf("%v, want 421 %s%v", got, lost, r)
		}
		gw.alive(t)
	})
	t.Run("LongReplyLine", func(t *testing.T) {
		r := python(t, gw.SMTPS, src(fakeLongReply), true, ehlo())
		if got := r.reply(1); got.Code != 421 || got.Msg != lost {
			t.Fatalf("%v, want 421 %s%v", got, lost, r)
		}
		gw.alive(t)
	})
	t.Run("HangsOnMAIL", func(t *testing.T) {
		start := time.Now()
		r := python(t, gw.SMTP, src(fakeHangsOnMAIL), false, ehlo(), mail("bob@example.test"))
		if got := r.reply(2); got.Code != 421 || got.Msg != lost {
			t.Fatalf("%v, want 421 %s%v", got, lost, r)
		}
		if el := time.Since(start); el < 1500*time.Millisecond || el > 15*time.Second {
			t.Fatalf("answered after %v, want about timeouts.backend = 2s", el)
		}
		gw.alive(t)
	})
	t.Run("DiesInDATA", func(t *testing.T) {
		r := python(t, gw.SMTP, src(fakeDiesInDATA), false, ehlo(), mail("bob@example.test"), rcpt(alice), data(bigFile), quit())
		if got := r.reply(4); got.Code != 451 || got.Msg != tempFail {
			t.Fatalf("%v, want 451 %s%v", got, tempFail, r)
		}
		gw.alive(t)
	})
	t.Run("DiesInBDAT", func(t *testing.T) {
		r := python(t, gw.SMTP, src(fakeDiesInBDAT), false, ehlo(), mail("bob@example.test"), rcpt(alice),
			bdat(bigFile, 100000, len(big)-100000), quit())
		if got := r.reply(4); got.Code != 451 || got.Msg != tempFail {
			t.Fatalf("%v, want 451 %s%v", got, tempFail, r)
		}
		gw.alive(t)
	})
	t.Run("Final452Relayed", func(t *testing.T) {
		r := python(t, gw.SMTP, src(fakeFinal452), false, ehlo(), mail("bob@example.test"), rcpt(alice), data(msgFile), quit())
		if got := r.reply(4); got.Code != 452 || got.Msg != "4.3.1 Insufficient system storage (fake)" {
			t.Fatalf("%v, want the backend's 452 relayed unchanged%v", got, r)
		}
	})
	// SMTPUTF8, which the real chain cannot deliver (see testDeliverUTF8):
	// offered because the backend offers it, and the envelope and message
	// bytes arrive exactly as the client sent them.
	t.Run("SMTPUTF8Relayed", func(t *testing.T) {
		a := src(fakeRecorder)
		u8 := crlf("From: Jörg <jörg@other.test>\nTo: <alice@example.test>\nSubject: Grüße ✓\n\n.dot line\nKörper ✓\n")
		file := writeFile(t, "u8.eml", u8)
		r := python(t, gw.SMTP, a, false, ehlo(), mail("jörg@other.test", "SMTPUTF8", "BODY=8BITMIME"),
			rcpt(alice, "NOTIFY=NEVER"), data(file), quit())
		if !strings.Contains(r.reply(1).Msg, "\nSMTPUTF8\n") {
			t.Fatalf("postern does not offer SMTPUTF8 although the backend does%v", r)
		}
		if got := r.reply(4); got.Code != 250 || got.Msg != fmt.Sprintf("2.0.0 Ok: queued as FAKE%d", fakeRecorder) {
			t.Fatalf("%v%v", got, r)
		}
		// smtplib writes its commands in lower case: postern relays them
		// in its canonical form, the UTF-8 address and parameters as sent.
		want := "MAIL FROM:<jörg@other.test> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<alice@example.test> NOTIFY=NEVER\r\nDATA\r\n" +
			strings.Replace(string(u8), "\r\n.dot", "\r\n..dot", 1) + ".\r\nQUIT\r\n"
		if got := fake.transcript(a.Addr().String()); !strings.HasSuffix(got, want) {
			t.Fatalf("the backend received\n%q\nwant it to end with\n%q", got, want)
		}
	})
}
