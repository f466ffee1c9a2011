package smtpproxy

import (
	"log/slog"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// TestImplicitTLSRefusesBeforeHandshake: smtps checks grant and blocks
// before the TLS handshake (gwtest says how).
func TestImplicitTLSRefusesBeforeHandshake(t *testing.T) {
	gwtest.ImplicitTLSRefusesBeforeHandshake(t, "smtp", "smtp", func(snap *snapshot.Snapshot, eng *guard.Engine) gwtest.Server {
		return New(Config{Service: service.SMTP, Hostname: "gw.example.test", ImplicitTLS: true, Backend: "127.0.0.1:1",
			Timeouts: Timeouts{Command: 5 * time.Second, Data: 5 * time.Second, Session: time.Minute, Connect: time.Second, Backend: time.Second}},
			eng, func() Env { return Env{Policy: snap.Policy} }, nil, slog.New(slog.DiscardHandler))
	})
}
