package main

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestServeFollowsCPUAffinity: a running `postern serve` with adaptive
// processors follows the processors the runtime would choose as they
// change: narrowed to one CPU from outside (as `taskset -a -p` does; a
// container's CPU limit is read by the same runtime code), it drops to
// one; given every CPU back, its ceiling returns.
func TestServeFollowsCPUAffinity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a postern serve process")
	}
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set: serve keeps it")
	}
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil || all.Count() < 2 || runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, "services:\n  smtp: { listen: \"127.0.0.1:0\", backend: \"127.0.0.1:10025\" }\n"+stateConfig(t, dir))
	// 20 ms windows: the ceiling is read every 40, 0.8 s.
	c := startChild(t, cfg, false, "POSTERN_TEST_PROCESSOR_WINDOW=20ms")
	waitFor(t, c.logs, "follow_cpu_limit=true", 1)

	var one unix.CPUSet
	for i := range 1024 {
		if all.IsSet(i) {
			one.Set(i)
			break
		}
	}
	setAffinity(t, c.cmd.Process.Pid, &one)
	waitFor(t, c.logs, "to=1 processors=1", 1)
	setAffinity(t, c.cmd.Process.Pid, &all)
	waitFor(t, c.logs, "processor ceiling changed\" from=1 to=", 1)
	if err := c.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("serve: %v\n%s", err, c.logs.String())
	}
}

// setAffinity sets the CPU affinity of every thread of process pid, in
// passes until one finds no thread it had not set (a thread started
// meanwhile inherits the affinity of the one that made it, old or new).
func setAffinity(t *testing.T, pid int, set *unix.CPUSet) {
	t.Helper()
	done := map[int]bool{}
	for {
		tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		if err != nil {
			t.Fatal(err)
		}
		fresh := false
		for _, e := range tasks {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				t.Fatalf("sched_setaffinity %d: %v", tid, err)
			}
			done[tid], fresh = true, true
		}
		if !fresh {
			return
		}
	}
}
