package smtpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/postern/postern/internal/ascii"
	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/mailaddr"
	"github.com/postern/postern/internal/relay"
)

// backend is the connection to the real mail server.
type backend struct {
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration
	replies *replyCache // the proxy's: the backend's replies read before
	quitted bool        // the client's QUIT went through: only close

	// The bytes written to and read from the backend after the
	// connection was set up (TLS and XCLIENT done), above TLS; reported
	// once, when the connection closes.
	up, down int64
	relayed  func(up, down int64) // nil: not reported

	rd, wd deadline // the deadlines set on conn

	// A command's last write, held (hold) by flushRead to go out with the
	// first read of its reply (WriteRead): held is the writer's buffer,
	// untouched until that read.
	hold bool
	held []byte
	wr   relay.WriteReader
}

// backendIO reads and writes the backend's connection (whichever it is
// now: plain, or TLS after STARTTLS) and counts the bytes.
type backendIO struct{ b *backend }

func (x backendIO) Read(p []byte) (int, error) {
	b := x.b
	if w := b.held; w != nil {
		b.held = nil
		nw, nr, err := b.wr.WriteRead(w, p, false)
		b.up += int64(nw)
		b.down += int64(nr)
		if nw < len(w) && err != nil {
			err = fmt.Errorf("writing to backend: %w", err)
		}
		return nr, err
	}
	n, err := b.conn.Read(p)
	b.down += int64(n)
	return n, err
}

func (x backendIO) Write(p []byte) (int, error) {
	b := x.b
	if b.hold {
		b.hold, b.held = false, p
		return len(p), nil
	}
	n, err := b.conn.Write(p)
	b.up += int64(n)
	return n, err
}

// report tells the observer the bytes relayed, once.
func (b *backend) report() {
	if b.relayed != nil {
		b.relayed(b.up, b.down)
		b.relayed = nil
	}
}

// dialBackend connects to the backend so that it sees the client's address
// (a PROXY header, or XCLIENT after its greeting), optionally over TLS, and
// returns the greeting to relay to the client.
func (p *Proxy) dialBackend(ctx context.Context, client, local netip.AddrPort) (*backend, reply, error) {
	cfg := &p.cfg
	// The shared dialer: the bound on backend connections, the PROXY
	// header (none with XCLIENT, which follows the greeting), and TLS for
	// a backend's implicit-TLS port.
	d := relay.Dialer{Addr: cfg.Backend, Proxy: cfg.BackendProxy, Timeout: cfg.Timeouts.Connect, Limit: cfg.BackendLimit, Names: cfg.BackendNames, Service: cfg.Service.String()}
	if d.Proxy == "xclient" {
		d.Proxy = "none"
	}
	d.HoldHeader = true // the greeting's first read sends it
	if cfg.BackendTLS == "tls" {
		d.TLS = cfg.BackendTLSConfig
	}
	if o := cfg.Observer; o != nil {
		d.Observe = func(t time.Duration, err error) { o.BackendDial(cfg.Service, cfg.Backend, t, err) }
	}
	conn, err := d.Dial(ctx, client, local)
	if err != nil {
		return nil, reply{}, err
	}
	b := &backend{conn: conn, timeout: cfg.Timeouts.Backend, replies: p.replies}
	fail := func(err error) (*backend, reply, error) {
		conn.Close()
		return nil, reply{}, err
	}
	conn.SetDeadline(time.Now().Add(cfg.Timeouts.Backend))
	b.r, b.w = p.bufs.replyReader(backendIO{b}), p.bufs.writer(backendIO{b})
	// A backend that closes the connection before the first byte of its
	// greeting usually refused the PROXY header (or waited for one); a 421
	// greeting without a header is Postfix waiting for one.
	hop := d.Hop(conn)
	hop.Proxy = cfg.BackendProxy
	if hop.Proxy == "" {
		hop.Proxy = "v2"
	}
	if _, err := b.r.Peek(1); err != nil {
		return fail(fmt.Errorf("backend greeting: %w", hop.ExplainFirstRead(err)))
	}
	greet, err := readReply(b.r, b.replies)
	if err != nil {
		return fail(fmt.Errorf("backend greeting: %w", err))
	}
	if greet.code != 220 {
		conn.Close()
		if a := hop.ExplainGreeting(greet.code, greet.text()); a != "" {
			return nil, greet, fmt.Errorf("backend greeting: %s", a)
		}
		return nil, greet, fmt.Errorf("backend greeting: %s", truncate(greet.text(), 120))
	}
	if cfg.BackendTLS == "starttls" {
		if err := b.startTLS(ctx, cfg.BackendTLSConfig, p.cfg.Hostname); err != nil {
			return fail(err)
		}
	}
	if cfg.BackendProxy == "xclient" {
		if greet, err = b.xclient(client, p.cfg.Hostname); err != nil {
			return fail(err)
		}
	}
	conn.SetDeadline(time.Time{})
	b.rd.forget()
	b.wd.forget()
	b.up, b.down = 0, 0 // from here on, what is relayed
	if o := cfg.Observer; o != nil {
		b.relayed = func(up, down int64) { o.SMTPRelayed(cfg.Service, up, down) }
	}
	return b, greet, nil
}

