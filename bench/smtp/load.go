package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/internal/testenv"
)

// target is where the load generator sends mail.
type target struct {
	name  string // "direct" or "through"
	addr  string // 127.0.0.1:port
	proxy bool   // open every connection with a PROXY v2 header
}

// The envelope of every benchmark message: a known local user of the
// harness, so Postfix queues it and delivers it to Dovecot over LMTP.
const (
	mailFrom = "bench@bench.invalid"
	rcptTo   = "alice@example.test"
)

// message is a prebuilt message body of a given total size (headers with
// a per-message Message-ID included), dot-terminated.
type message struct {
	size int    // bytes between DATA's 354 and the final ".\r\n", headers included
	body []byte // everything after the Message-ID header, ending in "\r\n.\r\n"
}

// midLen is the length of the per-message header written before body.
const midLen = len("Message-ID: <0000000000000000.00000000@bench.invalid>\r\n")

// newMessage builds a message of size bytes: a few headers and lines of 76
// base64-like characters, as attachments are sent.
func newMessage(size int) *message {
	head := "From: Bench <" + mailFrom + ">\r\nTo: Alice <" + rcptTo + ">\r\n" +
		"Subject: postern SMTP benchmark\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n"
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	b := make([]byte, 0, size+8)
	b = append(b, head...)
	want := size - midLen
	for i := 0; len(b) < want; i++ {
		n := min(76, want-len(b)-2)
		if n <= 0 {
			b = append(b, "x\r\n"...)
			break
		}
		for j := 0; j < n; j++ {
			b = append(b, alphabet[(i*7+j*13)%64])
		}
		b = append(b, "\r\n"...)
	}
	m := &message{size: midLen + len(b)}
	m.body = append(b, ".\r\n"...)
	return m
}

// client is one SMTP client connection.
type client struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

var errReply = errors.New("unexpected reply")

// dial connects to t, sends the PROXY header when t wants one (the source
// is the connection's own 127.0.0.1:port, exactly what postern announces
// for it), and reads the greeting. The whole connection gets deadline.
func dial(ctx context.Context, t target, deadline time.Time) (*client, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(deadline)
	cl := &client{c: c, r: bufio.NewReaderSize(c, 4096), w: bufio.NewWriterSize(c, 64<<10)}
	if t.proxy {
		src := c.LocalAddr().(*net.TCPAddr).AddrPort()
		dst := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		if _, err := c.Write(testenv.ProxyV2Header(src, dst)); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := cl.expect(220); err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	return cl, nil
}

// reply reads one (multi-line) reply and returns its code and last line.
func (c *client) reply() (int, string, error) {
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, "", err
		}
		if len(line) < 5 {
			return 0, "", fmt.Errorf("%w: %q", errReply, line)
		}
		if line[3] == '-' {
			continue
		}
		code, err := strconv.Atoi(string(line[:3]))
		if err != nil {
			return 0, "", fmt.Errorf("%w: %q", errReply, line)
		}
		return code, string(line[:len(line)-2]), nil
	}
}

func (c *client) expect(code int) error {
	got, text, err := c.reply()
	if err != nil {
		return err
	}
	if got != code {
		return fmt.Errorf("%w: want %d, got %q", errReply, code, text)
	}
	return nil
}

// cmd sends one command and checks the reply code.
func (c *client) cmd(line string, code int) error {
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return err
	}
	if err := c.expect(code); err != nil {
		return fmt.Errorf("%s: %w", line, err)
	}
	return nil
}

var msgSeq atomic.Uint64

// send sends one message: MAIL, RCPT, DATA, the message, and waits for the
// final 250 (queued). No PIPELINING: each command is one round trip.
func (c *client) send(m *message) error {
	if err := c.cmd("MAIL FROM:<"+mailFrom+"> SIZE="+strconv.Itoa(m.size), 250); err != nil {
		return err
	}
	if err := c.cmd("RCPT TO:<"+rcptTo+">", 250); err != nil {
		return err
	}
	if err := c.cmd("DATA", 354); err != nil {
		return err
	}
	fmt.Fprintf(c.w, "Message-ID: <%016x.%08x@bench.invalid>\r\n", time.Now().UnixNano(), uint32(msgSeq.Add(1)))
	if _, err := c.w.Write(m.body); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	if err := c.expect(250); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return nil
}

func (c *client) quit() error {
	err := c.cmd("QUIT", 221)
	c.c.Close()
	return err
}

