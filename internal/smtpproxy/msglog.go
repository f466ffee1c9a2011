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
//
// Like the login line (gate.logLogin), it hands its record to the
// logger's handler itself: Logger.LogAttrs would also look up its
// caller's program counter (runtime.Callers), which postern's handlers
// never print, for every message.
func (s *session) logMessage(size int64, rcpts int, final reply) {
	ctx := context.Background()
	h := s.log.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	status := final.enhanced()
	text := final.text()
	if t, ok := strings.CutPrefix(text, status); ok { // strings.TrimPrefix(text, status+" "), without the string
		if t, ok := strings.CutPrefix(t, " "); ok {
			text = t
		}
	}
	// Typed attributes in an array on the stack: one line per message is
	// the gateway's most frequent log line.
	var a [8]slog.Attr
	attrs := append(a[:0], slog.String("sender", s.from), slog.Int("recipients", rcpts), slog.Int64("size", size),
		slog.Int("reply", final.code), slog.String("status", status), slog.String("text", truncate(text, maxLoggedReply)))
	if !s.txStart.IsZero() {
		attrs = append(attrs, slog.Duration("duration", time.Since(s.txStart).Round(time.Microsecond)))
	}
	if s.authed {
		attrs = append(attrs, slog.String("account", s.account))
	}
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "message", 0)
	r.AddAttrs(attrs...)
	_ = h.Handle(ctx, r) // as Logger.LogAttrs: a handler's error is its own to report
}
