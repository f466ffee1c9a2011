// Package mailgate is what the IMAP and POP3 gateways do alike before
// login: accept a connection through the engine's gate and the door that
// package gate shares with SMTP (quiet refusals on implicit-TLS ports
// before any handshake, the implicit-TLS handshake), the backend dial
// (within the backend limit), tarpitted sends, STARTTLS, SASL
// continuation steps, a login through gate's login gate with the
// backend's failure text remembered for a decoy it accepts, and the
// hand-off to the splice. A Protocol gives the wording, reads the
// commands and replays the login.
package mailgate

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/clientlog"
	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
)

// Config is one IMAP or POP3 service's configuration.
type Config struct {
	Service     service.Service // imap, imaps, pop3 or pop3s
	Backend     relay.Dialer
	TLS         *tls.Config // offered with STARTTLS/STLS (nil: not offered)
	ImplicitTLS bool
	// PlaintextLogin allows a login before TLS from an address (trusted
	// networks); nil allows it from none.
	PlaintextLogin func(netip.Addr) bool
	PreAuthIdle    time.Duration // waiting for a command before login (default 1m)
	BackendTimeout time.Duration // waiting for the backend (default 30s)
	MaxErrors      int           // bad commands before the connection closes (default 10)
	// Watch judges and records successful logins (login_alerts); nil: none.
	Watch gate.LoginWatcher
	// Loops, when set, runs the sessions of plain TCP connections on
	// event loops (see internal/evloop) until they log in.
	Loops *evloop.Group
}

func (c *Config) defaults() {
	if c.PreAuthIdle <= 0 {
		c.PreAuthIdle = time.Minute
	}
	if c.BackendTimeout <= 0 {
		c.BackendTimeout = 30 * time.Second
	}
	if c.MaxErrors <= 0 {
		c.MaxErrors = 10
	}
}

// Engine is what the gateway needs of the intrusion prevention engine.
type Engine interface {
	Accept(addr netip.Addr, svc service.Service, closer func()) (*guard.Session, guard.Verdict)
	PasswordFingerprint(account, password string) uint64
}

// Wording is a protocol's fixed answers of the skeleton.
type Wording struct {
	// Refuse prefixes the engine's refusal text ("* BYE ", "-ERR [SYS/PERM] ").
	Refuse string
	// Unavailable says the backend cannot be reached or failed.
	Unavailable string
	// AuthFailed is the failure text (after the tag in IMAP) used until
	// the backend has said its own.
	AuthFailed string
	// ReadBuffer and WriteBuffer size the client's buffers.
	ReadBuffer, WriteBuffer int
}

// Protocol is what IMAP and POP3 do their own way.
type Protocol interface {
	// Greet reads the backend's greeting (and learns its capabilities)
	// and returns the greeting to send to the client.
	Greet() (string, error)
	// Serve reads the client's commands until login, the end, or an error.
	Serve()
}

// Gate serves one IMAP or POP3 service: the state its sessions share.
type Gate struct {
	// Cfg is the service's configuration, defaults applied; read only.
	Cfg    Config
	eng    Engine
	policy func() *policy.Policy
	log    *slog.Logger
	conns  relay.Conns
	words  Wording

	// authFail is the backend's last failure text, for the one refusal
	// the backend does not answer itself: a decoy password it accepted.
	authFail atomic.Pointer[string]
	// logins is the service's login gate.
	logins *gate.Logins

	// The buffers of sessions before login, reused: a login would
	// otherwise allocate (and the collector clear) some 16 KiB that
	// serve for a few lines. A session takes them in Handle and gives
	// them back when it ends or hands off to the splice.
	readers, writers, beReaders sync.Pool
}

