package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/postern/postern/internal/testserver"
)

// closesAfterHeader is a backend that reads postern's PROXY header and
// closes the connection, as Dovecot does for a peer outside
// haproxy_trusted_networks. It returns the address and a channel that
// reports each header read.
func closesAfterHeader(t *testing.T) (string, <-chan bool) {
	t.Helper()
	got := make(chan bool, 4)
	addr := testserver.TCP(t, func(c net.Conn) {
		_, err := proxyproto.Read(bufio.NewReader(c))
		got <- err == nil
	})
	return addr, got
}

var testClient = netip.MustParseAddrPort("203.0.113.7:40000")

func TestExplainFirstReadAfterHeader(t *testing.T) {
	addr, got := closesAfterHeader(t)
	d := Dialer{Addr: addr, Service: "imap", Timeout: 5 * time.Second}
	c, err := d.Dial(context.Background(), testClient, netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !<-got {
		t.Fatal("the backend read no header")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = bufio.NewReader(c).Peek(1)
	err = d.Hop(c).ExplainFirstRead(err)
	var ae *AdviceError
	if !errors.As(err, &ae) {
		t.Fatalf("no advice: %v", err)
	}
	want := "Dovecot at " + addr + " closed the connection after postern's PROXY v2 header: set `haproxy_trusted_networks` to include 127.0.0.1 (see examples/dovecot/conf.d/99-postern.conf)"
	if ae.Advice != want {
		t.Errorf("advice\n got %q\nwant %q", ae.Advice, want)
	}
	if !errors.Is(err, io.EOF) && !ClosedEarly(err) {
		t.Errorf("the cause is lost: %v", err)
	}
}

func TestDialImplicitTLSAfterHeaderClose(t *testing.T) {
	// A pop3s backend (PROXY header, then TLS) that refuses the header:
	// the handshake fails at once, and the error carries the advice.
	addr, _ := closesAfterHeader(t)
	d := Dialer{Addr: addr, Proxy: "v1", Service: "pop3s", Timeout: 5 * time.Second,
		TLS: &tls.Config{InsecureSkipVerify: true}}
	_, err := d.Dial(context.Background(), testClient, netip.AddrPort{})
	var ae *AdviceError
	if !errors.As(err, &ae) || !strings.Contains(ae.Advice, "Dovecot at "+addr+" closed the connection after postern's PROXY v1 header") {
		t.Fatalf("dial error without advice: %v", err)
	}
}

func TestExplainFirstReadWithoutHeader(t *testing.T) {
	h := Hop{Service: "smtp", Addr: "127.0.0.1:10025", Proxy: "xclient"}
	err := h.ExplainFirstRead(io.EOF)
	if err == nil || !strings.Contains(err.Error(), "Postfix at 127.0.0.1:10025 closed the connection before its greeting and postern sends no PROXY header (backend_proxy: xclient)") {
		t.Errorf("got %v", err)
	}
	if err := h.ExplainFirstRead(os.ErrDeadlineExceeded); err == nil || !strings.Contains(err.Error(), "sent no greeting") {
		t.Errorf("timeout: %v", err)
	}
	// With a header, a timeout is not a header mistake: no advice.
	h.Proxy = "v2"
	if err := h.ExplainFirstRead(os.ErrDeadlineExceeded); err != os.ErrDeadlineExceeded {
		t.Errorf("timeout with a header: %v", err)
	}
	if a := h.ExplainGreeting(421, "4.3.0 mx Server local error"); a != "" {
		t.Errorf("421 with a header explained: %q", a)
	}
	h.Proxy = "none"
	if a := h.ExplainGreeting(421, "4.3.0 mx Server local error"); !strings.Contains(a, "`backend_proxy: v2` on services.smtp") {
		t.Errorf("421 without a header: %q", a)
	}
	if a := h.ExplainGreeting(220, "mx ESMTP"); a != "" {
		t.Errorf("220 explained: %q", a)
	}
}

func TestAdviceExamplesExist(t *testing.T) {
	for _, p := range []string{ExampleDovecot, ExamplePostfixMaster, ExamplePostfixMain} {
		if _, err := os.Stat(filepath.Join("..", "..", p)); err != nil {
			t.Errorf("advice names %s: %v", p, err)
		}
	}
}
