// Package sockmap relays a logged-in session's bytes inside the kernel: a
// BPF SOCKHASH holds both TCP sockets of each session and a stream verdict
// program sends what arrives on one socket out of the other, so the bytes
// never reach user space. It is an experiment beside relay.Splice (which
// moves bytes with splice(2)); see docs/benchmarks/issue17-bpf.md for what
// it measured and where it stands.
//
// The programs are written with cilium/ebpf's asm package: no C compiler
// is needed to build postern.
package sockmap
