package store

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// LastWrite tells the outcome of the last write transaction: none after
// Open, then each commit or failure; a write its caller cancelled is not
// recorded.
func TestLastWrite(t *testing.T) {
	db := openTest(t)
	if _, ok := db.LastWrite(); ok {
		t.Fatal("a write reported before any")
	}
	ctx := context.Background()
	if err := db.PutBlocks(ctx, []Block{block(addr(1), 1)}); err != nil {
		t.Fatal(err)
	}
	r, ok := db.LastWrite()
	if !ok || r.Err != nil || r.Op == "" || r.Time.IsZero() {
		t.Fatalf("after a commit: %+v, %v", r, ok)
	}

	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	if err := db.PutBlocks(expired, []Block{block(addr(2), 2)}); err == nil {
		t.Fatal("a write past its deadline succeeded")
	}
	r, _ = db.LastWrite()
	if !errors.Is(r.Err, context.DeadlineExceeded) || !strings.Contains(r.Err.Error(), db.Path()) {
		t.Fatalf("after a failed write: %+v", r)
	}

	cancelled, stop := context.WithCancel(ctx)
	stop()
	db.PutBlocks(cancelled, []Block{block(addr(3), 3)})
	if r2, _ := db.LastWrite(); r2 != r {
		t.Errorf("a cancelled write was recorded: %+v", r2)
	}

	if _, err := db.DeleteBlocks(ctx, []netip.Prefix{addr(1)}); err != nil {
		t.Fatal(err)
	}
	if r, _ := db.LastWrite(); r.Err != nil {
		t.Errorf("after a good write again: %+v", r)
	}
}
