package logline

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// pair is a Handler and slog's own handler of the same format, each
// writing to its own buffer.
type pair struct {
	got, want bytes.Buffer
	h         slog.Handler
	std       slog.Handler
}

func newPair(json bool, level slog.Leveler) *pair {
	p := new(pair)
	p.h = New(&p.got, Options{JSON: json, Level: level})
	opts := &slog.HandlerOptions{Level: level}
	if json {
		p.std = slog.NewJSONHandler(&p.want, opts)
	} else {
		p.std = slog.NewTextHandler(&p.want, opts)
	}
	return p
}

func (p *pair) withAttrs(as ...slog.Attr) {
	p.h, p.std = p.h.WithAttrs(as), p.std.WithAttrs(as)
}

func (p *pair) withGroup(name string) {
	p.h, p.std = p.h.WithGroup(name), p.std.WithGroup(name)
}

// handle writes r through both and fails the test unless the lines are
// the same byte for byte.
func (p *pair) handle(t testing.TB, r slog.Record) {
	t.Helper()
	p.got.Reset()
	p.want.Reset()
	ctx := context.Background()
	if g, w := p.h.Enabled(ctx, r.Level), p.std.Enabled(ctx, r.Level); g != w {
		t.Fatalf("Enabled(%v) = %v, slog's %v", r.Level, g, w)
	}
	if err := p.h.Handle(ctx, r.Clone()); err != nil {
		t.Fatal(err)
	}
	if err := p.std.Handle(ctx, r.Clone()); err != nil {
		t.Fatal(err)
	}
	if p.got.String() != p.want.String() {
		t.Fatalf("line\n got  %q\n want %q", p.got.String(), p.want.String())
	}
}

var when = time.Date(2026, 12, 7, 13, 41, 25, 123456789, time.FixedZone("CET", 3600))

func record(level slog.Level, msg string, as ...slog.Attr) slog.Record {
	r := slog.NewRecord(when, level, msg, 0)
	r.AddAttrs(as...)
	return r
}

// Lines on the fast path and off it, in both formats, are slog's.
func TestSameAsSlog(t *testing.T) {
	type stringer struct{ netip.Addr }
	odd := []string{"", "plain", "with space", "a=b", `quo"te`, `back\slash`, "tab\there", "new\nline",
		"\x00\x1f\x7f", "ünïcödé", "\u2028\u2029", "\xff\xfe", "\u00a0nbsp", "\u200bzero width", "<html>&amp;"}
	for _, json := range []bool{false, true} {
		for _, s := range odd {
			p := newPair(json, nil)
			p.withAttrs(slog.String("service", "imap"))
			p.handle(t, record(slog.LevelInfo, s, slog.String(s+"k", s), slog.String("v", s)))
			p.handle(t, record(slog.LevelWarn, "m", slog.String("k", s)))
			if s != "" {
				p.withAttrs(slog.String(s, s))
				p.handle(t, record(slog.LevelInfo, "after", slog.String("k", s)))
			}
		}
		p := newPair(json, nil)
		all := []slog.Attr{
			slog.Int("int", -42), slog.Int64("min", math.MinInt64), slog.Uint64("max", math.MaxUint64),
			slog.Bool("t", true), slog.Bool("f", false), slog.Duration("d", 1500*time.Millisecond),
			slog.Duration("zero", 0), slog.Duration("neg", -time.Nanosecond),
		}
		p.handle(t, record(slog.LevelInfo, "scalars", all...))
		p.withAttrs(all...)
		p.handle(t, record(slog.LevelInfo, "scalars before"))
		// Off the fast path: slog's own lines.
		p.handle(t, record(slog.LevelError, "err", slog.Any("err", errors.New("broken pipe"))))
		p.handle(t, record(slog.LevelInfo, "time", slog.Time("until", when)))
		p.handle(t, record(slog.LevelInfo, "float", slog.Float64("f", 0.1), slog.Float64("nan", math.NaN())))
		p.handle(t, record(slog.LevelInfo, "group", slog.Group("g", slog.String("a", "b"))))
		p.handle(t, record(slog.LevelInfo, "empty key", slog.String("", "v"), slog.Attr{}))
		p.handle(t, record(slog.LevelInfo, "any", slog.Any("addr", stringer{netip.MustParseAddr("::1")})))
		p.handle(t, record(slog.LevelInfo+2, "odd level"))
		// A record without a time, one from year 12026.
		p.handle(t, slog.NewRecord(time.Time{}, slog.LevelInfo, "no time", 0))
		p.handle(t, slog.NewRecord(when.AddDate(10000, 0, 0), slog.LevelInfo, "far", 0))
		// Groups: slog's lines from then on, attributes before them kept.
		p.withAttrs(slog.String("before", "group"))
		p.withGroup("g")
		p.handle(t, record(slog.LevelInfo, "in group", slog.String("k", "v")))
		p.withAttrs(slog.String("k2", "v2"))
		p.handle(t, record(slog.LevelInfo, "in group", slog.String("k", "v")))
		// An attribute from WithAttrs off the fast path.
		q := newPair(json, nil)
		q.withAttrs(slog.Any("err", errors.New("x")))
		q.handle(t, record(slog.LevelInfo, "after an error", slog.String("k", "v")))
	}
}

