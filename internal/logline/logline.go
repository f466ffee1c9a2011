// Package logline writes postern's log lines: a slog.Handler whose output
// is byte for byte that of slog's TextHandler or JSONHandler (without
// source locations or ReplaceAttr), written faster for the lines a busy
// gateway writes most: those whose attributes are strings, integers,
// booleans and durations, outside groups.
//
// Every other line — an error, a time or any other value among its
// attributes, a group — is written by slog's own handler, which the
// Handler keeps beside it with the same attributes and groups. A line is
// the same either way; TestSameAsSlog and FuzzSameAsSlog hold the two
// side by side.
//
// The fast path skips what a general handler must do for each line: a
// state taken from a pool and its separators and group prefixes, a copy of
// each record by the wrappers in front of it (the session's client
// address: HandleClient), and an interface call for each of them.
package logline

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Options configure a Handler.
type Options struct {
	JSON  bool         // JSONHandler's format; false: TextHandler's
	Level slog.Leveler // the minimum level written; nil: slog.LevelInfo
}

// flusher is a writer that holds lines back (logbatch.Writer).
type flusher interface{ Flush() error }

// sink is what every Handler made from one New shares.
type sink struct {
	mu    sync.Mutex // one Write at a time, the fast path's and slog's
	w     io.Writer
	flush flusher // non-nil: flushed after every line at level error
	json  bool
	level slog.Leveler
	bufs  sync.Pool // *[]byte
	clock clockCache

	levelKey, msgKey string // with their separators
}

// Write writes one line to the writer, alone; slog's handler writes
// through it too.
func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// Handler is a slog.Handler writing lines as slog's TextHandler or
// JSONHandler does.
type Handler struct {
	s    *sink
	std  slog.Handler // slog's, with the same attributes and groups
	pre  []byte       // the attributes from WithAttrs, formatted, each after its separator
	fast bool         // no group opened, every attribute from WithAttrs simple
}

// New returns a Handler writing to w. When w has a Flush method
// (logbatch.Writer, which holds lines back), a line at level error or
// above is flushed at once, with what waits before it: the lines that
// explain a failure are out before whatever follows it.
func New(w io.Writer, o Options) *Handler {
	s := &sink{w: w, json: o.JSON, level: o.Level}
	if s.level == nil {
		s.level = slog.LevelInfo
	}
	s.flush, _ = w.(flusher)
	s.levelKey, s.msgKey = " level=", " msg="
	if o.JSON {
		s.levelKey, s.msgKey = `,"level":`, `,"msg":`
	}
	s.bufs.New = func() any { b := make([]byte, 0, 512); return &b }
	opts := &slog.HandlerOptions{Level: s.level}
	var std slog.Handler
	if o.JSON {
		std = slog.NewJSONHandler(s, opts)
	} else {
		std = slog.NewTextHandler(s, opts)
	}
	return &Handler{s: s, std: std, fast: true}
}

// Enabled reports whether lines at level l are written.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.s.level.Level()
}

// WithAttrs returns a Handler whose lines carry attrs after h's.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	n := &Handler{s: h.s, std: h.std.WithAttrs(attrs), fast: h.fast}
	if n.fast && simple(attrs) {
		pre := make([]byte, len(h.pre), len(h.pre)+16*len(attrs))
		copy(pre, h.pre)
		for _, a := range attrs {
			pre = h.s.appendAttr(pre, a)
		}
		n.pre = pre
	} else {
		n.fast = false
	}
	return n
}

// WithGroup returns a Handler whose further attributes are in group
// name; its lines are slog's own.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{s: h.s, std: h.std.WithGroup(name)}
}

// Handle writes r's line.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	return h.handle(ctx, r, "", netip.Addr{})
}

// HandleClient writes r's line with the attribute key=addr before r's
// own attributes, as h.WithAttrs([]slog.Attr{slog.String(key,
// addr.String())}).Handle(ctx, r) would, without making that Handler or
// the address's string.
func (h *Handler) HandleClient(ctx context.Context, r slog.Record, key string, addr netip.Addr) error {
	return h.handle(ctx, r, key, addr)
}

// handle writes r's line, with key=addr first when key is not empty.
func (h *Handler) handle(ctx context.Context, r slog.Record, key string, addr netip.Addr) error {
	var err error
	if !h.fast || !simpleClient(key, addr) || !recordSimple(r) {
		std := h.std
		if key != "" {
			std = std.WithAttrs([]slog.Attr{slog.String(key, addr.String())})
		}
		err = std.Handle(ctx, r)
	} else {
		err = h.write(r, key, addr)
	}
	if h.s.flush != nil && r.Level >= slog.LevelError {
		h.s.flush.Flush()
	}
	return err
}

