package procstat

import (
	"os"
	"runtime"
	"strings"
	"testing"
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
