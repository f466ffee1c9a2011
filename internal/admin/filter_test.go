package admin_test

import (
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
)

// TestTimeBoundRoundTrip checks that every bound the client sends reads
// back as the same time on the server.
func TestTimeBoundRoundTrip(t *testing.T) {
	kl := time.FixedZone("MYT", 8*3600)
	for _, b := range []admin.TimeBound{
		admin.At(t0), admin.At(t0.Add(123456789).In(kl)), admin.At(time.Time{}),
		admin.Ago(0), admin.Ago(90 * time.Minute), admin.Ago(-2 * time.Hour), admin.Ago(7 * 24 * time.Hour),
	} {
		got, err := admin.ParseTimeBound(b.String())
		if err != nil {
			t.Errorf("%q: %v", b.String(), err)
			continue
		}
		if !got.IsSet() || !got.Resolve(t0).Equal(b.Resolve(t0)) {
			t.Errorf("%q read back as %q: %v, want %v", b.String(), got.String(), got.Resolve(t0), b.Resolve(t0))
		}
	}
	for s, want := range map[string]time.Time{
		"2h":                        t0.Add(-2 * time.Hour),
		" 30m ":                     t0.Add(-30 * time.Minute),
		"7d":                        t0.Add(-7 * 24 * time.Hour),
		"+1h":                       t0.Add(time.Hour),
		"0":                         t0,
		"2026-04-30":                time.Date(2026, 4, 30, 0, 0, 0, 0, time.UTC),
		"2026-05-01T20:00:00+08:00": t0,
	} {
		b, err := admin.ParseTimeBound(s)
		if err != nil || !b.Resolve(t0).Equal(want) {
			t.Errorf("%q: %v, %v; want %v", s, b.Resolve(t0), err, want)
		}
	}
	if b, err := admin.ParseTimeBound("  "); err != nil || b.IsSet() {
		t.Errorf("blank: %v %v, want unset", b, err)
	}
	for _, s := range []string{"-1h", "+-1h", "+ 1h", "1 h", "now", "2026-05-01 12:00", "2026-05-01T12:00:00", "12:00", "1e400d"} {
		if _, err := admin.ParseTimeBound(s); err == nil {
			t.Errorf("%q: accepted", s)
		}
	}
}

// FuzzParseTimeBound feeds the time filters of GET /v1/blocks: any input
// is an error or a bound whose String reads back as the same time.
func FuzzParseTimeBound(f *testing.F) {
	for _, s := range []string{"2h", "+2h", "0", "7d", "1.5d", "2026-05-01", "2026-05-01T12:00:00Z", "2026-05-01T20:00:00.5+08:00", "-1h", "1e400d", "NaNd", "+", "2026-05-01T"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := admin.ParseTimeBound(s)
		if err != nil || !b.IsSet() {
			return
		}
		again, err := admin.ParseTimeBound(b.String())
		if err != nil {
			t.Fatalf("%q: String %q does not read back: %v", s, b.String(), err)
		}
		if !again.Resolve(t0).Equal(b.Resolve(t0)) {
			t.Fatalf("%q: %v, read back %v", s, b.Resolve(t0), again.Resolve(t0))
		}
	})
}
