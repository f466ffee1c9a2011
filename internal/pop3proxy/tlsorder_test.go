package pop3proxy

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/snapshot"
)

// TestImplicitTLSRefusesBeforeHandshake: pop3s checks grant and blocks
// before the TLS handshake (gwtest says how).
func TestImplicitTLSRefusesBeforeHandshake(t *testing.T) {
	gwtest.ImplicitTLSRefusesBeforeHandshake(t, "pop3", "imap_pop3", func(snap *snapshot.Snapshot, eng *guard.Engine) gwtest.Server {
		return New(Config{Service: "pop3", ImplicitTLS: true, Backend: relay.Dialer{Addr: "127.0.0.1:1"},
			PlaintextLogin: func(netip.Addr) bool { return true }, PreAuthIdle: 5 * time.Second},
			eng, func() *policy.Policy { return snap.Policy }, slog.New(slog.DiscardHandler))
	})
}
