//go:build race || postern_leakguard

package sockio

// leakGuard arms a cleanup on every Socket that closes its descriptor
// when the Socket is garbage collected without Close, and counts it
// (LeakedSockets). It is built in under the race detector and with the
// build tag postern_leakguard: the test builds.
//
// A release build leaves it out. Every socket postern makes has an owner
// that closes it, and a set that closes what is left when the gateway
// stops (the listener's connections, the relay's); the guard cost an
// allocation and a cleanup record on every socket, about 2 µs of CPU a
// socket on a busy gateway (docs/benchmarks/issue17-round30.md).
const leakGuard = true
