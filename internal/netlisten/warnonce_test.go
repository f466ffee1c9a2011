package netlisten

import (
	"io"
	"net/netip"
	"strings"
	"testing"
)

// A trusted peer that sends no PROXY header is warned about once, with the
// reason; its next connections are logged at debug level only. Another
// peer gets its own warning.
func TestMissingHeaderWarnedOncePerPeer(t *testing.T) {
	s := start(t, Config{Trusted: trust("127.0.0.1", "127.0.0.2")})
	for _, src := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2"} {
		c := dial(t, s, src)
		io.WriteString(c, "EHLO direct.example\r\n")
		expectClosed(t, c) // the log line is written before the close
	}
	logs := s.logs.String()
	warn := func(peer string) int {
		n := 0
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "missing or bad PROXY header") && strings.Contains(l, "peer="+peer+":") {
				n++
				if !strings.Contains(l, "it sent no PROXY header: it is in trusted_upstreams") {
					t.Errorf("warning without the reason: %s", l)
				}
			}
		}
		return n
	}
	if n := warn("127.0.0.1"); n != 1 {
		t.Errorf("127.0.0.1 warned %d times, want once:\n%s", n, logs)
	}
	if n := warn("127.0.0.2"); n != 1 {
		t.Errorf("127.0.0.2 warned %d times, want once:\n%s", n, logs)
	}
	if n := strings.Count(logs, "level=DEBUG msg=\"netlisten: closing connection from trusted peer"); n != 2 {
		t.Errorf("%d debug lines, want 2:\n%s", n, logs)
	}
}

func TestFirstWarningBounded(t *testing.T) {
	var l Listener
	a := netip.MustParseAddr("127.0.0.1")
	if !l.firstWarning(a) || l.firstWarning(a) {
		t.Fatal("not once")
	}
	for i := range maxWarnedPeers {
		l.firstWarning(netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i % 256)}))
	}
	if len(l.warned) > maxWarnedPeers {
		t.Fatalf("%d peers remembered, bound %d", len(l.warned), maxWarnedPeers)
	}
}
