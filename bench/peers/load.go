package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/bench/internal/mailclient"
)

// target is where the load generator connects for one side of a scenario.
type target struct {
	side  string      // direct, nginx, haproxy, postern
	addr  string      // 127.0.0.1:port
	proxy bool        // open every connection with a PROXY v2 header (direct)
	tls   *tls.Config // implicit TLS (nil: none); its ClientSessionCache decides resumption
	group byte        // added to the scenario's source-address group (a second build compared at the same time)
}

// dial connects from src to t (mailclient.Dial).
func dial(ctx context.Context, t target, src netip.Addr, deadline time.Time) (*mailclient.Conn, error) {
	return mailclient.Dial(ctx, mailclient.Target{Addr: t.addr, Proxy: t.proxy, TLS: t.tls}, src, deadline)
}

// The envelope of every message: a local user of the harness, whom
// Postfix delivers to Dovecot over LMTP.
const (
	mailFrom = "bench@bench.invalid"
	rcptTo   = "alice@example.test"
)

var msgSeq atomic.Uint64

// smtpBody builds a message of about size bytes (headers included) ending
// in the terminating dot; lines of 76 base64-like characters.
func smtpBody(size int) []byte {
	head := "From: Bench <" + mailFrom + ">\r\nTo: Alice <" + rcptTo + ">\r\n" +
		"Subject: postern side-by-side benchmark\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	b := append(make([]byte, 0, size+80), head...)
	for i := 0; len(b) < size; i++ {
		for j := range 76 {
			b = append(b, alphabet[(i*7+j*13)%64])
		}
		b = append(b, "\r\n"...)
	}
	return append(b, ".\r\n"...)
}

// smtpSession sends one message in one session: greeting, EHLO, MAIL,
// RCPT, DATA, the message, QUIT. No PIPELINING.
func smtpSession(ctx context.Context, t target, src netip.Addr, body []byte, clk *stepClock) (resumed bool, err error) {
	clk.begin()
	c, err := dial(ctx, t, src, time.Now().Add(60*time.Second))
	if err != nil {
		return false, err
	}
	defer c.Close()
	clk.mark("connect")
	if err := c.SMTPReply(220); err != nil {
		return c.Resumed, fmt.Errorf("greeting: %w", err)
	}
	clk.mark("greeting")
	for _, s := range []struct {
		step, line string
		code       int
	}{{"EHLO", "EHLO client.bench.invalid", 250}, {"MAIL", "MAIL FROM:<" + mailFrom + ">", 250}, {"RCPT", "RCPT TO:<" + rcptTo + ">", 250}, {"DATA", "DATA", 354}} {
		if err := c.SMTPCmd(s.line, s.code); err != nil {
			return c.Resumed, err
		}
		clk.mark(s.step)
	}
	mid := fmt.Sprintf("Message-ID: <%016x.%08x@bench.invalid>\r\n", time.Now().UnixNano(), uint32(msgSeq.Add(1)))
	if _, err := c.C.Write(append([]byte(mid), body...)); err != nil {
		return c.Resumed, err
	}
	if err := c.SMTPReply(250); err != nil {
		return c.Resumed, fmt.Errorf("end of DATA: %w", err)
	}
	clk.mark("message")
	err = c.SMTPCmd("QUIT", 221)
	clk.mark("QUIT")
	return c.Resumed, err
}

// stepClock times the steps of one session, so that a window in which
// nothing completed can say where its slowest session spent its time.
type stepClock struct {
	t0, last time.Time
	n        int
	names    [8]string
	took     [8]time.Duration
}

func (c *stepClock) begin() {
	c.t0, c.n = time.Now(), 0
	c.last = c.t0
}

// mark ends the step named step.
func (c *stepClock) mark(step string) {
	now := time.Now()
	if c.n < len(c.took) {
		c.names[c.n], c.took[c.n] = step, now.Sub(c.last)
		c.n++
	}
	c.last = now
}

func (c *stepClock) String() string {
	var b strings.Builder
	for i := range c.n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %v", c.names[i], c.took[i].Round(10*time.Microsecond))
	}
	if c.n == 0 {
		b.WriteString("not connected")
	}
	return b.String()
}

// ---- measured runs ------------------------------------------------------------

