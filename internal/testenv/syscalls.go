package testenv

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// ReadCalls returns the read system calls this process has made so far
// (syscr in /proc/self/io: read, recvfrom and the like), for tests that
// count what a change saves. It skips the test where the count is not
// available. Reading /proc/self/io is a read or two of its own.
func ReadCalls(tb testing.TB) int {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Skipf("no /proc/self/io: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				tb.Fatalf("syscr in /proc/self/io: %v", err)
			}
			return n
		}
	}
	tb.Skip("no syscr in /proc/self/io")
	return 0
}