// New returns a Gate; policy is read on every login, so a reload takes
// effect at once.
func New(cfg Config, words Wording, eng Engine, pol func() *policy.Policy, log *slog.Logger) *Gate {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gate{Cfg: cfg, eng: eng, policy: pol, log: log.With("service", cfg.Service.String()), words: words, logins: gate.NewLogins(eng)}
	g.conns.Log = g.log
	g.conns.Loops = cfg.Loops
	if cfg.Watch != nil {
		g.logins.Watch(cfg.Watch, cfg.Service.String())
	}
	g.readers.New = func() any { return bufio.NewReaderSize(nil, words.ReadBuffer) }
	g.writers.New = func() any { return bufio.NewWriterSize(nil, words.WriteBuffer) }
	g.beReaders.New = func() any { return bufio.NewReaderSize(nil, beReadBuffer) }
	def := words.AuthFailed
	g.authFail.Store(&def)
	return g
}

// Serve handles connections from ln with handle until ctx is done; live
// sessions get drain to finish.
func (g *Gate) Serve(ctx context.Context, ln relay.Acceptor, drain time.Duration, handle relay.Handler) error {
	return g.conns.Serve(ctx, ln, drain, handle)
}

// Live returns the number of connections being served.
func (g *Gate) Live() int { return g.conns.Live() }

// AuthFailed returns the backend's last login failure text.
func (g *Gate) AuthFailed() string { return *g.authFail.Load() }

// Session is one client connection before login.
type Session struct {
	Gate *Gate
	Ctx  context.Context
	// Conn is the client connection, R and W its buffers (fresh after
	// StartTLS).
	Conn relay.Conn
	R    *bufio.Reader
	W    *bufio.Writer
	// Client is the real client; Log names it.
	Client netip.AddrPort
	Log    *slog.Logger
	// TLS says the client connection has TLS.
	TLS bool
	// logger is Log's storage.
	logger clientlog.Logger

	// BE is the backend connection, BR its reader (through beReader).
	BE net.Conn
	BR *bufio.Reader
	// A command held by BackendCommand to go out with the first read of
	// its answer (heldWR: BE's WriteRead); heldBuf is its storage.
	// viaBE: BR reads through beReader (SetBackend), which sends it.
	held, heldBuf []byte
	heldWR        relay.WriteReader
	viaBE         bool

	gs        *guard.Session
	tarpit    time.Duration
	handedOff bool // spliced: the connections and the guard session belong to relay.Conns.Handoff
}

// Handle serves one client connection to its end, with the Protocol
// proto makes. proto returns it with the Session it is built on, new and
// zero, which Handle fills in before Greet: a protocol keeps the Session
// in its own struct, one allocation for both. The Session's reader is set
// when Greet is called.
func (g *Gate) Handle(ctx context.Context, conn relay.Conn, proto func() (*Session, Protocol)) {
	client, local := conn.ClientAddr(), conn.LocalAddrPort()
	s, pr := proto()
	*s = Session{Gate: g, Ctx: ctx, Client: client, TLS: g.Cfg.ImplicitTLS}
	s.Log = s.logger.Init(g.log, client.Addr())
	defer func() {
		if !s.handedOff {
			conn.Close()
		}
		s.putBuffers()
	}()
	s.SetConn(conn)
	addr := client.Addr().Unmap()
	gate.BeforeAccess(ctx, g.policy())
	gs, v := g.eng.Accept(addr, g.Cfg.Service, func() { conn.Close() })
	if gs != nil {
		s.gs = gs
		defer func() {
			if !s.handedOff {
				gs.Close()
			}
		}()
	}
	if gate.Door(v, conn, g.Cfg.ImplicitTLS, &s.tarpit, s.Log, s.refuse, s.refuse) {
		return
	}
	// Closes the backend connection also when its greeting was bad;
	// Splice takes it over.
	defer func() {
		if s.BE != nil {
			s.BE.Close()
		}
	}()
	greeting, err := s.dial(local, pr)
	if err != nil {
		s.Log.Error("backend unavailable", "err", err)
		s.Send(g.words.Unavailable)
		return
	}
	if netlisten.SpokeFirst(s.Conn, s.R) {
		s.Log.Info("early talker: the client sent data before the greeting")
		netlisten.NoteEarlyTalker(s.Conn)
	}
	if err := s.Send(greeting); err != nil {
		return
	}
	pr.Serve()
}

