package smtpproxy

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/testenv"
	"github.com/postern/postern/internal/testserver"
)

// fakePostfix serves each connection with handle until the test ends.
func fakePostfix(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	addr := testserver.TCP(t, func(c net.Conn) {
		handle(c)
	})
	return addr
}

// The backend's PROXY header mistakes are logged with the advice
// `postern doctor` gives for them: a backend that closes right after the
// header, and Postfix's 421 when it waits for a header postern does not
// send.
func TestBackendHeaderMistakesLogAdvice(t *testing.T) {
	closes := fakePostfix(t, func(c net.Conn) { proxyproto.Read(bufio.NewReader(c)) })
	waits := fakePostfix(t, func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		c.Read(make([]byte, 1))
		fmt.Fprint(c, "421 4.3.0 mx.example.test Server local error\r\n")
	})
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name, addr, proxy string
		want              string
	}{
		{"closed after header", closes, "v2", relay.Hop{Service: "smtp", Addr: closes, Proxy: "v2", From: lo}.HeaderRejected()},
		{"header expected", waits, "none", "and postern sends no PROXY header (backend_proxy: none); it probably expects one: set `backend_proxy: v2` on services.smtp"},
		{"header expected, xclient", waits, "xclient", "and postern sends no PROXY header (backend_proxy: xclient)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, baseIPS, func(c *Config) { c.Backend, c.BackendProxy = tc.addr, tc.proxy }, nil)
			c := h.dial("127.0.0.14")
			if code, _ := c.read(); code != 421 {
				t.Fatalf("answer %d, want 421", code)
			}
			if !strings.Contains(h.logs.String(), tc.want) {
				t.Fatalf("log without %q:\n%s", tc.want, h.logs.String())
			}
		})
	}
}

// Against the real Postfix (POSTERN_E2E=1): a gateway that sends no PROXY
// header to a port that requires one logs the doctor's advice.
func TestPostfixAwaitingHeaderLogsAdvice(t *testing.T) {
	env := testenv.Backends(t)
	h := newHarness(t, baseIPS, func(c *Config) {
		// Longer than Postfix's smtpd_upstream_proxy_timeout (5 s), as
		// the gateway's default (5 min) is.
		c.Backend, c.BackendProxy, c.Timeouts.Backend = env.SMTPProxy, "none", 10*time.Second
	}, nil)
	c := h.dial("127.0.0.15")
	if code, _ := c.read(); code != 421 {
		t.Fatalf("answer %d, want 421", code)
	}
	want := "Postfix at " + env.SMTPProxy + ` answered \"421 4.3.0 mx.example.test Server local error\" and postern sends no PROXY header (backend_proxy: none)`
	if !strings.Contains(h.logs.String(), want) {
		t.Fatalf("log without %s:\n%s", want, h.logs.String())
	}
}
