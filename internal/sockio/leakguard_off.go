//go:build !race && !postern_leakguard

package sockio

// leakGuard is off in a release build (see leakguard_on.go).
const leakGuard = false