func (s *Session) dial(local netip.AddrPort, pr Protocol) (string, error) {
	d := s.Gate.Cfg.Backend
	if d.Service == "" {
		d.Service = s.Gate.Cfg.Service.String()
	}
	d.HoldHeader = true // the greeting's first read sends it
	be, err := d.Dial(s.Ctx, s.Client, local)
	if err != nil {
		return "", err
	}
	s.SetBackend(be, s.Gate.beReaders.Get().(*bufio.Reader))
	// The first byte of the greeting: a backend that closes the connection
	// before it usually refused the PROXY header (or waited for one).
	s.BE.SetReadDeadline(time.Now().Add(s.Gate.Cfg.BackendTimeout))
	if _, err := s.BR.Peek(1); err != nil {
		return "", fmt.Errorf("backend greeting: %w", d.Hop(be).ExplainFirstRead(err))
	}
	return pr.Greet()
}

// beReadBuffer sizes the reader of the backend connection: the longest
// line postern reads from the backend before login.
const beReadBuffer = 4096

// SetConn makes c the client connection, with fresh buffers: empty ones,
// reused when the session has them (after STARTTLS).
func (s *Session) SetConn(c relay.Conn) {
	s.Conn = c
	if s.R == nil {
		s.R = s.Gate.readers.Get().(*bufio.Reader)
		s.W = s.Gate.writers.Get().(*bufio.Writer)
	}
	s.R.Reset(c)
	s.W.Reset(c)
}

// putBuffers gives the session's buffers back to the gate's pools, holding
// nothing of the connections; the session uses them no more.
func (s *Session) putBuffers() {
	if s.R != nil {
		s.R.Reset(nil)
		s.Gate.readers.Put(s.R)
		s.W.Reset(nil)
		s.Gate.writers.Put(s.W)
	}
	if s.BR != nil {
		s.BR.Reset(nil)
		s.Gate.beReaders.Put(s.BR)
	}
	s.R, s.W, s.BR = nil, nil, nil
}

// Send writes lines to the client, after the tarpit delay.
func (s *Session) Send(lines ...string) error { return s.send(lines, "") }

// sendReply sends a backend's answer: its Lines, then Last.
func (s *Session) sendReply(r Reply) error { return s.send(r.Lines, r.Last) }

// send sends lines, then last unless it is empty.
func (s *Session) send(lines []string, last string) error {
	if s.tarpit > 0 {
		evloop.MayBlock(s.Ctx)
		t := time.NewTimer(s.tarpit)
		select {
		case <-t.C:
		case <-s.Ctx.Done():
			t.Stop()
			return s.Ctx.Err()
		}
	}
	s.Conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	for _, l := range lines {
		s.W.WriteString(l)
		s.W.WriteString("\r\n")
	}
	if last != "" {
		s.W.WriteString(last)
		s.W.WriteString("\r\n")
	}
	return s.W.Flush()
}

// Obey applies an engine decision as gate.Obey does: tarpit from now on,
// or refuse and close; it reports true when the session ends.
func (s *Session) Obey(d guard.Decision) bool {
	return gate.Obey(d, &s.tarpit, s.Log, s.refuse)
}

// refuse says the engine's refusal text, the session's last answer.
func (s *Session) refuse(why string) { s.Send(s.Gate.words.Refuse + why) }

// PlaintextOK reports whether a password may be sent over this connection.
func (s *Session) PlaintextOK() bool {
	cfg := &s.Gate.Cfg
	return s.TLS || cfg.PlaintextLogin != nil && cfg.PlaintextLogin(s.Client.Addr().Unmap())
}

