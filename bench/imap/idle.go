package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/bench/internal/mailclient"
	"github.com/postern/postern/bench/internal/procstat"
)

// idleResult is postern serve's memory with n idle logged-in connections.
type idleResult struct {
	n                   int
	rss0, rssHalf, rssN int64 // VmRSS, KiB
	anon0, anonN        int64 // RssAnon, KiB
	fd0, fdN            int
	threads             int64
	noFile              string
	fdPerConn           float64       // postern's descriptors per connection
	requested           int           // n asked for, when the open-file limits allowed only n
	open                time.Duration // opening all n
}

func (r idleResult) perConn() float64 { return float64(r.rssN-r.rss0) / float64(r.n) }

func (r idleResult) marginal() float64 {
	return float64(r.rssN-r.rssHalf) / float64(r.n-r.n/2)
}

// idleTest holds o.idle logged-in IMAP connections through postern serve
// in front of the in-process IMAP backend and reads postern's RSS: after
// one full session (so that everything created lazily exists), with half
// the connections, and with all of them.
func (b *bench) idleTest() error {
	be, err := startMemBackend(loginUser.user, loginUser.pass)
	if err != nil {
		return err
	}
	defer be.close()
	g, err := b.startPostern("idle", be.addr(), "")
	if err != nil {
		return err
	}
	defer func() {
		if err := g.Stop(); err != nil {
			b.fail("postern (idle): %v\n%s", err, g.Tail())
		}
	}()
	n := b.o.idle
	pid := g.PID()
	r := idleResult{n: n, noFile: procstat.OpenFilesLimit(pid)}
	t := target{name: "idle", addr: g.imap}
	if err := loginSession(b.ctx, "imap", t, sourceAddr(20, 0), loginUser, false); err != nil {
		return fmt.Errorf("first session: %w", err)
	}
	if !waitFor(10*time.Second, func() bool { return be.live.Load() == 0 }) {
		return fmt.Errorf("the backend still holds %d sessions after the first one ended", be.live.Load())
	}
	r.rss0, r.anon0, r.fd0 = procstat.SettledRSS(pid), procstat.StatusKB(pid, "RssAnon"), procstat.FDCount(pid)

	var mu sync.Mutex
	var conns []*mailclient.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	open := func(from, to int) error {
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		var firstErr error
		for i := from; i < to && b.ctx.Err() == nil; i++ {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := dial(b.ctx, t, sourceAddr(20, i), time.Now().Add(15*time.Minute))
				if err == nil {
					if err = c.IMAPGreeting(); err == nil {
						err = c.IMAPCmd("LOGIN "+loginUser.user+" "+loginUser.pass, nil)
					}
					if err != nil {
						c.Close()
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					return
				}
				conns = append(conns, c)
			}()
		}
		wg.Wait()
		if firstErr == nil && b.ctx.Err() != nil {
			firstErr = b.ctx.Err()
		}
		return firstErr
	}
	benchkit.Logf("idle: opening %d logged-in IMAP connections through postern serve (in-process IMAP backend)", n)
	t0 := time.Now()
	// A first batch tells how many descriptors postern needs per spliced
	// connection; n is lowered to what its open-file limit (and this
	// program's: two per connection) can hold.
	probe := min(100, n/2)
	if err := open(0, probe); err != nil {
		return err
	}
	r.fdPerConn = float64(procstat.FDCount(pid)-r.fd0) / float64(probe)
	if fit := fitConnections(limitOf(pid), r.fd0, r.fdPerConn, limitOf(os.Getpid()), procstat.FDCount(os.Getpid())-probe*2, 2); fit < n {
		r.requested, n = n, max(fit/100*100, 2*probe)
		r.n = n
		benchkit.Logf("idle: only %d connections fit in the open-file limits (postern %s at %.1f descriptors each, this program %s)",
			n, r.noFile, r.fdPerConn, procstat.OpenFilesLimit(os.Getpid()))
	}
	if err := open(probe, n/2); err != nil {
		return err
	}
	r.rssHalf = procstat.SettledRSS(pid)
	if err := open(n/2, n); err != nil {
		return err
	}
	r.open = time.Since(t0)
	if !waitFor(30*time.Second, func() bool { return be.live.Load() == int64(n) }) {
		return fmt.Errorf("the backend holds %d sessions, want %d", be.live.Load(), n)
	}
	r.rssN, r.anonN, r.fdN = procstat.SettledRSS(pid), procstat.StatusKB(pid, "RssAnon"), procstat.FDCount(pid)
	r.threads = procstat.StatusKB(pid, "Threads")
	// Every connection must still be alive and logged in: one NOOP each
	// on a sample.
	for i := 0; i < len(conns); i += max(1, len(conns)/50) {
		conns[i].C.SetDeadline(time.Now().Add(30 * time.Second))
		if err := conns[i].IMAPCmd("NOOP", nil); err != nil {
			return fmt.Errorf("idle connection %d after the measurement: %w", i, err)
		}
	}
	b.out.idle = &r
	benchkit.Logf("idle: postern RSS %d KiB -> %d KiB with %d connections: %.1f KiB each (marginal %.1f); %d -> %d open files",
		r.rss0, r.rssN, n, r.perConn(), r.marginal(), r.fd0, r.fdN)
	return nil
}

// fitConnections returns how many more connections fit: postern has
// limit descriptors, uses base plus perConn per connection; this program
// has ownLimit, uses ownBase plus ownPer per connection. A margin of 64 is
// kept on both.
func fitConnections(limit, base int, perConn float64, ownLimit, ownBase int, ownPer float64) int {
	if limit <= 0 || perConn <= 0 {
		return 1 << 30
	}
	fit := int(float64(limit-base-64) / perConn)
	if ownLimit > 0 && ownPer > 0 {
		fit = min(fit, int(float64(ownLimit-ownBase-64)/ownPer))
	}
	return max(fit, 0)
}

// limitOf returns pid's soft open-file limit (0 if unknown).
func limitOf(pid int) int {
	f := strings.Fields(procstat.OpenFilesLimit(pid))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
