// Package evloop runs connection handlers on event loops instead of a
// goroutine each waiting in the runtime's poller.
//
// A Group has one loop per processor. Each loop waits for the readiness of
// its sockets in an epoll instance of its own, which is itself parked in
// the runtime's poller, so an idle loop holds no thread. A handler started
// with Go runs as a coroutine of its loop (iter.Pull): it is the same
// sequential code as on a goroutine, but where it would wait for a socket
// (a sockio.Conn bound to it), it switches back to the loop, which resumes
// it when the socket is ready. Switching a coroutine costs about a tenth
// of a microsecond and wakes no thread; a goroutine that waits in the
// runtime's poller costs the scheduler, and often a thread's wake-up, at
// every step of a dialogue — most of a login's CPU in a proxy
// (docs/benchmarks/issue17-evloop.md).
//
// Code that is about to wait for anything else — a timer, a lock held for
// long, a TLS handshake, a lookup — calls MayBlock first: on a loop, the
// handler then leaves it and goes on as an ordinary goroutine (its
// sockets wait in the runtime's poller from then on). Code that does not
// know of the loop still works, but holds the loop (and every handler on
// it) while it waits: only handlers whose waits are all known to it go on
// a loop.
//
// On systems other than Linux, Start returns an error and handlers run on
// goroutines.
package evloop
