package policyd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/service"
)

func session(addr, port string) []string {
	return []string{"client_address=" + addr, "client_port=" + port, "client_name=unknown", "instance=1.2.3"}
}

func with(base []string, more ...string) []string {
	return append(append([]string(nil), base...), more...)
}

// A blocked client is refused at CONNECT with postern's text; a clean one
// gets DUNNO.
func TestPostfixConnect(t *testing.T) {
	eng := newEngine(t, "")
	addr := servePostfix(t, NewPostfix(eng, Options{}))
	c := dialPostfix(t, addr)
	if a := c.ask(with(session("192.0.2.1", "4000"), "protocol_state=CONNECT")...); a != "DUNNO" {
		t.Fatalf("clean client: %q", a)
	}
	if _, err := eng.BlockManual(context.Background(), netip.MustParsePrefix("192.0.2.9/32"), time.Hour, "test", "test"); err != nil {
		t.Fatal(err)
	}
	if a := c.ask(with(session("192.0.2.9", "4001"), "protocol_state=CONNECT")...); a != "554 5.7.1 Blocked (manual)" {
		t.Fatalf("blocked client at CONNECT: %q", a)
	}
	if a := c.ask(with(session("192.0.2.9", "4001"), "protocol_state=RCPT", "recipient=bob@example.com", "sender=x@y.org")...); !strings.HasPrefix(a, "421 4.7.1 Blocked (manual): closing connection") {
		t.Fatalf("blocked client at RCPT: %q", a)
	}
}

// Relay probing: recipients outside local_domains without SASL are
// answered like reject_unauth_destination and counted (Y); the block
// closes the session at the next recipient and refuses the next
// connection.
func TestPostfixRelay(t *testing.T) {
	eng := newEngine(t, "")
	c := dialPostfix(t, servePostfix(t, NewPostfix(eng, Options{})))
	s := session("198.51.100.7", "5000")
	c.ask(with(s, "protocol_state=CONNECT")...)
	if a := c.ask(with(s, "protocol_state=RCPT", "sender=a@b.org", "recipient=bob@example.com")...); a != "DUNNO" {
		t.Fatalf("local recipient: %q", a)
	}
	if a := c.ask(with(s, "protocol_state=RCPT", "sender=a@b.org", "recipient=victim@elsewhere.invalid")...); a != "554 5.7.1 Relay access denied" {
		t.Fatalf("relay: %q", a)
	}
	if blocked(eng, "198.51.100.7") {
		t.Fatal("blocked after one relay attempt")
	}
	// The same question again (another restriction list) counts once.
	c.ask(with(s, "protocol_state=RCPT", "sender=a@b.org", "recipient=victim@elsewhere.invalid")...)
	if blocked(eng, "198.51.100.7") {
		t.Fatal("a repeated question counted twice")
	}
	c.ask(with(s, "protocol_state=RCPT", "sender=a@b.org", "recipient=victim@Elsewhere.invalid")...)
	if !blocked(eng, "198.51.100.7") {
		t.Fatal("not blocked after two relay attempts")
	}
	if a := c.ask(with(s, "protocol_state=RCPT", "sender=a@b.org", "recipient=bob@example.com")...); a != "421 4.7.1 Blocked (relay denials): closing connection" {
		t.Fatalf("after the block: %q", a)
	}
	if a := c.ask(with(session("198.51.100.7", "5001"), "protocol_state=CONNECT")...); a != "554 5.7.1 Blocked (relay denials)" {
		t.Fatalf("next connection: %q", a)
	}
	// An authenticated client relays.
	s2 := session("198.51.100.8", "5000")
	for range 3 {
		if a := c.ask(with(s2, "protocol_state=RCPT", "sasl_username=bob@example.com", "recipient=x@elsewhere.invalid")...); a != "DUNNO" {
			t.Fatalf("authenticated relay: %q", a)
		}
	}
}

