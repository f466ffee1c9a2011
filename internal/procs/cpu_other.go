//go:build !unix

package procs

import (
	"errors"
	"time"
)

// ProcessCPU is not available here: a Controller's windows are all
// skipped and the processors stay at the ceiling.
func ProcessCPU() (time.Duration, error) {
	return 0, errors.New("procs: the process's CPU time is not available on this system")
}
