package netlisten

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Reasons passed to the over-limit function.
const (
	// ReasonMaxConns: the listener has Config.MaxConns connections.
	ReasonMaxConns = "max-conns"
	// ReasonMaxPerAddr: the client address (for IPv6, its /64) has
	// Config.MaxPerAddr connections.
	ReasonMaxPerAddr = "max-per-addr"
)

const (
	// refusalTimeout is the deadline set on a connection before it is
	// handed to the over-limit function.
	refusalTimeout = 5 * time.Second
	// maxRefusing bounds the over-limit functions running at once; beyond
	// it (a flood) connections over a limit are closed silently.
	maxRefusing = 256
)

// OverLimitFunc receives a connection that is over a connection limit,
// with the reason (ReasonMaxConns or ReasonMaxPerAddr). It may write the
// protocol's refusal; the connection is closed when it returns. The
// connection's deadline is set to a few seconds from now; the function
// must not block beyond its writes to the connection. It runs in a
// goroutine of the listener, never in Accept.
type OverLimitFunc func(c *Conn, reason string)

// SetOverLimit sets the function that receives connections over a limit
// (nil: close them silently). It may be called at any time.
func (l *Listener) SetOverLimit(f func(c *Conn, reason string)) {
	if f == nil {
		l.overLimit.Store(nil)
		return
	}
	fn := OverLimitFunc(f)
	l.overLimit.Store(&fn)
}

// SetLimits changes the connection limits (as Config.MaxConns and
// Config.MaxPerAddr; 0: unlimited) for connections admitted from now on.
// Connections already admitted stay. Negative limits are an error.
func (l *Listener) SetLimits(maxConns, maxPerAddr int) error {
	if maxConns < 0 || maxPerAddr < 0 {
		return fmt.Errorf("netlisten: %s: negative connection limit (%d total, %d per address)", l.addr, maxConns, maxPerAddr)
	}
	l.mu.Lock()
	l.maxConns, l.maxPerAddr = maxConns, maxPerAddr
	l.mu.Unlock()
	return nil
}

// limitKey is what the per-address limit counts: the address itself for
// IPv4, its /64 for IPv6, since one host or customer commonly holds a
// whole /64 and could otherwise open MaxPerAddr connections from each of
// its 2^64 addresses.
func limitKey(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// Stats returns the number of live connections (returned by Accept or
// about to be, not yet closed) and the highest number of live connections
// from one client address (for IPv6, one /64).
func (l *Listener) Stats() (live int, perAddrMax int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.perAddr {
		perAddrMax = max(perAddrMax, n)
	}
	return l.conns.n, perAddrMax
}

// admit takes a slot for c. It returns the reason c is over a limit, or
// ok false if the listener has stopped.
func (l *Listener) admit(c *Conn) (reason string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return "", false
	}
	if l.maxConns > 0 && l.conns.n >= l.maxConns {
		return ReasonMaxConns, true
	}
	a := limitKey(c.client.Addr())
	if l.maxPerAddr > 0 && l.perAddr[a] >= l.maxPerAddr {
		return ReasonMaxPerAddr, true
	}
	l.conns.add(c)
	l.perAddr[a]++
	c.owner = l
	return "", true
}

// release frees c's slot; Conn calls it once.
func (l *Listener) release(c *Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !c.listed {
		return
	}
	l.conns.remove(c)
	a := limitKey(c.client.Addr())
	if l.perAddr[a] <= 1 {
		delete(l.perAddr, a)
	} else {
		l.perAddr[a]--
	}
	if l.conns.n == 0 && l.drained != nil {
		close(l.drained)
		l.drained = nil
	}
}

// refuse hands c, over a limit, to the over-limit function in a goroutine,
// or closes it.
func (l *Listener) refuse(c *Conn, reason string) {
	l.log.Debug("netlisten: connection over limit", "listen", l.addr, "client", c.client, "reason", reason)
	fp := l.overLimit.Load()
	if fp == nil {
		c.raw.Close()
		return
	}
	if l.refusing.Add(1) > maxRefusing {
		l.refusing.Add(-1)
		c.raw.Close()
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer l.refusing.Add(-1)
		// Stopping the listener cuts a refusal short.
		stop := context.AfterFunc(l.stop, func() { c.raw.Close() })
		defer stop()
		c.SetDeadline(time.Now().Add(refusalTimeout))
		(*fp)(c, reason)
		c.Close()
	}()
}

// connList is a listener's live connections, linked through the
// connections themselves: taking and freeing a slot allocates nothing
// and touches no table. Its owner's mu guards it and the links.
type connList struct {
	head *Conn
	n    int
}

func (l *connList) add(c *Conn) {
	c.prev, c.next, c.listed = nil, l.head, true
	if l.head != nil {
		l.head.prev = c
	}
	l.head = c
	l.n++
}

func (l *connList) remove(c *Conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
	l.n--
}
