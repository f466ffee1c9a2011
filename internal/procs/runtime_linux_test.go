package procs

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRuntimeDefault: RuntimeDefault reads the runtime's default afresh
// (here its CPU-affinity part, which a test can change: the container's
// limit is read the same way) and leaves the runtime at the number it
// was given.
func TestRuntimeDefault(t *testing.T) {
	runtime.LockOSThread() // the affinity read is this thread's
	defer runtime.UnlockOSThread()
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Skip(err)
	}
	if all.Count() < 2 {
		t.Skip("one CPU here: nothing to narrow")
	}
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	var one unix.CPUSet
	for i := range 1024 {
		if all.IsSet(i) {
			one.Set(i)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Skip(err)
	}
	defer unix.SchedSetaffinity(0, &all)

	if n := RuntimeDefault(3); n != 1 {
		t.Errorf("on one CPU: default %d, want 1", n)
	}
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Errorf("after RuntimeDefault(3): %d processors", n)
	}
	if err := unix.SchedSetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	// Every CPU again: the default is their number, or the container's
	// limit rounded up, which the runtime never takes below 2.
	if n := RuntimeDefault(1); n < 2 || n > all.Count() {
		t.Errorf("on %d CPUs: default %d", all.Count(), n)
	}
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("after RuntimeDefault(1): %d processors", n)
	}
}
