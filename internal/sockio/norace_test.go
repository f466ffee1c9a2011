//go:build !race

package sockio

// raceEnabled is true under the race detector, whose instrumentation
// allocates: allocation counts are not checked then.
const raceEnabled = false
