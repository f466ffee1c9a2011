// Package policyd is postern's policy-service mode: the engine answers the
// policy protocols of the mail servers it does not stand in front of —
// Postfix's SMTP access policy delegation (check_policy_service) and
// Dovecot's authentication policy (auth_policy_server_url) — with the same
// block table, access policy, login restrictions and triggers as the
// inline gateways.
//
// Every listener answers only the addresses of its grant (the mail
// servers'), bounds its connections and gives each request a deadline. A
// decision that cannot be made in time is answered "no opinion" (Postfix
// DUNNO, Dovecot status 0), so postern never holds up the server it serves;
// such answers are counted (Stats.NoOpinion).
package policyd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/service"
)

// Options are what every policy server has.
type Options struct {
	// Grant says which peers (the mail servers) are answered; nil answers
	// loopback only.
	Grant func(netip.Addr) bool
	// DecisionTimeout bounds one decision; past it the answer is "no
	// opinion". Default 2s.
	DecisionTimeout time.Duration
	// IdleTimeout bounds how long a connection may wait for its next
	// request (and how long a request may take to arrive). Default 330s:
	// Postfix keeps an idle policy connection 300s.
	IdleTimeout time.Duration
	// MaxConns bounds the connections served at once; one more is closed
	// at once, and the mail server applies its own default. Default 200.
	MaxConns int
	// Log receives the servers' log lines; nil discards them.
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Grant == nil {
		o.Grant = netip.Addr.IsLoopback
	}
	if o.DecisionTimeout <= 0 {
		o.DecisionTimeout = 2 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 330 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 200
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Stats counts what a policy server did; every field is read atomically.
type Stats struct {
	Requests  atomic.Uint64 // requests answered
	NoOpinion atomic.Uint64 // answered "no opinion" because the decision took too long
	Refused   atomic.Uint64 // connections refused: not granted, or over the connection limit
	Bad       atomic.Uint64 // connections closed on a request that could not be read
	Active    atomic.Int64  // connections open now
}

// Engine is what the policy servers need of the intrusion prevention
// engine; *guard.Engine satisfies it.
type Engine interface {
	Attach(addr netip.Addr, svc service.Service) *guard.Session
	Open(addr netip.Addr, svc service.Service, closer func()) (*guard.Session, guard.Decision)
	Admit(addr netip.Addr, svc service.Service) guard.Verdict
	AdmitBlocks(addr netip.Addr, svc service.Service) guard.Verdict
	Settings() *guard.Settings
	PasswordFingerprint(account, password string) uint64
}

// listener admits the connections a policy server serves: granted peers
// only, at most MaxConns at once.
type listener struct {
	net.Listener
	opts  *Options
	stats *Stats
	slots chan struct{}
}

// errClosed ends Serve when its listener is closed.
var errClosed = errors.New("policyd: listener closed")

// accept returns the next granted connection within the limit, wrapped
// so that closing it frees its slot.
func (l *listener) accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, errClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return nil, fmt.Errorf("policyd: accept: %w", err)
		}
		peer := peerAddr(c)
		if !peer.IsValid() || !l.opts.Grant(peer) {
			l.stats.Refused.Add(1)
			l.opts.Log.Warn("policy connection from an address not granted", "peer", peer.String())
			c.Close()
			continue
		}
		select {
		case l.slots <- struct{}{}:
		default:
			l.stats.Refused.Add(1)
			l.opts.Log.Warn("policy connection over the connection limit; closed", "peer", peer.String(), "max_connections", l.opts.MaxConns)
			c.Close()
			continue
		}
		l.stats.Active.Add(1)
		return &slotConn{Conn: c, free: func() { l.stats.Active.Add(-1); <-l.slots }}, nil
	}
}

// Accept is accept for net/http's server.
func (l *listener) Accept() (net.Conn, error) { return l.accept() }

// slotConn gives its listener's slot back when closed.
type slotConn struct {
	net.Conn
	once sync.Once
	free func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.free)
	return err
}

// peerAddr is the connection's remote address (invalid for a unix socket).
func peerAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// within runs decide and returns its answer, or ok false when it takes
// longer than d; decide then finishes on its own goroutine and its answer
// is dropped.
func within[T any](d time.Duration, decide func() T) (T, bool) {
	ch := make(chan T, 1)
	go func() { ch <- decide() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case v := <-ch:
		return v, true
	case <-t.C:
		var zero T
		return zero, false
	}
}