// A tarpit account blocks the client at once (A); the login restriction
// refuses an account sending from where it may not log in and counts L;
// a message over message_size blocks (M).
func TestPostfixTriggers(t *testing.T) {
	eng := newEngine(t, "")
	c := dialPostfix(t, servePostfix(t, NewPostfix(eng, Options{})))
	if a := c.ask(with(session("203.0.113.1", "1"), "protocol_state=RCPT", "recipient=trap@example.com")...); a != "421 4.7.1 Blocked (tarpit account): closing connection" {
		t.Fatalf("tarpit account: %q", a)
	}
	if !blocked(eng, "203.0.113.1") {
		t.Fatal("tarpit account: not blocked")
	}
	// alice may log in from 127.0.0.0/16 only.
	s := session("203.0.113.2", "1")
	for i := range 3 {
		a := c.ask(with(s, "protocol_state=RCPT", "sasl_username=Alice@example.com", "recipient=x"+strconv.Itoa(i)+"@elsewhere.invalid")...)
		want := "554 5.7.1 Access denied"
		if i == 2 {
			want = "421 4.7.1 Blocked (failed logins): closing connection"
			if a != want && a != "554 5.7.1 Access denied" {
				t.Fatalf("restricted account, attempt %d: %q", i+1, a)
			}
			continue
		}
		if a != want {
			t.Fatalf("restricted account, attempt %d: %q", i+1, a)
		}
	}
	if !blocked(eng, "203.0.113.2") {
		t.Fatal("restricted account: not blocked after 3 refusals (failed_logins 3)")
	}
	if a := c.ask(with(session("127.0.0.5", "1"), "protocol_state=RCPT", "sasl_username=alice@example.com", "recipient=x@elsewhere.invalid")...); a != "DUNNO" {
		t.Fatalf("restricted account from its network: %q", a)
	}
	s = session("203.0.113.3", "1")
	if a := c.ask(with(s, "protocol_state=END-OF-MESSAGE", "size=999")...); a != "DUNNO" {
		t.Fatalf("small message: %q", a)
	}
	c.ask(with(s, "protocol_state=END-OF-MESSAGE", "size=5000")...)
	if !blocked(eng, "203.0.113.3") {
		t.Fatal("large message: not blocked")
	}
}

// CONNECT requests count connections per minute (I); the SMTP session
// is the policy connection's: the same client and port is one session.
func TestPostfixConnections(t *testing.T) {
	eng := newEngine(t, "")
	c := dialPostfix(t, servePostfix(t, NewPostfix(eng, Options{})))
	for i := range 60 {
		port := "3"
		if i%2 == 1 {
			port = "2" // alternating ports: a new session each time
		}
		s := session("192.0.2.50", port)
		c.ask(with(s, "protocol_state=CONNECT")...)
		c.ask(with(s, "protocol_state=RCPT", "recipient=bob@example.com")...)
	}
	if !blocked(eng, "192.0.2.50") {
		t.Fatal("60 connections a minute (limit 50): not blocked")
	}
	// The same session asked many times counts once.
	for range 60 {
		c.ask(with(session("192.0.2.51", "1"), "protocol_state=RCPT", "recipient=bob@example.com")...)
	}
	if blocked(eng, "192.0.2.51") {
		t.Fatal("one session counted as many connections")
	}
}

// The service's grant applies when postern has the service (imap here is
// inline); a port postern does not serve is judged by blocks alone.
func TestPostfixServiceGrant(t *testing.T) {
	eng := newEngine(t, "")
	v := eng.Admit(netip.MustParseAddr("192.0.2.1"), service.IMAP)
	if v.Action == 0 {
		t.Fatal("imap grant not applied in this configuration")
	}
	if pfService("587") != service.Submission || pfService("465") != service.SMTPS || pfService("") != service.SMTP {
		t.Fatal("pfService")
	}
}

