// Package mailclient is the benchmarks' IMAP, POP3 and SMTP client
// connection: just enough protocol to drive a load, with every reply
// checked, and the PROXY v2 header and implicit TLS of the side being
// measured.
package mailclient

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
	"time"

	"github.com/postern/postern/internal/testenv"
)

// ErrReply is wrapped by every error about a reply the server should not
// have given.
var ErrReply = errors.New("unexpected reply")

// Target is where a client connects.
type Target struct {
	Addr  string      // 127.0.0.1:port
	Proxy bool        // open every connection with a PROXY v2 header
	TLS   *tls.Config // implicit TLS (nil: none); its ClientSessionCache decides resumption
}

// Conn is one client connection.
type Conn struct {
	C       net.Conn      // the connection (a *tls.Conn with TLS)
	R       *bufio.Reader // reads C
	Resumed bool          // the TLS handshake resumed a session
	tag     int
}

// Dial connects from src (the zero Addr: any) to t, sends the PROXY v2
// header when t wants one (its source is the connection's own address,
// exactly what a proxy would announce for it), does the TLS handshake
// when t has TLS, and gives the whole connection deadline.
func Dial(ctx context.Context, t Target, src netip.Addr, deadline time.Time) (*Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, Deadline: deadline}
	if src.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	c, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(deadline)
	if t.Proxy {
		la := c.LocalAddr().(*net.TCPAddr).AddrPort()
		ra := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		if _, err := c.Write(testenv.ProxyV2Header(la, ra)); err != nil {
			c.Close()
			return nil, err
		}
	}
	out := &Conn{C: c}
	if t.TLS != nil {
		tc := tls.Client(c, t.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		out.C = tc
		out.Resumed = tc.ConnectionState().DidResume
	}
	out.R = bufio.NewReaderSize(out.C, 64<<10)
	return out, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.C.Close() }

// Line reads one line without its CRLF; it is valid until the next read.
func (c *Conn) Line() ([]byte, error) {
	l, err := c.R.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(l, "\r\n"), nil
}

// Send writes s and CRLF.
func (c *Conn) Send(s string) error {
	_, err := io.WriteString(c.C, s+"\r\n")
	return err
}

// Trunc shortens a line for an error message.
func Trunc(l []byte) string {
	if len(l) > 100 {
		return string(l[:100]) + "…"
	}
	return string(l)
}

// ---- IMAP ---------------------------------------------------------------------

// IMAPGreeting reads the server's greeting, which must be OK.
func (c *Conn) IMAPGreeting() error {
	l, err := c.Line()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if !bytes.HasPrefix(l, []byte("* OK")) {
		return fmt.Errorf("%w: greeting %q", ErrReply, Trunc(l))
	}
	return nil
}

// LiteralSize returns n when l ends with a literal announcement "{n}".
func LiteralSize(l []byte) (int64, bool) {
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

// IMAPCmd sends one tagged command and reads the response to its tagged
// completion, which must be OK. Literals in the response are passed to lit
// (nil: discarded) as they arrive.
func (c *Conn) IMAPCmd(cmd string, lit func(r io.Reader, n int64) error) error {
	c.tag++
	tag := "b" + strconv.Itoa(c.tag)
	if err := c.Send(tag + " " + cmd); err != nil {
		return err
	}
	verb, _, _ := bytes.Cut([]byte(cmd), []byte(" "))
	for range 100_000 {
		l, err := c.Line()
		if err != nil {
			return fmt.Errorf("%s: %w", verb, err)
		}
		if n, ok := LiteralSize(l); ok {
			if lit == nil {
				_, err = c.R.Discard(int(n))
			} else {
				err = lit(c.R, n)
			}
			if err != nil {
				return fmt.Errorf("%s: literal: %w", verb, err)
			}
			continue // the rest of the line follows the literal
		}
		if bytes.HasPrefix(l, []byte(tag+" ")) {
			if !bytes.HasPrefix(l[len(tag)+1:], []byte("OK")) {
				return fmt.Errorf("%w: %s: %q", ErrReply, verb, Trunc(l))
			}
			return nil
		}
	}
	return fmt.Errorf("%s: too many response lines", verb)
}

// ---- POP3 ---------------------------------------------------------------------

// POPOK reads one status line, which must be +OK.
func (c *Conn) POPOK(what string) error {
	l, err := c.Line()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !bytes.HasPrefix(l, []byte("+OK")) {
		return fmt.Errorf("%w: %s: %q", ErrReply, what, Trunc(l))
	}
	return nil
}

// POPCmd sends one command and reads its status line.
func (c *Conn) POPCmd(cmd, what string) error {
	if err := c.Send(cmd); err != nil {
		return err
	}
	return c.POPOK(what)
}

// POPLogin reads the greeting and logs in with USER and PASS.
func (c *Conn) POPLogin(user, pass string) error {
	if err := c.POPOK("greeting"); err != nil {
		return err
	}
	if err := c.POPCmd("USER "+user, "USER"); err != nil {
		return err
	}
	return c.POPCmd("PASS "+pass, "PASS")
}

// ---- SMTP ---------------------------------------------------------------------

// SMTPReply reads one (multi-line) reply, whose code must be want.
func (c *Conn) SMTPReply(want int) error {
	for range 1000 {
		l, err := c.R.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(l) < 4 {
			return fmt.Errorf("%w: %q", ErrReply, Trunc(l))
		}
		if l[3] == '-' {
			continue
		}
		code, err := strconv.Atoi(string(l[:3]))
		if err != nil || code != want {
			return fmt.Errorf("%w: want %d, got %q", ErrReply, want, Trunc(bytes.TrimRight(l, "\r\n")))
		}
		return nil
	}
	return fmt.Errorf("%w: reply too long", ErrReply)
}

// SMTPCmd sends one command line and reads its reply, whose code must be
// want.
func (c *Conn) SMTPCmd(line string, want int) error {
	if err := c.Send(line); err != nil {
		return err
	}
	if err := c.SMTPReply(want); err != nil {
		return fmt.Errorf("%s: %w", line, err)
	}
	return nil
}
