package procstat

import (
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func TestReadsThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	pid := os.Getpid()
	for i := 0; i < 2e6; i++ { // burn a little CPU so the counters move
		_ = strings.Repeat("x", i%7)
	}
	if c := ProcCPU(pid); c <= 0 {
		t.Errorf("ProcCPU = %v, want > 0", c)
	}
	if busy, total := MachineCPU(); busy <= 0 || total < busy {
		t.Errorf("MachineCPU = %v, %v", busy, total)
	}
	if n := ContextSwitches(pid); n <= 0 {
		t.Errorf("ContextSwitches = %v, want > 0", n)
	}
	if kb := StatusKB(pid, "VmRSS"); kb <= 0 {
		t.Errorf("VmRSS = %d KiB", kb)
	}
	if n := FDCount(pid); n < 3 {
		t.Errorf("FDCount = %d", n)
	}
	if l := OpenFilesLimit(pid); !strings.Contains(l, "soft") {
		t.Errorf("OpenFilesLimit = %q", l)
	}
}

// TestSplit burns CPU in user mode, then in the kernel (reading
// /dev/zero), and checks each shows in its own part of the split, and the
// tree's split counts this process.
func TestSplit(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	pid := os.Getpid()
	spin := func(d time.Duration, f func()) {
		for end := time.Now().Add(d); time.Now().Before(end); {
			f()
		}
	}
	u0, s0 := ProcSplit(pid)
	x := 0
	spin(400*time.Millisecond, func() {
		for i := range 10000 {
			x += i * i
		}
	})
	u1, s1 := ProcSplit(pid)
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	buf := make([]byte, 1<<20)
	// The read(2) itself, without os.File's wrapper: under the race
	// detector the wrapper marks the buffer written, a user-mode pass over
	// the megabyte as long as the kernel's.
	fd, p := zero.Fd(), uintptr(unsafe.Pointer(&buf[0]))
	spin(400*time.Millisecond, func() { syscall.Syscall(syscall.SYS_READ, fd, p, uintptr(len(buf))) })
	runtime.KeepAlive(buf)
	u2, s2 := ProcSplit(pid)
	if u1-u0 < 0.2 || u1-u0 < 2*(s1-s0) {
		t.Errorf("a user-mode loop of 0.4 s: user %.2f s, system %.2f s", u1-u0, s1-s0)
	}
	if s2-s1 < 0.2 || s2-s1 < 2*(u2-u1) {
		t.Errorf("reading /dev/zero for 0.4 s: user %.2f s, system %.2f s", u2-u1, s2-s1)
	}
	tu, ts := TreeSplit(pid)
	if tu < u2 || ts < s2 || TreeCPU(pid) < u2+s2 {
		t.Errorf("TreeSplit = %.2f, %.2f; TreeCPU = %.2f; below the process's own %.2f, %.2f", tu, ts, TreeCPU(pid), u2, s2)
	}
	_ = x
}