// write formats r's line on the fast path and writes it.
func (h *Handler) write(r slog.Record, key string, addr netip.Addr) error {
	s := h.s
	bp := s.bufs.Get().(*[]byte)
	b := (*bp)[:0]
	if s.json {
		b = append(b, '{')
	}
	// The built-in keys never need quoting nor escaping.
	if !r.Time.IsZero() {
		if s.json {
			b = append(b, `"time":`...)
		} else {
			b = append(b, "time="...)
		}
		b = s.appendTime(b, r.Time)
		b = append(b, s.levelKey...)
	} else {
		b = append(b, s.levelKey[1:]...)
	}
	b = s.appendString(b, r.Level.String())
	b = append(b, s.msgKey...)
	b = s.appendString(b, r.Message)
	b = append(b, h.pre...)
	if key != "" {
		b = s.appendKey(b, key, true)
		if s.json {
			b = append(b, '"')
			b = addr.AppendTo(b)
			b = append(b, '"')
		} else {
			b = addr.AppendTo(b)
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		b = s.appendAttr(b, a)
		return true
	})
	if s.json {
		b = append(b, '}')
	}
	b = append(b, '\n')
	_, err := s.Write(b)
	if cap(b) <= 16<<10 { // a huge line's buffer is not kept
		*bp = b
		s.bufs.Put(bp)
	}
	return err
}

// recordSimple reports whether r is written on the fast path: its time
// has a four-digit year (slog writes an error beside any other in JSON)
// and every attribute of it is simple.
func recordSimple(r slog.Record) bool {
	// Years 1 to 9999 in any zone: a day inside them in Unix seconds
	// (cheaper than the year's reckoning, which only the rest needs).
	const first, last = -62135596800 + 86400, 253402300799 - 86400
	if u := r.Time.Unix(); !r.Time.IsZero() && (u < first || u > last) {
		if y := r.Time.Year(); y < 0 || y >= 10000 {
			return false
		}
	}
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		ok = simpleAttr(a)
		return ok
	})
	return ok
}

// simple reports whether every attribute of as is simple.
func simple(as []slog.Attr) bool {
	for _, a := range as {
		if !simpleAttr(a) {
			return false
		}
	}
	return true
}

// simpleAttr reports whether a is written on the fast path: a string,
// integer, boolean or duration under a non-empty key.
func simpleAttr(a slog.Attr) bool {
	if a.Key == "" {
		return false
	}
	switch a.Value.Kind() {
	case slog.KindString, slog.KindInt64, slog.KindUint64, slog.KindBool, slog.KindDuration:
		return true
	}
	return false
}

// simpleClient reports whether HandleClient's attribute is written on
// the fast path: none, or a valid address without a zone under a
// non-empty key. Such an address's text needs no quoting nor escaping
// (hexadecimal digits, dots and colons); a zone could, and the zero
// Addr's text is "invalid IP".
func simpleClient(key string, addr netip.Addr) bool {
	return key == "" || addr.IsValid() && addr.Zone() == ""
}

// appendAttr appends a simple attribute with its separator.
func (s *sink) appendAttr(b []byte, a slog.Attr) []byte {
	b = s.appendKey(b, a.Key, true)
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		return s.appendString(b, v.String())
	case slog.KindDuration:
		if s.json {
			return appendInt(b, int64(v.Duration()))
		}
		return append(b, v.Duration().String()...)
	default: // integers and booleans: as slog appends them in both formats
		return appendScalar(b, v)
	}
}

// appendKey appends key, after a separator when sep.
func (s *sink) appendKey(b []byte, key string, sep bool) []byte {
	if s.json {
		if sep {
			b = append(b, ',')
		}
		b = s.appendString(b, key)
		return append(b, ':')
	}
	if sep {
		b = append(b, ' ')
	}
	b = s.appendString(b, key)
	return append(b, '=')
}

// appendString appends str quoted as the format needs.
func (s *sink) appendString(b []byte, str string) []byte {
	if s.json {
		b = append(b, '"')
		b = appendEscapedJSONString(b, str)
		return append(b, '"')
	}
	return appendText(b, str)
}

// appendTime appends a record's time as slog does: milliseconds in text,
// RFC 3339 with nanoseconds in JSON.
func (s *sink) appendTime(b []byte, t time.Time) []byte {
	if s.json {
		b = append(b, '"')
		b = s.clock.append(b, t, false)
		return append(b, '"')
	}
	return s.clock.append(b, t, true)
}