// Times as slog writes them, in both formats: zones, whole seconds,
// fractions with trailing zeros, one second after another through the
// cached second.
func TestTimes(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("CET", 3600), time.FixedZone("odd", -(9*3600 + 30*60)), time.FixedZone("LMT", 561)}
	fracs := []int{0, 1, 100, 120_000_000, 999_999_999, 500_000_000, 1_000}
	for _, json := range []bool{false, true} {
		p := newPair(json, nil)
		for _, z := range zones {
			for _, f := range fracs {
				for _, sec := range []int64{0, 1, 1_796_000_000, -1, -86_401} {
					r := slog.NewRecord(time.Unix(sec, int64(f)).In(z), slog.LevelInfo, "t", 0)
					p.handle(t, r)
				}
			}
		}
		// The same second in two zones, and back.
		base := time.Unix(1_796_000_000, 5)
		for _, z := range append(zones, zones...) {
			p.handle(t, slog.NewRecord(base.In(z), slog.LevelInfo, "t", 0))
		}
	}
}

// The level follows its Leveler, as slog's (a Logger asks Enabled before
// Handle; Handle writes what it is given).
func TestLevel(t *testing.T) {
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelWarn)
	h := New(discard{}, Options{Level: lv})
	ctx := context.Background()
	if h.Enabled(ctx, slog.LevelInfo) || !h.Enabled(ctx, slog.LevelWarn) {
		t.Fatal("not at level warn")
	}
	lv.Set(slog.LevelDebug)
	if !h.Enabled(ctx, slog.LevelDebug) {
		t.Fatal("the lowered level not followed")
	}
	if !New(discard{}, Options{}).Enabled(ctx, slog.LevelInfo) || New(discard{}, Options{}).Enabled(ctx, slog.LevelDebug) {
		t.Fatal("the default level is not info")
	}
}

// HandleClient writes what WithAttrs with the address's string would.
func TestHandleClient(t *testing.T) {
	for _, json := range []bool{false, true} {
		for _, a := range []string{"192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", "fe80::1%eth0", "fe80::1%a b=c", ""} {
			var addr netip.Addr
			if a != "" {
				addr = netip.MustParseAddr(a)
			}
			var got, want bytes.Buffer
			h := New(&got, Options{JSON: json}).WithAttrs([]slog.Attr{slog.String("service", "imap")}).(*Handler)
			var std slog.Handler = slog.NewTextHandler(&want, nil)
			if json {
				std = slog.NewJSONHandler(&want, nil)
			}
			std = std.WithAttrs([]slog.Attr{slog.String("service", "imap"), slog.String("client", addr.String())})
			for _, r := range []slog.Record{
				record(slog.LevelInfo, "login", slog.String("account", "bob"), slog.String("result", "ok")),
				record(slog.LevelInfo, "refused", slog.Any("err", errors.New("x"))),
			} {
				got.Reset()
				want.Reset()
				if err := h.HandleClient(context.Background(), r, "client", addr); err != nil {
					t.Fatal(err)
				}
				std.Handle(context.Background(), r)
				if got.String() != want.String() {
					t.Fatalf("%q:\n got  %q\n want %q", a, got.String(), want.String())
				}
			}
		}
	}
}

// flushCounter is a writer with Flush, as logbatch.Writer.
type flushCounter struct {
	bytes.Buffer
	flushes int
}

func (f *flushCounter) Flush() error { f.flushes++; return nil }

// A line at level error is flushed at once; others wait.
func TestFlushOnError(t *testing.T) {
	var w flushCounter
	h := New(&w, Options{})
	ctx := context.Background()
	h.Handle(ctx, record(slog.LevelWarn, "warn"))
	if w.flushes != 0 {
		t.Fatalf("%d flushes after a warning", w.flushes)
	}
	h.Handle(ctx, record(slog.LevelError, "error", slog.Any("err", errors.New("x"))))
	h.Handle(ctx, record(slog.LevelError, "error on the fast path"))
	if w.flushes != 2 {
		t.Fatalf("%d flushes after two errors; want 2", w.flushes)
	}
}

