//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// startSMTPChecks turns -smtp-checks on for the test, with the local
// domain example.test (see startChecks).
func startSMTPChecks(t *testing.T) (logged func() string) {
	t.Helper()
	return startChecks(t, `services:
  smtp: { listen: "127.0.0.1:1", backend: "127.0.0.1:1", backend_proxy: v2 }
local_domains: "example.test"
`, false, true)
}

// fakePostfix serves one SMTP session on ln and reports every command it
// got and the message, or an error.
func fakePostfix(ln net.Listener, res chan<- string) {
	var got []string
	defer func() { res <- strings.Join(got, "|") }()
	c, err := ln.Accept()
	if err != nil {
		got = append(got, err.Error())
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if _, err := proxyproto.Read(br); err != nil {
		got = append(got, "PROXY header: "+err.Error())
		return
	}
	io.WriteString(c, "220 fake.test ESMTP\r\n")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			got = append(got, "read: "+err.Error())
			return
		}
		line = strings.TrimSuffix(line, "\r\n")
		got = append(got, line)
		switch {
		case strings.HasPrefix(line, "EHLO"):
			io.WriteString(c, "250-fake.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n250-STARTTLS\r\n250-ETRN\r\n250 8BITMIME\r\n")
		case line == "RCPT TO:<nobody@example.test>":
			io.WriteString(c, "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n")
		case line == "DATA":
			io.WriteString(c, "354 End data with <CR><LF>.<CR><LF>\r\n")
			var msg strings.Builder
			for !strings.HasSuffix(msg.String(), "\r\n.\r\n") {
				l, err := br.ReadString('\n')
				if err != nil {
					got = append(got, "message: "+err.Error())
					return
				}
				msg.WriteString(l)
			}
			got = append(got, fmt.Sprintf("message %d bytes", msg.Len()))
			io.WriteString(c, "250 2.0.0 Ok: queued as ABC123\r\n")
		case line == "QUIT":
			io.WriteString(c, "221 2.0.0 Bye\r\n")
			return
		default:
			io.WriteString(c, "250 2.1.0 Ok\r\n")
		}
	}
}

// TestSMTPChecked: with -smtp-checks the loop relays the greeting, filters
// EHLO's reply, sends MAIL and RCPT in canonical form (the domain in lower case), refuses a
// recipient outside the local domains itself, passes the backend's 550,
// relays a message whose end comes in a separate write, logs it, and
// relays QUIT.
func TestSMTPChecked(t *testing.T) { testSMTPChecked(t) }

// TestSMTPCheckedStack is TestSMTPChecked with each session's reads on a
// coroutine of its own (-costs stack).
func TestSMTPCheckedStack(t *testing.T) {
	costs.stack.Store(true) // until startLoop's cleanup
	before := coroReads.Load()
	testSMTPChecked(t)
	if coroReads.Load() == before {
		t.Error("no read was handled on a coroutine")
	}
}

func testSMTPChecked(t *testing.T) {
	logged := startSMTPChecks(t)
	ln := backendListener(t)
	addr := startLoop(t, service{name: "smtp", backend: netip.MustParseAddrPort(ln.Addr().String())}, false)
	res := make(chan string, 1)
	go fakePostfix(ln, res)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline(t, c)
	br := bufio.NewReader(c)
	reply := func() string {
		t.Helper()
		var all []string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reply: %v (so far %q)", err, all)
			}
			all = append(all, strings.TrimSuffix(l, "\r\n"))
			if len(l) < 4 || l[3] != '-' {
				return strings.Join(all, "|")
			}
		}
	}
	if r := reply(); r != "220 fake.test ESMTP" {
		t.Fatalf("greeting %q", r)
	}
	body := "Subject: x\r\n\r\n" + strings.Repeat("line of the message\r\n", 500)
	for _, s := range []struct{ send, want string }{
		{"EHLO client.test\r\n", "250-fake.test|250-PIPELINING|250-SIZE 10240000|250 8BITMIME"},
		{"MAIL FROM: <Bob@Sender.test> BODY=8BITMIME\r\n", "250 2.1.0 Ok"},
		{"RCPT TO:<alice@elsewhere.test>\r\n", "554 5.7.1 <alice@elsewhere.test>: Relay access denied"},
		{"RCPT TO:<nobody@example.test>\r\n", "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown"},
		{"rcpt to:<alice@example.test>\r\n", "250 2.1.0 Ok"},
		{"DATA\r\n", "354 End data with <CR><LF>.<CR><LF>"},
		{body + "\r\n.", ""},
		{"\r\n", "250 2.0.0 Ok: queued as ABC123"},
		{"QUIT\r\n", "221 2.0.0 Bye"},
	} {
		if _, err := io.WriteString(c, s.send); err != nil {
			t.Fatal(err)
		}
		if s.want == "" {
			continue
		}
		if r := reply(); r != s.want {
			t.Errorf("after %q: %q, want %q", strings.TrimSpace(s.send[:min(len(s.send), 40)]), r, s.want)
		}
	}
	want := "EHLO client.test|MAIL FROM:<Bob@sender.test> BODY=8BITMIME|RCPT TO:<nobody@example.test>|RCPT TO:<alice@example.test>|DATA|message " +
		fmt.Sprint(len(body)+5) + " bytes|QUIT"
	if got := <-res; got != want {
		t.Errorf("backend got\n%s\nwant\n%s", got, want)
	}
	line := " level=INFO msg=message service=smtp client=127.0.0.1 sender=Bob@sender.test recipients=1 size=" + fmt.Sprint(len(body)+5) + ` reply=250 status=2.0.0 text="Ok: queued as ABC123" duration=`
	log := waitLogged(t, logged, func(log string) bool { return strings.Contains(log, line) })
	if !strings.Contains(log, line) {
		t.Errorf("log:\n%s", log)
	}
}

// TestSMTPDataEnd: the message's end is found wherever the chunks split
// it, and nothing after it is relayed with the message.
func TestSMTPDataEnd(t *testing.T) {
	msg := "a\r\nb\r\n..c\r\n.\r\nQUIT\r\n"
	for cut := 1; cut < len(msg); cut++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		l := &loop{ep: -1}
		b := &sock{fd: int32(fds[0])}
		c := &sock{fd: -1, client: true, peer: b}
		b.peer = c
		k := &checked{smtp: &smtpChecked{state: smData}}
		for _, part := range []string{msg[:cut], msg[cut:]} {
			if k.smtp.state == smData {
				l.smtpData(c, k, []byte(part))
			} else {
				c.in = append(c.in, part...)
			}
		}
		buf := make([]byte, 64)
		n, _ := unix.Read(fds[1], buf)
		if string(buf[:max(n, 0)]) != "a\r\nb\r\n..c\r\n.\r\n" || k.smtp.state != smFinal || string(c.in) != "QUIT\r\n" || k.smtp.size != 14 {
			t.Errorf("cut at %d: relayed %q, state %d, left %q, size %d", cut, buf[:max(n, 0)], k.smtp.state, c.in, k.smtp.size)
		}
		unix.Close(fds[0])
		unix.Close(fds[1])
	}
}
