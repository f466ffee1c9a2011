package sockio

import (
	"testing"
	"time"
)

// TestMono: deadlines convert to the monotonic clock MonoNow reads, with
// or without a monotonic reading of their own; the zero time is no
// deadline and every other time is above 0.
func TestMono(t *testing.T) {
	if Mono(time.Time{}) != 0 {
		t.Fatalf("Mono(zero) = %d, want 0 (no deadline)", Mono(time.Time{}))
	}
	const slack = int64(50 * time.Millisecond) // a slow machine between two readings
	for _, d := range []time.Duration{0, time.Second, -time.Second, time.Hour} {
		before := MonoNow()
		at := time.Now().Add(d)
		after := MonoNow()
		for _, c := range []struct {
			what string
			t    time.Time
		}{
			{"time.Now().Add", at},
			{"the same without its monotonic reading", at.Round(0)},
			{"the same from Unix nanoseconds", time.Unix(0, at.UnixNano())},
		} {
			got := Mono(c.t)
			if got < before+int64(d)-slack || got > after+int64(d)+slack {
				t.Errorf("%s %v: Mono %d, want %d…%d", c.what, d, got, before+int64(d), after+int64(d))
			}
		}
	}
	if got := Mono(time.Unix(0, 1)); got < 1 {
		t.Errorf("Mono of a time long past = %d, want ≥ 1 (a deadline, passed)", got)
	}
	if got := Mono(time.Unix(0, 1)); got > MonoNow() {
		t.Errorf("Mono of a time long past = %d, after now (%d)", got, MonoNow())
	}
	a := MonoNow()
	if b := MonoNow(); b < a || a <= 0 {
		t.Errorf("MonoNow went from %d to %d", a, b)
	}
}

// TestMonoExactWithReading: a deadline made from time.Now converts without
// reading the clock again: the same deadline gives the same number however
// long after it is converted.
func TestMonoExactWithReading(t *testing.T) {
	at := time.Now().Add(time.Minute)
	first := Mono(at)
	for start := MonoNow(); MonoNow() < start+int64(time.Millisecond); {
		// the clock moving on is what is tested
	}
	if again := Mono(at); again != first {
		t.Errorf("Mono of the same deadline: %d, then %d", first, again)
	}
}
