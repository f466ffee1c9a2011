// Package netlisten accepts client connections for postern's protocol
// gateways (SMTP, IMAP, POP3, HTTP): PROXY protocol from trusted load
// balancers, implicit TLS and STARTTLS, per-address and total connection
// limits, and graceful drain.
//
// # PROXY protocol
//
// A peer for which Config.Trusted reports true must open its connection
// with a PROXY protocol v1 or v2 header (go-proxyproto's REQUIRE policy);
// every other peer is never parsed for one (SKIP), so a header it sends
// reaches the protocol as ordinary bytes. No connection waits to find out
// whether a header is coming: that is the trap of the optional policies
// (USE, IGNORE, REJECT) with protocols where the server speaks first — the
// greeting would be held until the header timeout.
//
// Headers are read before a connection is returned by Accept, because the
// connection limits apply to the real client address the header carries.
// Each trusted connection's header is read in a goroutine of its own,
// bounded by Config.ProxyHeaderTimeout, so a slow or silent load balancer
// connection never delays Accept for anyone else. Connections from other
// peers need no read and are ready at once. A missing, malformed, or
// unacceptable header (a source that is not a unicast TCP client address)
// closes the connection and is logged. A LOCAL header (v2 LOCAL, v1
// UNKNOWN: load-balancer health checks) is accepted as a connection from
// the load balancer itself, as the protocol specification requires.
//
// # Limits
//
// A connection over Config.MaxConns or Config.MaxPerAddr (counted per
// address, and per /64 for IPv6) is not returned by Accept. It is passed to the function set with SetOverLimit, which may
// write the protocol's refusal (SMTP "421 4.7.0 Too many connections from
// your address"), and closed when that returns; with no function set it is
// closed silently. Closing a Conn frees its slot.
//
// # TLS
//
// With Config.TLS set, every connection is TLS from its first byte after
// the PROXY header (smtps, imaps, pop3s). The handshake runs on the first
// Read or Write, or explicitly with Conn.Handshake and a timeout. Plaintext
// connections can be upgraded in place with Conn.StartTLS.
//
// # Ownership
//
// The Listener owns its accept loop and the goroutines reading headers or
// running the over-limit function; Shutdown stops and waits for all of
// them. A Conn returned by Accept belongs to the caller, who must Close it;
// Shutdown closes those still open when its context ends.
package netlisten