// session runs one SMTP session of n messages: connect, EHLO, n × (MAIL,
// RCPT, DATA), QUIT. done is called after each accepted message with the
// time since the session (or the previous message) started.
func session(ctx context.Context, t target, m *message, n int, timeout time.Duration, done func(time.Duration)) error {
	start := time.Now()
	c, err := dial(ctx, t, start.Add(timeout))
	if err != nil {
		return err
	}
	defer c.c.Close()
	if err := c.cmd("EHLO client.bench.invalid", 250); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if n > 1 {
			c.c.SetDeadline(time.Now().Add(timeout))
		}
		if err := c.send(m); err != nil {
			return err
		}
		now := time.Now()
		done(now.Sub(start))
		start = now
	}
	return c.quit()
}

// loadResult is what one measured run produced.
type loadResult struct {
	messages int           // accepted inside the window
	bytes    int64         // their message bytes
	elapsed  time.Duration // the window
	accepted int           // accepted in total (warm-up included): what must be delivered
	errors   int
	firstErr error
	lat      []time.Duration // per message, inside the window
}

func (r *loadResult) add(o loadResult) {
	r.messages += o.messages
	r.bytes += o.bytes
	r.accepted += o.accepted
	r.errors += o.errors
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	r.lat = append(r.lat, o.lat...)
}

func (r *loadResult) rate() float64 { return float64(r.messages) / r.elapsed.Seconds() }

func (r *loadResult) byteRate() float64 { return float64(r.bytes) / r.elapsed.Seconds() }

// slow counts the messages that took at least d (TCP SYN retransmits and
// Postfix's in_flow_delay both show as pauses of about one second).
func (r *loadResult) slow(d time.Duration) int {
	n := 0
	for _, l := range r.lat {
		if l >= d {
			n++
		}
	}
	return n
}

func (r *loadResult) percentile(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	slices.Sort(r.lat)
	return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
}

// hooks run at the edges of the measured window (CPU snapshots, profiles).
type hooks struct {
	start func()
	end   func()
}

// runTimed runs clients closed-loop sessions of perSession messages each:
// warm-up, then the measured window of dur; sessions running at its end
// finish (their messages count only if accepted inside the window).
func runTimed(ctx context.Context, t target, m *message, clients, perSession int, warmup, dur, timeout time.Duration, h hooks) loadResult {
	results, elapsed := benchkit.Window(ctx, clients, warmup, dur, h.start, h.end, func(i int, phase *atomic.Int32, res *loadResult) {
		done := func(d time.Duration) {
			res.accepted++
			if phase.Load() == benchkit.Measuring {
				res.messages++
				res.bytes += int64(m.size)
				res.lat = append(res.lat, d)
			}
		}
		for phase.Load() != benchkit.Stopping && ctx.Err() == nil {
			if err := session(ctx, t, m, perSession, timeout, done); err != nil {
				res.errors++
				if res.firstErr == nil {
					res.firstErr = err
				}
				// An error is a failure of the benchmark: back off a
				// little rather than spin.
				time.Sleep(50 * time.Millisecond)
			}
		}
	})
	var out loadResult
	for _, r := range results {
		out.add(r)
	}
	out.elapsed = elapsed
	return out
}

// runCount sends count messages over clients concurrent connections, one
// session per message, after one warm-up message per client; the window
// runs from the first measured session to the last reply.
func runCount(ctx context.Context, t target, m *message, clients, count int, timeout time.Duration, h hooks) loadResult {
	results := make([]loadResult, clients)
	var counting atomic.Bool
	var left atomic.Int64
	left.Store(int64(count))
	var ready, wg sync.WaitGroup
	startGun := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			res := &results[i]
			done := func(d time.Duration) {
				res.accepted++
				if counting.Load() {
					res.messages++
					res.bytes += int64(m.size)
					res.lat = append(res.lat, d)
				}
			}
			fail := func(err error) {
				res.errors++
				if res.firstErr == nil {
					res.firstErr = err
				}
			}
			if err := session(ctx, t, m, 1, timeout, done); err != nil { // warm-up
				fail(err)
			}
			ready.Done()
			<-startGun
			for left.Add(-1) >= 0 && ctx.Err() == nil {
				if err := session(ctx, t, m, 1, timeout, done); err != nil {
					fail(err)
				}
			}
		}()
	}
	ready.Wait()
	h.start()
	counting.Store(true)
	t0 := time.Now()
	close(startGun)
	wg.Wait()
	elapsed := time.Since(t0)
	h.end()
	var out loadResult
	for _, r := range results {
		out.add(r)
	}
	out.elapsed = elapsed
	return out
}
