package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/internal/testenv"
)

// target is where the load generator connects for one side of a scenario.
type target struct {
	side  string      // direct, nginx, haproxy, postern
	addr  string      // 127.0.0.1:port
	proxy bool        // open every connection with a PROXY v2 header (direct)
	tls   *tls.Config // implicit TLS (nil: none); its ClientSessionCache decides resumption
}

// conn is one mail client connection (IMAP or SMTP).
type conn struct {
	c       net.Conn
	r       *bufio.Reader
	tag     int
	resumed bool
}

var errReply = errors.New("unexpected reply")

// dial connects from src to t, sends the PROXY v2 header when t wants one
// (its source is the connection's own address), does the TLS handshake
// when t has TLS, and gives the whole connection deadline.
func dial(ctx context.Context, t target, src netip.Addr, deadline time.Time) (*conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, Deadline: deadline}
	if src.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(deadline)
	if t.proxy {
		la := c.LocalAddr().(*net.TCPAddr).AddrPort()
		ra := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		if _, err := c.Write(testenv.ProxyV2Header(la, ra)); err != nil {
			c.Close()
			return nil, err
		}
	}
	out := &conn{c: c}
	if t.tls != nil {
		tc := tls.Client(c, t.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		out.c = tc
		out.resumed = tc.ConnectionState().DidResume
	}
	out.r = bufio.NewReaderSize(out.c, 64<<10)
	return out, nil
}

func (c *conn) close() { c.c.Close() }

// line reads one line without its CRLF.
func (c *conn) line() ([]byte, error) {
	l, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(l, "\r\n"), nil
}

func (c *conn) write(s string) error {
	_, err := io.WriteString(c.c, s+"\r\n")
	return err
}

func trunc(l []byte) string {
	if len(l) > 100 {
		return string(l[:100]) + "…"
	}
	return string(l)
}

// ---- IMAP ---------------------------------------------------------------------

func (c *conn) imapGreeting() error {
	l, err := c.line()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if !bytes.HasPrefix(l, []byte("* OK")) {
		return fmt.Errorf("%w: greeting %q", errReply, trunc(l))
	}
	return nil
}

