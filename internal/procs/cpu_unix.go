//go:build unix

package procs

import (
	"fmt"
	"syscall"
	"time"
)

// ProcessCPU returns the process's CPU time so far: user and system time
// of all its threads (getrusage RUSAGE_SELF).
func ProcessCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("procs: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
