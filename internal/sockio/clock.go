package sockio

import "time"

// monoBase anchors the clock deadlines are kept on: the process's
// monotonic clock, which a step of the wall clock (a first NTP sync at
// boot, an administrator's date command) does not move.
var monoBase = time.Now()

// monoOffset keeps every reading of that clock above 0, which stands for
// no deadline.
const monoOffset = int64(time.Hour)

// Mono returns t as nanoseconds on the monotonic clock MonoNow reads, 0
// for the zero time. A deadline made from time.Now (time.Now().Add(d))
// carries a monotonic reading and converts exactly, with no clock read; a
// time without one (time.Unix, a parsed time) is taken relative to the
// wall clock now, as Go's net package takes deadlines.
func Mono(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	var ns int64
	if t != t.Round(0) { // Round(0) strips only the monotonic reading
		ns = int64(t.Sub(monoBase)) + monoOffset
	} else {
		ns = MonoNow() + int64(time.Until(t))
	}
	return max(ns, 1)
}

// MonoNow returns the time now on the clock of Mono: one reading of the
// monotonic clock, where time.Now reads the wall clock too.
func MonoNow() int64 { return int64(time.Since(monoBase)) + monoOffset }
