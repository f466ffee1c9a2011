package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/bench/internal/mailclient"
)

// target is where the load generator connects.
type target struct {
	name  string // direct, through, relay
	addr  string // 127.0.0.1:port
	proxy bool   // open every connection with a PROXY v2 header
	pid   int    // the proxy process in between (postern serve or the relay), 0: none
}

// dial connects from src to t (mailclient.Dial).
func dial(ctx context.Context, t target, src netip.Addr, deadline time.Time) (*mailclient.Conn, error) {
	return mailclient.Dial(ctx, mailclient.Target{Addr: t.addr, Proxy: t.proxy}, src, deadline)
}

// popMultiline reads a multi-line answer up to and including its ".\r\n"
// terminator in large chunks, passing every chunk to count, and returns
// the bytes read (the terminator included). A line starting with "." is
// dot-stuffed, so "\r\n.\r\n" appears only at the end.
func popMultiline(r *bufio.Reader, count func(int)) (int64, error) {
	var total int64
	tail := []byte("\r\n") // the status line's end
	for {
		if _, err := r.Peek(1); err != nil {
			return total, err
		}
		chunk, _ := r.Peek(r.Buffered())
		// Search tail+chunk for the terminator.
		probe := append(slices.Clone(tail), chunk[:min(len(chunk), 5)]...)
		end := -1
		if i := bytes.Index(probe, []byte("\r\n.\r\n")); i >= 0 {
			end = i + 5 - len(tail)
		} else if i := bytes.Index(chunk, []byte("\r\n.\r\n")); i >= 0 {
			end = i + 5
		}
		n := len(chunk)
		if end >= 0 {
			n = end
		}
		if n >= 5 {
			tail = append(tail[:0], chunk[n-5:n]...)
		} else {
			tail = append(tail, chunk[:n]...)
			tail = tail[max(0, len(tail)-5):]
		}
		r.Discard(n)
		total += int64(n)
		count(n)
		if end >= 0 {
			return total, nil
		}
	}
}

// ---- the big message ----------------------------------------------------------

// bigMessage is the large message of the FETCH and RETR scenarios, as
// stored in the Maildir (LF line ends, as Dovecot stores delivered mail).
type bigMessage struct {
	file  []byte // the Maildir file
	vsize int64  // its size with CRLF line ends: the IMAP literal
	crc   uint32 // CRC-32 of the CRLF form
	lines int
}

// newBigMessage builds the message of about size bytes
// (benchkit.BigMessage).
func newBigMessage(size int) *bigMessage {
	m := new(bigMessage)
	m.file, m.vsize = benchkit.BigMessage("postern IMAP benchmark", size)
	m.lines = bytes.Count(m.file, []byte("\n"))
	m.crc = crc32.ChecksumIEEE(bytes.ReplaceAll(m.file, []byte("\n"), []byte("\r\n")))
	return m
}

// ---- measured runs ------------------------------------------------------------

// loadResult is what one measured run produced.
type loadResult struct {
	ops      int           // completed inside the window (fetches, retrievals or login sessions)
	bytes    int64         // bytes received inside the window (transfer scenarios)
	elapsed  time.Duration // the window
	total    int           // completed in total, warm-up included
	errors   int
	firstErr error
	lat      []time.Duration // per operation, inside the window
}

func (r *loadResult) add(o loadResult) {
	r.ops += o.ops
	r.bytes += o.bytes
	r.total += o.total
	r.errors += o.errors
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	r.lat = append(r.lat, o.lat...)
}

func (r *loadResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

func (r *loadResult) byteRate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.bytes) / r.elapsed.Seconds()
}

func (r *loadResult) percentile(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	slices.Sort(r.lat)
	return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
}

// hooks run at the edges of the measured window (CPU snapshots).
type hooks struct {
	start func()
	end   func()
}

// window runs clients workers (work(i, phase, res) until phase is
// benchkit.Stopping or ctx is done): warm-up, then the measured window of
// dur. Workers still busy at the end finish their current operation.
func window(ctx context.Context, clients int, warmup, dur time.Duration, h hooks, work func(i int, phase *atomic.Int32, res *loadResult)) loadResult {
	results, elapsed := benchkit.Window(ctx, clients, warmup, dur, h.start, h.end, work)
	var out loadResult
	for _, r := range results {
		out.add(r)
	}
	out.elapsed = elapsed
	return out
}

func (r *loadResult) fail(err error) {
	r.errors++
	if r.firstErr == nil {
		r.firstErr = err
	}
}

// account is a harness user.
type account struct{ user, pass string }

// transferRun is the large-message scenario of one protocol: every client
// logs in once, then fetches (IMAP: SELECT INBOX, FETCH 1 BODY.PEEK[];
// POP3: RETR 1) the big message over and over. Bytes count as they arrive
// inside the window; each client checks the content of its first transfer
// (CRC-32) and the size of every one.
func transferRun(ctx context.Context, proto string, t target, acct account, m *bigMessage, clients int, warmup, dur time.Duration, h hooks) loadResult {
	return window(ctx, clients, warmup, dur, h, func(i int, phase *atomic.Int32, res *loadResult) {
		counting := func(n int) {
			if phase.Load() == benchkit.Measuring {
				res.bytes += int64(n)
			}
		}
		for phase.Load() != benchkit.Stopping && ctx.Err() == nil {
			if err := transferSession(ctx, proto, t, sourceAddr(10, i), acct, m, phase, counting, res); err != nil {
				res.fail(err)
				benchkit.SleepCtx(ctx, 100*time.Millisecond) // a failure of the benchmark: do not spin
			}
		}
	})
}