// Idle sets the read deadline for the next command.
func (s *Session) Idle() { s.Conn.SetReadDeadline(time.Now().Add(s.Gate.Cfg.PreAuthIdle)) }

// BackendLine reads one line from the backend.
func (s *Session) BackendLine() (string, error) {
	l, err := s.BackendLineBytes()
	if err != nil {
		return "", err
	}
	return string(l), nil
}

// BackendLineBytes is BackendLine without making a string: the line,
// without its end, is valid until the next read from the backend.
func (s *Session) BackendLineBytes() ([]byte, error) {
	s.BE.SetReadDeadline(time.Now().Add(s.Gate.Cfg.BackendTimeout))
	l, err := s.BR.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("backend line too long")
		}
		return nil, err
	}
	return bytes.TrimRight(l, "\r\n"), nil
}

// SetBackend makes be the backend connection, read through br (reset),
// as BackendLine and BackendCommand read it.
func (s *Session) SetBackend(be net.Conn, br *bufio.Reader) {
	s.BE, s.BR = be, br
	s.BR.Reset(beReader{s})
	s.viaBE = true
}

// BackendCommand writes one line to the backend and reads the first line
// of its answer. On a plain socket with nothing of the backend's read
// ahead, the line goes out with that read (sockio.Conn.WriteRead), which
// then waits for the answer instead of first finding nothing. IMAP and POP3
// servers before login speak only when spoken to: an answer (or the
// connection's end) follows every command, a new event that ends the wait.
func (s *Session) BackendCommand(line string) (string, error) { return s.backendCommand(line, nil) }

// BackendCommandBytes is BackendCommand for a line in the caller's
// buffer (a login's, which the caller clears): the line goes out from
// the session's own buffer, cleared once sent, and no string of it is
// made.
func (s *Session) BackendCommandBytes(line []byte) (string, error) {
	return s.backendCommand("", line)
}

// backendCommand sends line and then b (one of them empty) as one line.
func (s *Session) backendCommand(line string, b []byte) (string, error) {
	var wr relay.WriteReader
	if s.viaBE && s.BR.Buffered() == 0 {
		wr = relay.WriteReaderOf(s.BE)
	}
	s.heldBuf = append(append(append(s.heldBuf[:0], line...), b...), "\r\n"...)
	defer clear(s.heldBuf) // a login's command holds the password
	if wr == nil {
		if err := s.backendWriteHeld(); err != nil {
			return "", err
		}
		return s.BackendLine()
	}
	s.BE.SetWriteDeadline(time.Now().Add(s.Gate.Cfg.BackendTimeout))
	s.held, s.heldWR = s.heldBuf, wr
	l, err := s.BackendLine()
	s.held, s.heldWR = nil, nil // in case the read failed before sending it
	return l, err
}

// beReader is what BR reads: the backend connection, and a command
// BackendCommand holds, written by the first read.
type beReader struct{ s *Session }

func (r beReader) Read(p []byte) (int, error) {
	s := r.s
	w := s.held
	if w == nil {
		return s.BE.Read(p)
	}
	s.held = nil
	nw, nr, err := s.heldWR.WriteRead(w, p, false)
	if nw < len(w) && err != nil {
		err = fmt.Errorf("writing to backend: %w", err)
	}
	return nr, err
}

// BackendWrite writes one line to the backend.
func (s *Session) BackendWrite(line string) error {
	s.heldBuf = append(append(s.heldBuf[:0], line...), "\r\n"...)
	defer clear(s.heldBuf)
	return s.backendWriteHeld()
}

// backendWriteHeld writes heldBuf to the backend.
func (s *Session) backendWriteHeld() error {
	s.BE.SetWriteDeadline(time.Now().Add(s.Gate.Cfg.BackendTimeout))
	if _, err := s.BE.Write(s.heldBuf); err != nil {
		return fmt.Errorf("writing to backend: %w", err)
	}
	return nil
}

