package smtpproxy

import (
	"context"
	"log/slog"
	"strings"
	"time"
)

// maxLoggedReply bounds the backend's reply text in a message line.
const maxLoggedReply = 200

// logMessage writes the one info line of a message the backend gave its
// final answer to: the sender, how many recipients, the size, the
// backend's reply (code, enhanced code, text: its queue id, say) and how
// long the transaction took from MAIL. The logger carries the service and
// the client; the account is named when the session logged in.
func (s *session) logMessage(size int64, rcpts int, final reply) {
	if !s.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	status := final.enhanced()
	text := strings.TrimPrefix(final.text(), status+" ")
	attrs := []any{"sender", s.from, "recipients", rcpts, "size", size,
		"reply", final.code, "status", status, "text", truncate(text, maxLoggedReply)}
	if !s.txStart.IsZero() {
		attrs = append(attrs, "duration", time.Since(s.txStart).Round(time.Microsecond))
	}
	if s.authed {
		attrs = append(attrs, "account", s.account)
	}
	s.log.Info("message", attrs...)
}
