// Package clientlog gives the log lines of one client's session the
// client's address, as slog.Logger.With("client", addr) would, without
// formatting anything until the session writes a line.
//
// With on slog's text and JSON handlers copies the handler and formats
// the attribute at once: a few allocations and some hundred bytes for
// every connection, most of which never write a line before their login
// line, if at all.
package clientlog

import (
	"context"
	"log/slog"
	"net/netip"
)

// Key is the attribute's key, as postern's log lines name the client.
const Key = "client"

// handler adds the client's address as the first attribute of each
// record, where With would have put it.
type handler struct {
	next   slog.Handler
	client clientHandler // next, when it takes the address itself
	addr   netip.Addr
}

// clientHandler is a handler that writes a record with an address
// attribute before the record's own, as WithAttrs with the address's
// string would, without the string or a copy of the record
// (logline.Handler).
type clientHandler interface {
	HandleClient(ctx context.Context, r slog.Record, key string, addr netip.Addr) error
}

func (h *handler) attr() slog.Attr { return slog.String(Key, h.addr.String()) }

// Enabled is the next handler's.
func (h *handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle passes the record on with the client's address before its own
// attributes.
func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if h.client != nil {
		return h.client.HandleClient(ctx, r, Key, h.addr)
	}
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(h.attr())
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(a)
		return true
	})
	return h.next.Handle(ctx, nr)
}

// WithAttrs formats the client's address now, with attrs after it.
func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	all := make([]slog.Attr, 0, len(attrs)+1)
	return h.next.WithAttrs(append(append(all, h.attr()), attrs...))
}

// WithGroup keeps the client's address outside the group, as With
// before WithGroup does.
func (h *handler) WithGroup(name string) slog.Handler {
	return h.next.WithAttrs([]slog.Attr{h.attr()}).WithGroup(name)
}

// Logger is a session's logger, kept in the session's own struct so that
// making it allocates nothing.
type Logger struct {
	h handler
	l slog.Logger
}

// Init makes l base's logger with the client's address addr, and returns
// it; l must not be copied afterwards.
func (l *Logger) Init(base *slog.Logger, addr netip.Addr) *slog.Logger {
	next := base.Handler()
	client, _ := next.(clientHandler)
	l.h = handler{next: next, client: client, addr: addr}
	l.l = *slog.New(&l.h)
	return &l.l
}