// startTLS upgrades the backend connection with EHLO + STARTTLS. The
// client's own EHLO follows later, so the backend sees a fresh session.
func (b *backend) startTLS(ctx context.Context, cfg *tls.Config, helo string) error {
	if r, err := b.cmd("EHLO " + helo); err != nil || r.code != 250 {
		return fmt.Errorf("backend EHLO before STARTTLS: %v %s", err, r.text())
	}
	r, err := b.cmd("STARTTLS")
	if err != nil || r.code != 220 {
		return fmt.Errorf("backend STARTTLS: %v %s", err, r.text())
	}
	evloop.MayBlock(ctx) // the handshake's CPU is not the loop's
	tc := tls.Client(b.conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS to backend: %w", err)
	}
	b.conn = tc
	// Whatever the backend sent after its 220 in plain text is dropped.
	b.r.Reset(backendIO{b})
	b.w.Reset(backendIO{b})
	return nil
}

// xclient tells a Postfix backend the client's address (XCLIENT) and
// returns the new greeting it answers with.
func (b *backend) xclient(client netip.AddrPort, helo string) (reply, error) {
	r, err := b.cmd("EHLO " + helo)
	if err != nil {
		return r, fmt.Errorf("backend EHLO before XCLIENT: %w", err)
	}
	if !hasCap(r, "XCLIENT") {
		return r, errors.New("backend does not offer XCLIENT to postern: allow it (Postfix smtpd_authorized_xclient_hosts) or use backend_proxy: v2")
	}
	addr := client.Addr().String()
	if client.Addr().Is6() {
		addr = "IPV6:" + addr
	}
	r, err = b.cmd(fmt.Sprintf("XCLIENT ADDR=%s PORT=%d NAME=[UNAVAILABLE]", addr, client.Port()))
	if err != nil {
		return r, fmt.Errorf("backend XCLIENT: %w", err)
	}
	if r.code != 220 {
		return r, fmt.Errorf("backend refused XCLIENT: %s", truncate(r.text(), 120))
	}
	return r, nil
}

// cmd sends one command line and reads the reply.
func (b *backend) cmd(line string) (reply, error) {
	b.armWrite()
	b.w.WriteString(line)
	b.w.WriteString("\r\n")
	return b.flushRead()
}

// cmdArg sends MAIL or RCPT with the argument as postern relays it
// (mailaddr.Arg.Canonical), written straight into the writer's buffer,
// and reads the reply.
func (b *backend) cmdArg(verb string, a mailaddr.Arg) (reply, error) {
	b.armWrite()
	b.w.WriteString(verb)
	b.w.WriteByte(' ')
	b.w.Write(a.AppendCanonical(b.w.AvailableBuffer()))
	b.w.WriteString("\r\n")
	return b.flushRead()
}

// flushRead writes what is buffered for the backend and reads its reply.
// On a plain socket with nothing of the backend's read ahead, the write
// goes out with the first read of the reply (sockio.Conn.WriteRead): the
// read then waits for the reply instead of first finding nothing. An SMTP
// server speaks only when spoken to (a reply, or closing, follows every
// command), so a new event always ends that wait.
func (b *backend) flushRead() (reply, error) {
	if b.w.Buffered() > 0 && b.r.Buffered() == 0 {
		if b.wr = relay.WriteReaderOf(b.conn); b.wr != nil {
			b.hold = true
		}
	}
	err := b.w.Flush()
	b.hold = false // Flush wrote nothing (an earlier write failed)
	if err != nil {
		b.held = nil
		return reply{}, fmt.Errorf("writing to backend: %w", err)
	}
	return b.read()
}

func (b *backend) send(line string) error {
	b.armWrite()
	b.w.WriteString(line)
	b.w.WriteString("\r\n")
	if err := b.w.Flush(); err != nil {
		return fmt.Errorf("writing to backend: %w", err)
	}
	return nil
}

func (b *backend) read() (reply, error) {
	b.armRead()
	return readReply(b.r, b.replies)
}

func (b *backend) close() {
	if b != nil && b.conn != nil {
		b.conn.Close()
		b.report()
	}
}

// quit ends the backend session politely, bounded in time.
func (b *backend) quit() {
	if b == nil || b.conn == nil {
		return
	}
	defer b.report()
	if b.quitted {
		b.conn.Close()
		return
	}
	// Bounded by quitTimeout, not the backend timeout: send and read set
	// their deadlines from b.timeout (a deadline set here directly was
	// replaced by theirs).
	b.timeout = quitTimeout
	b.rd.forget()
	b.wd.forget()
	if b.send("QUIT") == nil {
		b.read()
	}
	b.conn.Close()
}

// quitTimeout bounds the QUIT postern says to the backend itself when a
// session ends without the client's.
const quitTimeout = 2 * time.Second

func hasCap(r reply, name string) bool {
	for _, l := range r.lines[min(1, len(r.lines)):] {
		if len(l) > 4 {
			f := strings.Fields(l[4:])
			if len(f) > 0 && ascii.EqualFold(f[0], name) {
				return true
			}
		}
	}
	return false
}
