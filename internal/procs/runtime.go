package procs

import "runtime"

// RuntimeDefault returns the number of processors the Go runtime chooses
// by default now, and leaves the runtime with cur processors. The
// default is the smallest of the machine's CPUs, the process's CPU
// affinity and, on Linux, its container's CPU limit rounded up (at least
// two), all read afresh: the runtime follows them itself only while no
// program has set its number, and a Controller sets it. It ignores the
// GOMAXPROCS environment variable: use it only when that is unset.
//
// It stops the world twice (to set the default, then cur), a few
// microseconds each: call it seconds apart, not per window.
func RuntimeDefault(cur int) int {
	runtime.SetDefaultGOMAXPROCS()
	return runtime.GOMAXPROCS(cur)
}
