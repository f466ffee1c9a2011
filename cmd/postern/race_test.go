//go:build race

package main

// raceEnabled: the race detector multiplies memory and time, so the
// memory-budget test does not run under it.
const raceEnabled = true
