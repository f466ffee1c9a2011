package mailclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/tlsconf"
)

func TestLiteralSize(t *testing.T) {
	for _, c := range []struct {
		line string
		n    int64
		ok   bool
	}{
		{"* 1 FETCH (BODY[] {20001234}", 20001234, true},
		{"* 1 FETCH (BODY[] {0}", 0, true},
		{"* 1 FETCH (FLAGS (\\Seen))", 0, false},
		{"{}", 0, false},
		{"x {-1}", 0, false},
		{"x {12a}", 0, false},
		{"}", 0, false},
	} {
		n, ok := LiteralSize([]byte(c.line))
		if n != c.n || ok != c.ok {
			t.Errorf("LiteralSize(%q) = %d, %v; want %d, %v", c.line, n, ok, c.n, c.ok)
		}
	}
}

// script is one scripted server exchange: after reading a line starting
// with in (empty: at once), the server writes out.
type script []struct{ in, out string }

// serve accepts one connection on ln and plays s; the PROXY header's
// source (if any) is sent on src. It returns the first mismatch.
func serve(ln net.Listener, s script, tc *tls.Config, src chan<- netip.AddrPort) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var pc net.Conn = c
	if src != nil {
		p := proxyproto.NewConn(c)
		pc = p
		h := p.ProxyHeader()
		if h == nil {
			return errors.New("no PROXY header")
		}
		src <- h.SourceAddr.(*net.TCPAddr).AddrPort()
	}
	var rw net.Conn = pc
	if tc != nil {
		t := tls.Server(pc, tc)
		if err := t.Handshake(); err != nil {
			return err
		}
		rw = t
	}
	r := bufio.NewReader(rw)
	for _, step := range s {
		if step.in != "" {
			l, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			if !strings.HasPrefix(l, step.in) || !strings.HasSuffix(l, "\r\n") {
				return errors.New("server read " + l + ", want " + step.in)
			}
		}
		if _, err := io.WriteString(rw, step.out); err != nil {
			return err
		}
	}
	return nil
}

func listen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func run(t *testing.T, s script, tc *tls.Config, src chan<- netip.AddrPort) (net.Listener, <-chan error) {
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- serve(ln, s, tc, src) }()
	return ln, done
}

func TestIMAPOverProxyHeader(t *testing.T) {
	src := make(chan netip.AddrPort, 1)
	ln, done := run(t, script{
		{"", "* OK ready\r\n"},
		{"b1 LOGIN ", "b1 OK logged in\r\n"},
		{"b2 FETCH 1 BODY.PEEK[]", "* 1 FETCH (BODY[] {5}\r\nhello)\r\nb2 OK done\r\n"},
		{"b3 SELECT nope", "b3 NO no such mailbox\r\n"},
	}, nil, src)
	from := netip.MustParseAddr("127.0.0.9")
	c, err := Dial(context.Background(), Target{Addr: ln.Addr().String(), Proxy: true}, from, time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := <-src; got.Addr() != from {
		t.Errorf("the PROXY header announced %v, want %v", got, from)
	}
	if err := c.IMAPGreeting(); err != nil {
		t.Fatal(err)
	}
	if err := c.IMAPCmd("LOGIN a b", nil); err != nil {
		t.Fatal(err)
	}
	var lit string
	if err := c.IMAPCmd("FETCH 1 BODY.PEEK[]", func(r io.Reader, n int64) error {
		b, err := io.ReadAll(io.LimitReader(r, n))
		lit = string(b)
		return err
	}); err != nil || lit != "hello" {
		t.Fatalf("FETCH: literal %q, %v", lit, err)
	}
	if err := c.IMAPCmd("SELECT nope", nil); !errors.Is(err, ErrReply) {
		t.Fatalf("a NO completion: %v, want ErrReply", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestSMTPAndPOPOverTLS(t *testing.T) {
	dir := t.TempDir()
	cf, kf, err := tlsconf.SelfSigned(dir, []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	server := &tls.Config{Certificates: []tls.Certificate{cert}}
	client := &tls.Config{ServerName: "localhost", InsecureSkipVerify: true, ClientSessionCache: tls.NewLRUClientSessionCache(1)}

	ln, done := run(t, script{
		{"", "220-mx ESMTP\r\n220 ready\r\n"},
		{"EHLO x", "250-mx\r\n250 SIZE 1000\r\n"},
		{"MAIL FROM:<a@b>", "550 5.7.1 no\r\n"},
	}, server, nil)
	c, err := Dial(context.Background(), Target{Addr: ln.Addr().String(), TLS: client}, netip.Addr{}, time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.C.(*tls.Conn); !ok || c.Resumed {
		t.Errorf("connection %T resumed=%v, want a full TLS handshake", c.C, c.Resumed)
	}
	if err := c.SMTPReply(220); err != nil {
		t.Fatal(err)
	}
	if err := c.SMTPCmd("EHLO x", 250); err != nil {
		t.Fatal(err)
	}
	if err := c.SMTPCmd("MAIL FROM:<a@b>", 250); !errors.Is(err, ErrReply) || !strings.Contains(err.Error(), "550") {
		t.Fatalf("a 550 reply: %v, want ErrReply naming it", err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	ln, done = run(t, script{
		{"", "+OK pop\r\n"},
		{"USER u", "+OK\r\n"},
		{"PASS p", "-ERR wrong\r\n"},
	}, server, nil)
	c, err = Dial(context.Background(), Target{Addr: ln.Addr().String(), TLS: client}, netip.Addr{}, time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Resumed {
		t.Error("the second handshake with the session cache did not resume")
	}
	if err := c.POPLogin("u", "p"); !errors.Is(err, ErrReply) || !strings.Contains(err.Error(), "PASS") {
		t.Fatalf("a refused PASS: %v, want ErrReply naming PASS", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