// loadResult is what one measured window produced.
type loadResult struct {
	ops      int   // operations completed inside the window
	bytes    int64 // bytes received inside the window (FETCH)
	elapsed  time.Duration
	total    int // completed in total, warm-up included (SMTP: accepted messages)
	resumed  int // TLS sessions resumed, of handshakes
	shakes   int // TLS handshakes done
	errors   int
	firstErr error
	// The slowest session (login, SMTP) and its steps, ended or failed,
	// warm-up included: where the time went when nothing completed.
	slowest      time.Duration
	slowestSteps string
	// live counts the operations of every client of the window as they
	// complete inside it (window's measured).
	live *atomic.Int64
}

// op counts one operation completed inside the measured window.
func (r *loadResult) op() {
	r.ops++
	if r.live != nil {
		r.live.Add(1)
	}
}

func (r *loadResult) add(o loadResult) {
	r.ops += o.ops
	r.bytes += o.bytes
	r.total += o.total
	r.resumed += o.resumed
	r.shakes += o.shakes
	r.errors += o.errors
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	if o.slowest > r.slowest {
		r.slowest, r.slowestSteps = o.slowest, o.slowestSteps
	}
}

// timed notes a session's steps if it is the slowest so far.
func (r *loadResult) timed(c *stepClock) {
	if d := time.Since(c.t0); d > r.slowest {
		r.slowest, r.slowestSteps = d, c.String()
	}
}

// stalled describes a window in which nothing completed.
func (r *loadResult) stalled() string {
	s := fmt.Sprintf("nothing completed in the measured window (%d sessions before it", r.total)
	if r.slowest > 0 {
		s += fmt.Sprintf("; the slowest took %v: %s", r.slowest.Round(time.Millisecond), r.slowestSteps)
	}
	return s + ")"
}

func (r *loadResult) fail(err error) {
	r.errors++
	if r.firstErr == nil {
		r.firstErr = err
	}
}

// hooks run at the edges of the measured window (CPU snapshots).
type hooks struct{ start, end func() }

// windowGrace is how much longer than asked a window in which nothing
// completed may go on (a variable for tests).
var windowGrace = 10 * time.Second

// window runs a measured window (benchkit.WindowUntil). A window in which
// no operation completed goes on until one does, for up to
// windowGrace more: a backend that holds every client up for a moment
// (Dovecot's greeting took 2.7 s once on a loaded machine) lowers the
// rate instead of leaving nothing to measure. One that completes nothing
// even then is reported by the caller (loadResult.stalled).
func window(ctx context.Context, clients int, warmup, dur time.Duration, h hooks, work func(i int, phase *atomic.Int32, res *loadResult)) loadResult {
	var live atomic.Int64
	results, elapsed := benchkit.WindowUntil(ctx, clients, warmup, dur, dur+windowGrace, func() bool { return live.Load() > 0 }, h.start, h.end,
		func(i int, phase *atomic.Int32, res *loadResult) {
			res.live = &live
			work(i, phase, res)
		})
	var out loadResult
	for _, r := range results {
		out.add(r)
	}
	out.elapsed = elapsed
	return out
}

// sourceAddr returns the loopback source of client i of a group,
// 127.<group>.<i/250>.<i%250+1>: Dovecot limits a user to 10 connections
// per client address, and every side hands Dovecot the client's address.
func sourceAddr(group byte, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, group, byte(i / 250), byte(i%250 + 1)})
}

// account is a harness user.
type account struct{ user, pass string }

// The harness users (test/backends/conf/users).
var (
	loginUser = account{"alice@example.test", "alice-pass-1"}
	bigUser   = account{"bob@example.test", "bob-pass-2"}
)

// fetchRun: every client logs in once, SELECTs INBOX and fetches message 1
// (BODY.PEEK[]) over and over; bytes count as they arrive inside the
// window, every literal's size is checked.
func fetchRun(ctx context.Context, t target, size int64, clients int, warmup, dur time.Duration, h hooks) loadResult {
	return window(ctx, clients, warmup, dur, h, func(i int, phase *atomic.Int32, res *loadResult) {
		t := ownCache(t)
		for phase.Load() != benchkit.Stopping && ctx.Err() == nil {
			if err := fetchSession(ctx, t, sourceAddr(10+t.group, i), size, phase, res); err != nil {
				res.fail(err)
				benchkit.SleepCtx(ctx, 100*time.Millisecond)
			}
		}
	})
}

