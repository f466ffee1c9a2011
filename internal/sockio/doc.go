// Package sockio reads and writes TCP sockets without the Go runtime's
// bookkeeping for system calls that may block.
//
// Go's net package makes every read(2) and write(2) of a socket through
// the runtime's entry for blocking system calls (entersyscall and
// exitsyscall). A socket's descriptor is non-blocking, so the call never
// blocks and the bookkeeping buys nothing, but it costs a proxy on every
// hop: when the whole process was idle — as a gateway is between the steps
// of a login, waiting for the mail server — the first such call wakes the
// runtime's monitor thread, which then polls every 20 µs until the process
// is idle again. A gateway that waits for its backend several times per
// session pays that each time. A Conn makes the same calls through
// syscall.RawConn with raw system calls: the same descriptor, the same
// poller, the same deadlines, and about half the CPU per request and
// answer on loopback (docs/benchmarks/issue17-sockio.md).
//
// Conn.WriteRead goes one step further for a request and its answer: Go
// reads a socket before it waits for it, which after a request always
// finds nothing; WriteRead writes the request inside the poller's read
// step and waits before its first read (docs/benchmarks/issue17-round8.md).
// On an event loop's Waiter a Conn does the same for every read that
// follows one that emptied the socket: the loop watches the socket
// edge-triggered, so it reports any byte that arrives after that read
// (docs/benchmarks/issue17-round9.md).
package sockio