// Only granted peers are answered; the connection limit closes one
// connection more at once; garbage, huge lines and too many attributes
// close the connection with nothing answered; a slow client is cut off by
// the idle timeout.
func TestPostfixBadPeers(t *testing.T) {
	eng := newEngine(t, "")
	p := NewPostfix(eng, Options{MaxConns: 2, IdleTimeout: 300 * time.Millisecond,
		Grant: func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") }})
	addr := servePostfix(t, p)
	closed := func(name string, c net.Conn) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) || len(b) != 0 {
			t.Fatalf("%s: read %q, %v; want a close without an answer", name, b, err)
		}
	}
	// Not granted: 127.0.0.2 as source.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	if c, err := d.Dial("tcp", addr); err == nil {
		closed("not granted", c)
		c.Close()
	}
	for _, tc := range []struct{ name, send string }{
		{"garbage", "hello\n\n"},
		{"empty request", "\n"},
		{"huge line", "request=" + strings.Repeat("x", 10000) + "\n\n"},
		{"too many attributes", strings.Repeat("a=b\n", 200) + "\n"},
		{"too long", strings.Repeat("a="+strings.Repeat("b", 4000)+"\n", 20) + "\n"},
		{"slow", "request=smtpd_access_policy\n"},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(tc.send))
		closed(tc.name, c)
		c.Close()
	}
	// Connection limit: two held, the third closed at once.
	for end := time.Now().Add(5 * time.Second); p.Stats().Active.Load() != 0; {
		if time.Now().After(end) {
			t.Fatalf("%d connections still open", p.Stats().Active.Load())
		}
		time.Sleep(time.Millisecond)
	}
	c1, c2 := dialPostfix(t, addr), dialPostfix(t, addr)
	c1.ask("client_address=192.0.2.1", "protocol_state=CONNECT")
	c2.ask("client_address=192.0.2.1", "protocol_state=CONNECT")
	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	closed("over the limit", c3)
	if p.Stats().Refused.Load() < 2 || p.Stats().Bad.Load() < 6 {
		t.Errorf("stats: refused %d, bad %d", p.Stats().Refused.Load(), p.Stats().Bad.Load())
	}
	// Unknown request kinds and unknown addresses get DUNNO.
	c1.c.Write([]byte("request=other\nclient_address=192.0.2.1\n\n"))
	if l, _ := c1.r.ReadString('\n'); l != "action=DUNNO\n" {
		t.Fatalf("unknown request: %q", l)
	}
	c1.r.ReadString('\n')
	if a := c1.ask("client_address=unknown", "protocol_state=RCPT"); a != "DUNNO" {
		t.Fatalf("unknown address: %q", a)
	}
}

// A decision that takes longer than decision_timeout is answered DUNNO.
func TestPostfixSlowDecision(t *testing.T) {
	eng := newEngine(t, "")
	p := NewPostfix(&slowEngine{Engine: eng, delay: 500 * time.Millisecond}, Options{DecisionTimeout: 50 * time.Millisecond})
	c := dialPostfix(t, servePostfix(t, p))
	if _, err := eng.BlockManual(context.Background(), netip.MustParsePrefix("192.0.2.9/32"), time.Hour, "test", "test"); err != nil {
		t.Fatal(err)
	}
	if a := c.ask("client_address=192.0.2.9", "protocol_state=CONNECT"); a != "DUNNO" {
		t.Fatalf("slow decision: %q", a)
	}
	if p.Stats().NoOpinion.Load() != 1 {
		t.Fatalf("no-opinion count %d", p.Stats().NoOpinion.Load())
	}
}

// readRequest reads what Postfix writes and nothing else.
func TestReadRequest(t *testing.T) {
	var req pfRequest
	r := bufio.NewReaderSize(strings.NewReader("request=smtpd_access_policy\r\nprotocol_state=RCPT\nclient_address=1.2.3.4\nrecipient=a=b@c\nccert_subject=\n\n"), maxAttrLine)
	if err := readRequest(r, &req); err != nil {
		t.Fatal(err)
	}
	if req.request != "smtpd_access_policy" || req.state != "RCPT" || req.client != "1.2.3.4" || req.rcpt != "a=b@c" {
		t.Fatalf("%+v", req)
	}
	if err := readRequest(r, &req); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
	for _, in := range []string{"request=x\n", "x\n\n", "\n", "request=x"} {
		if err := readRequest(bufio.NewReaderSize(strings.NewReader(in), maxAttrLine), &req); err == nil || err == io.EOF {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=1.2.3.4\n\n"))
	f.Add([]byte("a=b\r\n\r\n"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var req pfRequest
		r := bufio.NewReaderSize(strings.NewReader(string(b)), maxAttrLine)
		for range 10 {
			if err := readRequest(r, &req); err != nil {
				return
			}
		}
	})
}
