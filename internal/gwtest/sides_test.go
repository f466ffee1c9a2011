package gwtest

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
)

func TestBothSides(t *testing.T) {
	var running, most atomic.Int32
	direct, through, err := BothSides(20, 3, func(i, side int) (string, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if i == 7 && side == 1 {
			return "", errors.New("seven")
		}
		return fmt.Sprint(i, side), nil
	})
	if err == nil || err.Error() != "seven" {
		t.Fatalf("error %v, want seven", err)
	}
	if most.Load() > 3 {
		t.Fatalf("%d calls at once, limit 3", most.Load())
	}
	for i := range 20 {
		if direct[i] != fmt.Sprint(i, 0) || i != 7 && through[i] != fmt.Sprint(i, 1) {
			t.Fatalf("answer %d: %q %q", i, direct[i], through[i])
		}
	}
}

func TestRetry(t *testing.T) {
	calls := 0
	err := retry(func() error {
		calls++
		if calls < 3 {
			return fmt.Errorf("login: %w", ErrUserIPLimit)
		}
		return errors.New("other")
	})
	if calls != 3 || err == nil || err.Error() != "other" {
		t.Fatalf("%d calls, error %v; want 3 calls ending in other", calls, err)
	}
}
