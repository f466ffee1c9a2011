package mailgate_test

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/testserver"
)

// A backend that closes the connection right after postern's PROXY header
// (Dovecot with postern outside haproxy_trusted_networks) is logged with
// the advice `postern doctor` gives for it, not a bare EOF.
func TestBackendClosedAfterHeaderLogsAdvice(t *testing.T) {
	for _, p := range []protocol{protocols[0], protocols[2]} {
		t.Run(p.name, func(t *testing.T) {
			be := closesAfterHeader(t)
			g := startGateway(t, p, be)
			c := g.dialRaw(t, "127.0.0.13")
			if l := c.line(); l != p.unavailable {
				t.Fatalf("answer %q, want %q", l, p.unavailable)
			}
			// The log line comes before the client's answer.
			service := strings.Fields(p.name)[0]
			h := relay.Hop{Service: service, Addr: be, Proxy: "v2", From: netip.MustParseAddr("127.0.0.1")}
			if want := h.HeaderRejected(); !strings.Contains(g.logs.String(), want) {
				t.Fatalf("log without %q:\n%s", want, g.logs.String())
			}
		})
	}
}

// closesAfterHeader is a backend that reads a PROXY header and closes the
// connection.
func closesAfterHeader(t *testing.T) string {
	t.Helper()
	addr := testserver.TCP(t, func(c net.Conn) {
		proxyproto.Read(bufio.NewReader(c))
	})
	return addr
}