func transferSession(ctx context.Context, proto string, t target, src netip.Addr, acct account, m *bigMessage, phase *atomic.Int32, counting func(int), res *loadResult) error {
	const perTransfer = 2 * time.Minute
	c, err := dial(ctx, t, src, time.Now().Add(perTransfer))
	if err != nil {
		return err
	}
	defer c.Close()
	var one func(check bool) error
	switch proto {
	case "imap":
		if err := c.IMAPGreeting(); err != nil {
			return err
		}
		if err := c.IMAPCmd("LOGIN "+acct.user+" "+acct.pass, nil); err != nil {
			return err
		}
		if err := c.IMAPCmd("SELECT INBOX", nil); err != nil {
			return err
		}
		one = func(check bool) error {
			got := int64(-1)
			var crc uint32
			err := c.IMAPCmd("FETCH 1 BODY.PEEK[]", func(r io.Reader, n int64) error {
				got = n
				var w io.Writer = countWriter(counting)
				hw := crc32.NewIEEE()
				if check {
					w = io.MultiWriter(w, hw)
				}
				_, err := io.CopyN(w, r, n)
				crc = hw.Sum32()
				return err
			})
			if err != nil {
				return err
			}
			if got != m.vsize {
				return fmt.Errorf("FETCH: literal of %d bytes, want %d", got, m.vsize)
			}
			if check && crc != m.crc {
				return fmt.Errorf("FETCH: content differs from the stored message (CRC-32 %08x, want %08x)", crc, m.crc)
			}
			return nil
		}
	case "pop3":
		if err := c.POPLogin(acct.user, acct.pass); err != nil {
			return err
		}
		one = func(bool) error {
			if err := c.POPCmd("RETR 1", "RETR"); err != nil {
				return err
			}
			n, err := popMultiline(c.R, counting)
			if err != nil {
				return fmt.Errorf("RETR: %w", err)
			}
			if want := m.vsize + 3; n != want {
				return fmt.Errorf("RETR: %d bytes, want %d", n, want)
			}
			return nil
		}
	default:
		return fmt.Errorf("unknown protocol %q", proto)
	}
	for first := true; phase.Load() != benchkit.Stopping && ctx.Err() == nil; first = false {
		start := time.Now()
		c.C.SetDeadline(start.Add(perTransfer))
		if err := one(first); err != nil {
			return err
		}
		res.total++
		if phase.Load() == benchkit.Measuring {
			res.ops++
			res.lat = append(res.lat, time.Since(start))
		}
	}
	c.C.SetDeadline(time.Now().Add(30 * time.Second))
	if proto == "imap" {
		return c.IMAPCmd("LOGOUT", nil)
	}
	return c.POPCmd("QUIT", "QUIT")
}

// countWriter passes the size of every write to count.
type countWriter func(int)

func (w countWriter) Write(p []byte) (int, error) { w(len(p)); return len(p), nil }

// loginRun is the logins-per-second scenario: every client runs closed-loop
// sessions of connect, greeting, LOGIN (IMAP) or USER+PASS (POP3), LOGOUT
// or QUIT. A session counts when its last reply arrives inside the window.
func loginRun(ctx context.Context, proto string, t target, acct account, authPlain bool, clients int, warmup, dur time.Duration, h hooks) loadResult {
	return window(ctx, clients, warmup, dur, h, func(i int, phase *atomic.Int32, res *loadResult) {
		src := sourceAddr(11, i)
		for phase.Load() != benchkit.Stopping && ctx.Err() == nil {
			start := time.Now()
			if err := loginSession(ctx, proto, t, src, acct, authPlain); err != nil {
				res.fail(err)
				benchkit.SleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			res.total++
			if phase.Load() == benchkit.Measuring {
				res.ops++
				res.lat = append(res.lat, time.Since(start))
			}
		}
	})
}

// loginSession runs one login session; authPlain logs in to IMAP with
// AUTHENTICATE PLAIN and SASL-IR (as postern replays logins) instead of
// LOGIN.
func loginSession(ctx context.Context, proto string, t target, src netip.Addr, acct account, authPlain bool) error {
	c, err := dial(ctx, t, src, time.Now().Add(30*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	if proto == "imap" {
		if err := c.IMAPGreeting(); err != nil {
			return err
		}
		login := "LOGIN " + acct.user + " " + acct.pass
		if authPlain {
			login = "AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+acct.user+"\x00"+acct.pass))
		}
		if err := c.IMAPCmd(login, nil); err != nil {
			return err
		}
		return c.IMAPCmd("LOGOUT", nil)
	}
	if err := c.POPLogin(acct.user, acct.pass); err != nil {
		return err
	}
	return c.POPCmd("QUIT", "QUIT")
}
