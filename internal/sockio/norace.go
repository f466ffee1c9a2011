//go:build !race

package sockio

// raceEnabled is true under the race detector (see race.go).
const raceEnabled = false
