package mimic

import (
	"testing"
	"time"
)

func TestDraw(t *testing.T) {
	l := New(2*time.Second, 10*time.Second)
	if d := l.Draw(); d != 2*time.Second {
		t.Fatalf("before any sample: %v, want the default", d)
	}
	l.Record(500 * time.Millisecond)
	for range 20 {
		if d := l.Draw(); d != 500*time.Millisecond {
			t.Fatalf("one sample: drew %v", d)
		}
	}
	l.Record(time.Hour) // clamped
	l.Record(-time.Second)
	seen := map[time.Duration]bool{}
	for range 1000 {
		seen[l.Draw()] = true
	}
	if len(seen) != 3 || !seen[500*time.Millisecond] || !seen[10*time.Second] || !seen[0] {
		t.Fatalf("draws: %v, want each of 500ms, 10s (clamped), 0 (clamped)", seen)
	}
	// Bounded: the oldest go.
	for range Size {
		l.Record(time.Second)
	}
	if l.Len() != Size {
		t.Fatalf("len %d", l.Len())
	}
	for range 200 {
		if d := l.Draw(); d != time.Second {
			t.Fatalf("after %d new samples: drew %v", Size, d)
		}
	}
	if d := New(time.Minute, time.Second).Draw(); d != time.Second {
		t.Fatalf("default over max: %v", d)
	}
}

func TestDrawAllocs(t *testing.T) {
	l := New(time.Second, time.Minute)
	l.Record(time.Millisecond)
	if n := testing.AllocsPerRun(100, func() { l.Record(l.Draw()) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