// StartTLS runs the server handshake after the protocol has told the
// client to begin it; the caller has checked that nothing was pipelined
// after the command. The connection upgrades in place; the client's
// buffers are fresh afterwards.
func (s *Session) StartTLS() error {
	evloop.MayBlock(s.Ctx) // the handshake's CPU is not the loop's
	// The gateway's end interrupts the handshake.
	stop := context.AfterFunc(s.Ctx, func() { s.Conn.Close() })
	err := s.Conn.StartTLS(s.Gate.Cfg.TLS, gate.HandshakeTimeout)
	stop()
	if err != nil {
		return err
	}
	s.TLS = true
	s.SetConn(s.Conn)
	return nil
}

// Reply is the backend's answer to a replayed login.
type Reply struct {
	// Outcome is what the answer means: gate.Accepted, gate.Rejected (a
	// wrong password: counted, and the text remembered), gate.Answered
	// (not about the password: relayed) or gate.Unexpected (not the
	// protocol: never relayed).
	Outcome gate.Outcome
	// Lines, then Last when it is not empty, are relayed to the client as
	// they are (Last: the answer's final line, without a list of its own).
	Lines []string
	Last  string
	// FailText, with Rejected, is remembered as the failure text.
	FailText string
	// Raw is the line logged with Unexpected.
	Raw string
}

// Login takes a login through the login gate (gate.Logins.Run: account
// protection and its delays, the login IP restriction with its decoy
// replay, the report to the engine) with replay, relays the backend's
// answer and, logged in, splices. A decoy password the backend accepts is
// answered with failPrefix and the last failure text. It reports true
// when the session ends.
func (s *Session) Login(user, pass, failPrefix string, replay func(pass string) (Reply, error)) bool {
	g := s.Gate
	var r Reply
	o, d, err := g.logins.Run(s.Ctx, s.gs, g.policy(), s.Client.Addr().Unmap(), gate.Credentials{User: user, Pass: pass}, s.Log,
		func(pass string) (gate.Outcome, error) {
			var err error
			r, err = replay(pass)
			return r.Outcome, err
		})
	switch o {
	case gate.Blocked:
		return s.Obey(d)
	case gate.DecoyAccepted:
		s.Send(failPrefix + g.AuthFailed())
		return true
	case gate.Accepted:
		if s.sendReply(r) == nil {
			s.splice()
		}
		return true
	case gate.Rejected:
		text := r.FailText
		g.authFail.Store(&text)
		if s.sendReply(r) != nil {
			return true
		}
		return s.Obey(d)
	case gate.Answered:
		return s.sendReply(r) != nil
	}
	if err == nil {
		err = fmt.Errorf("unexpected reply %q", Truncate(r.Raw, 80))
	}
	s.Log.Error("backend failed during login", "err", err)
	s.Send(g.words.Unavailable)
	return true
}

// splice hands the session to the backend: bytes go both ways untouched.
func (s *Session) splice() {
	var pending []byte
	if n := s.R.Buffered(); n > 0 {
		b, _ := s.R.Peek(n)
		pending = append([]byte(nil), b...)
	}
	if n := s.BR.Buffered(); n > 0 {
		early, _ := s.BR.Peek(n)
		if _, err := s.Conn.Write(early); err != nil {
			return
		}
	}
	client, be := s.Conn, s.BE
	// Logged in: the backend's login process is done with this connection,
	// which no longer counts against the bound of pre-login connections.
	relay.ReleaseLimit(be)
	s.putBuffers()
	s.BE = nil
	// Handle returns and its goroutine, whose stack grew during the
	// dialogue, ends; the splice runs on fresh goroutines.
	s.handedOff = true
	s.Gate.conns.Handoff(s.Ctx, client, be, pending, s.gs.Close)
}

// Truncate shortens s to n bytes for a log line.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