// Lines written at once from many goroutines, on the fast path and
// slog's, are each whole.
func TestConcurrentLinesWhole(t *testing.T) {
	var w bytes.Buffer
	h := New(&w, Options{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 200 {
				if i%2 == 0 {
					h.Handle(context.Background(), record(slog.LevelInfo, "fast", slog.Int("g", i)))
				} else {
					h.Handle(context.Background(), record(slog.LevelInfo, "slow", slog.Any("err", errors.New("x"))))
				}
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(w.String(), "\n"), "\n")
	if len(lines) != 1600 {
		t.Fatalf("%d lines; want 1600", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "time=") || !(strings.HasSuffix(l, "err=x") || strings.Contains(l, " g=")) {
			t.Fatalf("a broken line: %q", l)
		}
	}
}

// FuzzSameAsSlog: any strings, integers and durations, in either format,
// with and without a client address, make slog's line.
func FuzzSameAsSlog(f *testing.F) {
	f.Add(false, "login", "account", "bob", int64(3), int64(time.Second), "service", "imap", []byte{192, 0, 2, 1})
	f.Add(true, "with space", "k=v", "\"q\"", int64(-1), int64(-1), "", "", []byte{})
	f.Add(false, "\u2028", "\xff", "\t", int64(0), int64(0), "a b", "c", make([]byte, 16))
	f.Fuzz(func(t *testing.T, json bool, msg, key, val string, n, d int64, preKey, preVal string, ip []byte) {
		p := newPair(json, nil)
		if preKey != "" {
			p.withAttrs(slog.String(preKey, preVal))
		}
		r := record(slog.LevelInfo, msg, slog.String(key, val), slog.Int64("n", n), slog.Duration("d", time.Duration(d)))
		r.Time = time.Unix(0, n).In(time.FixedZone("z", int(d%86400)))
		p.handle(t, r)
		// HandleClient against slog's WithAttrs.
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		p.got.Reset()
		p.want.Reset()
		ctx := context.Background()
		if err := p.h.(*Handler).HandleClient(ctx, r, "client", addr); err != nil {
			t.Fatal(err)
		}
		p.std.WithAttrs([]slog.Attr{slog.String("client", addr.String())}).Handle(ctx, r)
		if p.got.String() != p.want.String() {
			t.Fatalf("client %s:\n got  %q\n want %q", addr, p.got.String(), p.want.String())
		}
	})
}

// BenchmarkLoginLine: a login line through the Handler with the
// session's client address, and through slog's handler with it added by
// WithAttrs, as before.
func BenchmarkLoginLine(b *testing.B) {
	addr := netip.MustParseAddr("192.0.2.1")
	ctx := context.Background()
	line := func() slog.Record {
		r := slog.NewRecord(time.Now(), slog.LevelInfo, "login", 0)
		r.AddAttrs(slog.String("account", "bob@example.org"), slog.String("result", "ok"))
		return r
	}
	b.Run("logline", func(b *testing.B) {
		h := New(discard{}, Options{}).WithAttrs([]slog.Attr{slog.String("service", "imap")}).(*Handler)
		b.ReportAllocs()
		for b.Loop() {
			h.HandleClient(ctx, line(), "client", addr)
		}
	})
	b.Run("slog", func(b *testing.B) {
		h := slog.NewTextHandler(discard{}, nil).WithAttrs([]slog.Attr{slog.String("service", "imap")})
		b.ReportAllocs()
		for b.Loop() {
			r := line()
			nr := slog.NewRecord(r.Time, r.Level, r.Message, 0)
			nr.AddAttrs(slog.String("client", addr.String()))
			r.Attrs(func(a slog.Attr) bool { nr.AddAttrs(a); return true })
			h.Handle(ctx, nr)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Years at the edges of 0–9999, in zones either side of UTC: the fast
// path's quick bound and slog agree.
func TestYearEdges(t *testing.T) {
	for _, json := range []bool{false, true} {
		p := newPair(json, nil)
		for _, z := range []*time.Location{time.UTC, time.FixedZone("east", 14*3600), time.FixedZone("west", -12*3600)} {
			for _, d := range []time.Time{
				time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(0, 12, 31, 23, 0, 0, 0, time.UTC),
				time.Date(-1, 6, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC),
				time.Date(10000, 1, 1, 1, 0, 0, 0, time.UTC),
			} {
				p.handle(t, slog.NewRecord(d.In(z), slog.LevelInfo, "edge", 0))
			}
		}
	}
}
