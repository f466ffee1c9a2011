//go:build race

package sockio

// raceEnabled is true under the race detector. Reads and writes then go
// through the syscall package, whose annotations tell the detector that a
// write to a socket happens before the read of its bytes (Go's own
// connections carry them; raw system calls do not, and the detector would
// report every hand-over of memory between two goroutines through a
// socket). Allocation counts are not checked then either.
const raceEnabled = true
