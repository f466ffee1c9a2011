package metrics_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/snapshot"
)

type atomicCounter struct{ v atomic.Uint64 }

func (c *atomicCounter) add(n uint64) uint64 { return c.v.Add(n) }

// engineNoObserver is the engine of engine() without an observer.
func engineNoObserver(tb testing.TB) *guard.Engine {
	tb.Helper()
	dir := tb.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(cfg, []byte(`services:
  imap: { listen: ":143", backend: "b:1" }
intrusion_prevention:
  imap_pop3: { connections_per_minute: 1000000000, failed_logins: 1000000000 }
`), 0o600); err != nil {
		tb.Fatal(err)
	}
	s, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	e, err := guard.New(context.Background(), s.Guard, guard.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