func fetchSession(ctx context.Context, t target, src netip.Addr, size int64, phase *atomic.Int32, res *loadResult) error {
	const perFetch = 2 * time.Minute
	c, err := dial(ctx, t, src, time.Now().Add(perFetch))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.IMAPGreeting(); err != nil {
		return err
	}
	if err := c.IMAPCmd("LOGIN "+bigUser.user+" "+bigUser.pass, nil); err != nil {
		return err
	}
	if err := c.IMAPCmd("SELECT INBOX", nil); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for phase.Load() != benchkit.Stopping && ctx.Err() == nil {
		c.C.SetDeadline(time.Now().Add(perFetch))
		got := int64(-1)
		err := c.IMAPCmd("FETCH 1 BODY.PEEK[]", func(r io.Reader, n int64) error {
			got = n
			for left := n; left > 0; {
				k, err := r.Read(buf[:min(int64(len(buf)), left)])
				left -= int64(k)
				if phase.Load() == benchkit.Measuring {
					res.bytes += int64(k)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if got != size {
			return fmt.Errorf("FETCH: literal of %d bytes, want %d", got, size)
		}
		res.total++
		if phase.Load() == benchkit.Measuring {
			res.op()
		}
	}
	c.C.SetDeadline(time.Now().Add(30 * time.Second))
	return c.IMAPCmd("LOGOUT", nil)
}

// ownCache returns t with a TLS session cache of its own when t resumes
// sessions: each load client keeps its own sessions, as a mail client does.
func ownCache(t target) target {
	if t.tls != nil && t.tls.ClientSessionCache != nil {
		t.tls = t.tls.Clone()
		t.tls.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	}
	return t
}

// loginRun: closed-loop sessions of connect (TLS handshake), greeting,
// LOGIN, LOGOUT; a session counts when its last reply arrives inside the
// window.
func loginRun(ctx context.Context, t target, clients int, warmup, dur time.Duration, h hooks) loadResult {
	return window(ctx, clients, warmup, dur, h, func(i int, phase *atomic.Int32, res *loadResult) {
		t := ownCache(t)
		src := sourceAddr(11+t.group, i)
		var clk stepClock
		for phase.Load() != benchkit.Stopping && ctx.Err() == nil {
			resumed, err := loginSession(ctx, t, src, &clk)
			res.timed(&clk)
			if err != nil {
				res.fail(err)
				benchkit.SleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			res.total++
			if phase.Load() == benchkit.Measuring {
				res.op()
				if t.tls != nil {
					res.shakes++
					if resumed {
						res.resumed++
					}
				}
			}
		}
	})
}

func loginSession(ctx context.Context, t target, src netip.Addr, clk *stepClock) (bool, error) {
	clk.begin()
	c, err := dial(ctx, t, src, time.Now().Add(30*time.Second))
	if err != nil {
		return false, err
	}
	defer c.Close()
	clk.mark("connect")
	if err := c.IMAPGreeting(); err != nil {
		return c.Resumed, err
	}
	clk.mark("greeting")
	if err := c.IMAPCmd("LOGIN "+loginUser.user+" "+loginUser.pass, nil); err != nil {
		return c.Resumed, err
	}
	clk.mark("LOGIN")
	err = c.IMAPCmd("LOGOUT", nil)
	clk.mark("LOGOUT")
	return c.Resumed, err
}

// smtpRun: clients closed-loop sessions of one message each; a message
// counts when its final 250 arrives inside the window.
func smtpRun(ctx context.Context, t target, body []byte, clients int, warmup, dur time.Duration, h hooks) loadResult {
	return window(ctx, clients, warmup, dur, h, func(i int, phase *atomic.Int32, res *loadResult) {
		t := ownCache(t)
		src := sourceAddr(12+t.group, i)
		var clk stepClock
		for phase.Load() != benchkit.Stopping && ctx.Err() == nil {
			resumed, err := smtpSession(ctx, t, src, body, &clk)
			res.timed(&clk)
			if err != nil {
				res.fail(err)
				benchkit.SleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			res.total++
			if phase.Load() == benchkit.Measuring {
				res.op()
				if t.tls != nil {
					res.shakes++
					if resumed {
						res.resumed++
					}
				}
			}
		}
	})
}
