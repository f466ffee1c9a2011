package gwtest

import (
	"os"
	"sync"
	"testing"

	"github.com/postern/postern/internal/evloop"
)

// LoopsEnv names the environment variable that runs the gateways' tests
// with their sessions on event loops: POSTERN_TEST_EVENT_LOOPS=1.
const LoopsEnv = "POSTERN_TEST_EVENT_LOOPS"

var (
	loopsOnce sync.Once
	loops     *evloop.Group
	loopsErr  error
)

// Loops returns the event loops a test's gateway runs its sessions on:
// nil unless LoopsEnv is 1. The loops are shared by the test binary and
// live as long as it does.
func Loops(t testing.TB) *evloop.Group {
	t.Helper()
	if os.Getenv(LoopsEnv) != "1" {
		return nil
	}
	loopsOnce.Do(func() { loops, loopsErr = evloop.Start(0, nil) })
	if loopsErr != nil {
		t.Fatalf("event loops: %v", loopsErr)
	}
	return loops
}