// literalSize returns n when l ends with a literal announcement "{n}".
func literalSize(l []byte) (int64, bool) {
	if len(l) < 3 || l[len(l)-1] != '}' {
		return 0, false
	}
	i := bytes.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(l[i+1:len(l)-1]), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// imapCmd sends one tagged command and reads the response up to its tagged
// completion, which must be OK. Literals are passed to lit (nil: discarded).
func (c *conn) imapCmd(cmd string, lit func(r io.Reader, n int64) error) error {
	c.tag++
	tag := "b" + strconv.Itoa(c.tag)
	if err := c.write(tag + " " + cmd); err != nil {
		return err
	}
	verb, _, _ := bytes.Cut([]byte(cmd), []byte(" "))
	for range 100_000 {
		l, err := c.line()
		if err != nil {
			return fmt.Errorf("%s: %w", verb, err)
		}
		if n, ok := literalSize(l); ok {
			if lit == nil {
				_, err = c.r.Discard(int(n))
			} else {
				err = lit(c.r, n)
			}
			if err != nil {
				return fmt.Errorf("%s: literal: %w", verb, err)
			}
			continue
		}
		if bytes.HasPrefix(l, []byte(tag+" ")) {
			if !bytes.HasPrefix(l[len(tag)+1:], []byte("OK")) {
				return fmt.Errorf("%w: %s: %q", errReply, verb, trunc(l))
			}
			return nil
		}
	}
	return fmt.Errorf("%s: too many response lines", verb)
}

// ---- SMTP ---------------------------------------------------------------------

// smtpReply reads one (multi-line) reply and checks its code.
func (c *conn) smtpReply(want int) error {
	for range 1000 {
		l, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(l) < 4 {
			return fmt.Errorf("%w: %q", errReply, trunc(l))
		}
		if l[3] == '-' {
			continue
		}
		code, err := strconv.Atoi(string(l[:3]))
		if err != nil || code != want {
			return fmt.Errorf("%w: want %d, got %q", errReply, want, trunc(bytes.TrimRight(l, "\r\n")))
		}
		return nil
	}
	return fmt.Errorf("%w: reply too long", errReply)
}

func (c *conn) smtpCmd(line string, want int) error {
	if err := c.write(line); err != nil {
		return err
	}
	if err := c.smtpReply(want); err != nil {
		return fmt.Errorf("%s: %w", line, err)
	}
	return nil
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
func smtpSession(ctx context.Context, t target, src netip.Addr, body []byte) (resumed bool, err error) {
	c, err := dial(ctx, t, src, time.Now().Add(60*time.Second))
	if err != nil {
		return false, err
	}
	defer c.close()
	if err := c.smtpReply(220); err != nil {
		return c.resumed, fmt.Errorf("greeting: %w", err)
	}
	for _, s := range []struct {
		line string
		code int
	}{{"EHLO client.bench.invalid", 250}, {"MAIL FROM:<" + mailFrom + ">", 250}, {"RCPT TO:<" + rcptTo + ">", 250}, {"DATA", 354}} {
		if err := c.smtpCmd(s.line, s.code); err != nil {
			return c.resumed, err
		}
	}
	mid := fmt.Sprintf("Message-ID: <%016x.%08x@bench.invalid>\r\n", time.Now().UnixNano(), uint32(msgSeq.Add(1)))
	if _, err := c.c.Write(append([]byte(mid), body...)); err != nil {
		return c.resumed, err
	}
	if err := c.smtpReply(250); err != nil {
		return c.resumed, fmt.Errorf("end of DATA: %w", err)
	}
	return c.resumed, c.smtpCmd("QUIT", 221)
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
}

func (r *loadResult) fail(err error) {
	r.errors++
	if r.firstErr == nil {
		r.firstErr = err
	}
}

// hooks run at the edges of the measured window (CPU snapshots).
type hooks struct{ start, end func() }

func window(ctx context.Context, clients int, warmup, dur time.Duration, h hooks, work func(i int, phase *atomic.Int32, res *loadResult)) loadResult {
	results, elapsed := benchkit.Window(ctx, clients, warmup, dur, h.start, h.end, work)
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
			if err := fetchSession(ctx, t, sourceAddr(10, i), size, phase, res); err != nil {
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
	defer c.close()
	if err := c.imapGreeting(); err != nil {
		return err
	}
	if err := c.imapCmd("LOGIN "+bigUser.user+" "+bigUser.pass, nil); err != nil {
		return err
	}
	if err := c.imapCmd("SELECT INBOX", nil); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for phase.Load() != benchkit.Stopping && ctx.Err() == nil {
		c.c.SetDeadline(time.Now().Add(perFetch))
		got := int64(-1)
		err := c.imapCmd("FETCH 1 BODY.PEEK[]", func(r io.Reader, n int64) error {
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
			res.ops++
		}
	}
	c.c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.imapCmd("LOGOUT", nil)
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
		src := sourceAddr(11, i)
		for phase.Load() != benchkit.Stopping && ctx.Err() == nil {
			resumed, err := loginSession(ctx, t, src)
			if err != nil {
				res.fail(err)
				benchkit.SleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			res.total++
			if phase.Load() == benchkit.Measuring {
				res.ops++
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

func loginSession(ctx context.Context, t target, src netip.Addr) (bool, error) {
	c, err := dial(ctx, t, src, time.Now().Add(30*time.Second))
	if err != nil {
		return false, err
	}
	defer c.close()
	if err := c.imapGreeting(); err != nil {
		return c.resumed, err
	}
	if err := c.imapCmd("LOGIN "+loginUser.user+" "+loginUser.pass, nil); err != nil {
		return c.resumed, err
	}
	return c.resumed, c.imapCmd("LOGOUT", nil)
}

// smtpRun: clients closed-loop sessions of one message each; a message
// counts when its final 250 arrives inside the window.
func smtpRun(ctx context.Context, t target, body []byte, clients int, warmup, dur time.Duration, h hooks) loadResult {
	return window(ctx, clients, warmup, dur, h, func(i int, phase *atomic.Int32, res *loadResult) {
		t := ownCache(t)
		src := sourceAddr(12, i)
		for phase.Load() != benchkit.Stopping && ctx.Err() == nil {
			resumed, err := smtpSession(ctx, t, src, body)
			if err != nil {
				res.fail(err)
				benchkit.SleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			res.total++
			if phase.Load() == benchkit.Measuring {
				res.ops++
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
