//go:build race

package e2e

// raceEnabled builds the postern binary with -race when the tests run
// with -race, so that the gateway itself is checked too.
const raceEnabled = true
