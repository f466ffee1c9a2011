package smtpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/postern/postern/internal/ascii"
	"github.com/postern/postern/internal/clientlog"
	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/mailaddr"
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/spamscan"
)

// session is one client connection.
type session struct {
	p      *Proxy
	toks   [8]string       // a command line's tokens (parseCommandInto)
	ctx    context.Context // the gateway's: ends when it stops serving
	env    Env
	conn   relay.Conn
	in     clientReader // what r reads from
	r      *bufio.Reader
	w      *bufio.Writer
	client netip.AddrPort
	log    *slog.Logger
	logger clientlog.Logger // log's storage
	gs     *guard.Session
	be     *backend

	tls       bool
	greeted   bool // EHLO or HELO accepted
	authed    bool
	account   string
	inTx      bool // MAIL accepted
	rcpts     int
	tarpit    time.Duration   // delay before every reply
	deadline  time.Time       // end of the whole session
	errors    int             // protocol errors, for the three-strikes close
	sizeLimit int64           // SIZE advertised by the backend
	msg       *msgState       // a message arriving in BDAT chunks
	spool     *spamscan.Spool // its chunks, when messages are scanned
	helo      string          // the EHLO/HELO name
	from      string          // the transaction's sender
	rcptList  []string        // its accepted recipients
	txStart   time.Time       // when MAIL was accepted
	rd, wd    deadline        // the deadlines set on conn
	cctx      context.Context // ctx ending at deadline, made when first needed (sessionCtx)
	cancel    context.CancelFunc
}

// errClosed ends a session after its last reply was sent.
var errClosed = errors.New("session closed")

// Handle serves one client connection to the end.
func (p *Proxy) Handle(ctx context.Context, conn relay.Conn) {
	growStack(int(p.cfg.Service))
	client, local := conn.ClientAddr(), conn.LocalAddrPort()
	defer conn.Close()
	s := &session{
		p: p, ctx: ctx, env: p.env(), conn: conn, client: client,
		tls: p.cfg.ImplicitTLS,
	}
	s.log = s.logger.Init(p.log, client.Addr())
	s.in.conn = conn
	s.r, s.w = p.bufs.lineReader(&s.in), p.bufs.writer(conn)
	defer s.releaseBufs() // after the backend's QUIT and the other deferred calls below
	s.deadline = time.Now().Add(p.cfg.Timeouts.Session)
	defer s.endCtx()
	addr := client.Addr().Unmap()
	gate.BeforeAccess(ctx, s.env.Policy)
	gs, v := p.eng.Accept(addr, p.cfg.Service, func() { conn.Close() })
	if gs != nil {
		s.gs = gs
		defer gs.Close()
	}
	if gate.Door(v, conn, p.cfg.ImplicitTLS, &s.tarpit, s.log, s.refuseAtConnect, s.refuse) {
		return
	}
	if s.dnsChecks(addr) {
		return
	}
	be, greet, err := p.dialBackend(ctx, client, local)
	if errors.Is(err, relay.ErrBackendLimit) {
		total, network := p.cfg.BackendLimit.InUse(addr)
		s.log.Warn("refused: too many backend connections", "in_use", total, "network_in_use", network)
		s.reply(newReply(421, "4.7.0 "+p.cfg.Hostname+" Error: too many connections from your network, try again later"))
		return
	}
	if err != nil {
		s.log.Error("backend unavailable", "err", err)
		s.reply(newReply(421, "4.3.0 "+p.cfg.Hostname+" Service temporarily unavailable, try again later"))
		return
	}
	s.be = be
	defer be.quit()
	defer s.dropSpool()
	s.earlyTalker()
	if err := s.reply(greet); err != nil {
		return
	}
	s.loop()
}

// sessionCtx returns a context that ends with the gateway's or at the
// session's deadline. It is made on first use: most sessions never wait
// on one, and every context derived from the gateway's costs a timer and
// a registration with the parent that all sessions contend for.
func (s *session) sessionCtx() context.Context {
	if s.cctx == nil {
		s.cctx, s.cancel = context.WithDeadline(s.ctx, s.deadline)
	}
	return s.cctx
}

func (s *session) endCtx() {
	if s.cancel != nil {
		s.cancel()
	}
}

// releaseBufs returns the session's buffers, and its backend's, to the
// pools when the session has ended.
func (s *session) releaseBufs() {
	var br *bufio.Reader
	var bw *bufio.Writer
	if s.be != nil {
		br, bw = s.be.r, s.be.w
		s.be.r, s.be.w = nil, nil
	}
	s.p.bufs.put(s.r, br, s.w, bw)
	s.r, s.w = nil, nil
}

// dnsChecks looks the client up on DNS whitelists and blocklists. It
// reports true when the session must end.
func (s *session) dnsChecks(addr netip.Addr) bool {
	if s.p.dnsbl == nil || len(s.env.DNSBLZones)+len(s.env.DNSWLZones) == 0 {
		return false
	}
	evloop.MayBlock(s.ctx) // DNS lookups
	ctx, cancel := context.WithTimeout(s.ctx, s.p.cfg.Timeouts.DNSBL)
	defer cancel()
	if len(s.env.DNSWLZones) > 0 {
		if zone, _ := s.p.dnsbl.Listed(ctx, addr, s.env.DNSWLZones); zone != "" {
			s.gs.Whitelisted()
			return false
		}
	}
	if len(s.env.DNSBLZones) == 0 {
		return false
	}
	zone, _ := s.p.dnsbl.Listed(ctx, addr, s.env.DNSBLZones)
	if zone == "" {
		return false
	}
	d := s.gs.DNSBLListed(zone)
	s.log.Info("listed on a DNSBL", "zone", zone, "blocked", d.Blocked)
	if d.Reject {
		s.reply(newReply(554, "5.7.1 Service unavailable; client host ["+addr.String()+"] blocked using "+zone))
		return true
	}
	return false
}

// earlyTalker notes a client that sent data before the greeting.
func (s *session) earlyTalker() {
	if len(s.in.pending) > 0 || netlisten.SpokeFirst(s.conn, s.r) {
		s.log.Info("early talker: the client sent data before the greeting")
		netlisten.NoteEarlyTalker(s.conn)
	}
}

// reply writes a reply to the client, after the tarpit delay.
func (s *session) reply(r reply) error {
	if s.tarpit > 0 {
		evloop.MayBlock(s.ctx) // a timer: off an event loop
		t := time.NewTimer(s.tarpit)
		select {
		case <-t.C:
		case <-s.sessionCtx().Done():
			t.Stop()
			return s.sessionCtx().Err()
		}
	}
	s.armWrite()
	if err := r.write(s.w); err != nil {
		return fmt.Errorf("writing to client: %w", err)
	}
	return nil
}

// obey applies an engine decision as gate.Obey does: tarpit from now on,
// or refuse and close. It reports true when the session must end.
func (s *session) obey(d guard.Decision) bool { return gate.Obey(d, &s.tarpit, s.log, s.refuse) }

// refuse says the engine's refusal text before the session closes.
func (s *session) refuse(why string) {
	s.reply(newReply(421, "4.7.1 "+s.p.cfg.Hostname+" "+why+": closing connection"))
}

// refuseAtConnect says the engine's refusal text in place of the greeting.
func (s *session) refuseAtConnect(why string) { s.reply(newReply(554, "5.7.1 "+why)) }

// readLine reads one command line from the client, without its line ending.
func (s *session) readLine(timeout time.Duration) (string, error) {
	s.armRead(timeout)
	line, err := s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// Too long: drop the rest of the line, bounded by the reader's deadline.
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = s.r.ReadSlice('\n')
		}
		if err != nil {
			return "", err
		}
		return "", errLineTooLong
	}
	if err != nil {
		return "", err
	}
	l := bytes.TrimRight(line, "\r\n")
	switch string(l) { // the commands without arguments, as clients send them: no copy
	case "DATA":
		return "DATA", nil
	case "QUIT":
		return "QUIT", nil
	case "RSET":
		return "RSET", nil
	case "NOOP":
		return "NOOP", nil
	case "STARTTLS":
		return "STARTTLS", nil
	}
	return string(l), nil
}

var errLineTooLong = errors.New("line too long")

func minTime(a, b time.Time) time.Time {
	if !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// loop reads and handles client commands until the session ends.
func (s *session) loop() {
	for first := true; ; first = false {
		timeout := s.p.cfg.Timeouts.Command
		if first && s.p.cfg.Timeouts.FirstCommand > 0 {
			// A client silent after the greeting holds a backend connection
			// for nothing: it gets less time than one in a session.
			timeout = min(timeout, s.p.cfg.Timeouts.FirstCommand)
		}
		line, err := s.readLine(timeout)
		if errors.Is(err, errLineTooLong) {
			if s.protocolError(newReply(500, "5.5.2 Error: line too long")) {
				return
			}
			continue
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.reply(newReply(421, "4.4.2 "+s.p.cfg.Hostname+" Error: timeout exceeded"))
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("client read", "err", err)
			}
			return
		}
		if strings.IndexByte(line, 0) >= 0 || !isPrintable(line) {
			if s.protocolError(newReply(500, "5.5.2 Error: bad syntax (binary data in a command)")) {
				return
			}
			continue
		}
		if err := s.command(line); err != nil {
			if !errors.Is(err, errClosed) {
				s.log.Info("session ended", "err", err)
			}
			return
		}
	}
}

// protocolError replies and counts; the third error in a session closes
// it. It reports true when the session must end.
func (s *session) protocolError(r reply) bool {
	s.errors++
	if s.errors >= 3 {
		s.reply(newReply(421, "4.7.0 "+s.p.cfg.Hostname+" Error: too many errors"))
		return true
	}
	return s.reply(r) != nil
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// command handles one command line: it is read as the backend reads it
// (parseCommand), and only known verbs, rewritten in canonical form, ever
// reach the backend.
func (s *session) command(line string) error {
	clear(s.toks[:]) // the last command's
	c, err := parseCommandInto(s.toks[:], line)
	if err != nil {
		s.log.Info("bad command", "err", err)
		return s.syntaxError(newReply(500, "5.5.2 Error: bad syntax"))
	}
	switch c.verb {
	case verbEHLO:
		return s.ehlo(c, true)
	case verbHELO:
		return s.ehlo(c, false)
	case verbSTARTTLS:
		return s.startTLS(c)
	case verbAUTH:
		return s.auth(c)
	case verbMAIL:
		return s.mail(c)
	case verbRCPT:
		return s.rcpt(c)
	case verbDATA:
		return s.data(c)
	case verbBDAT:
		return s.bdat(c)
	case verbRSET:
		return s.rset(c)
	case verbNOOP, verbHELP:
		// Their arguments mean nothing to a server; none are passed.
		return s.relay(command{verb: c.verb})
	case verbQUIT:
		r, err := s.be.cmd("QUIT")
		if err != nil {
			r = newReply(221, "2.0.0 Bye")
		}
		s.be.quitted = true
		s.reply(r)
		return errClosed
	case verbVRFY:
		return s.reply(newReply(502, "5.5.1 VRFY command is disabled"))
	case verbEXPN:
		return s.reply(newReply(502, "5.5.1 EXPN command is disabled"))
	case verbPrivileged:
		s.log.Info("refused a privileged command", "command", printableVerb(c.name))
		return s.reply(newReply(550, "5.7.0 Error: insufficient authorization"))
	case verbNonSMTP:
		s.log.Warn("non-SMTP command: closing", "command", printableVerb(c.name))
		s.reply(newReply(221, "2.7.0 Error: I can break rules, too. Goodbye."))
		return errClosed
	}
	s.log.Info("unknown command refused", "command", printableVerb(c.name))
	return s.syntaxError(newReply(502, "5.5.2 Error: command not recognized"))
}

// syntaxError answers a command postern will not pass on, counted as a
// protocol error.
func (s *session) syntaxError(r reply) error {
	if s.protocolError(r) {
		return errClosed
	}
	return nil
}

// printableVerb bounds a client's verb for a log line.
func printableVerb(v string) string { return truncate(v, 32) }

// relay forwards a command in canonical form and relays the backend's reply.
func (s *session) relay(c command) error {
	r, err := s.be.cmd(c.line())
	if err != nil {
		return s.backendLost(err)
	}
	return s.reply(r)
}

// backendLost tells the client to try again later and ends the session.
func (s *session) backendLost(err error) error {
	s.log.Error("backend failed", "err", err)
	s.reply(newReply(421, "4.4.2 "+s.p.cfg.Hostname+" Error: lost connection to the mail server, try again later"))
	return errClosed
}

// ehlo relays EHLO/HELO, filtering the backend's extensions to those
// postern supports and adding its own (STARTTLS, AUTH).
func (s *session) ehlo(c command, extended bool) error {
	if len(c.args) == 0 {
		return s.reply(newReply(501, "5.5.4 Syntax: "+canonicalVerb[c.verb]+" hostname"))
	}
	line := c.line()
	r, err := s.be.cmd(line)
	if err != nil {
		return s.backendLost(err)
	}
	if r.code == 250 {
		s.greeted = true
		s.helo = strings.Join(c.args, " ")
		s.inTx, s.rcpts = false, 0
		s.gs.MessageDone()
		if extended {
			r = s.filterEHLO(r)
		}
	}
	return s.reply(r)
}

// startTLS upgrades the client connection (STARTTLS).
func (s *session) startTLS(c command) error {
	if s.tls || s.p.cfg.TLS == nil {
		return s.reply(newReply(502, "5.5.1 Error: command not implemented"))
	}
	if len(c.args) > 0 {
		return s.reply(newReply(501, "5.5.4 Syntax: STARTTLS"))
	}
	if s.buffered() > 0 {
		// Commands pipelined after STARTTLS would be read as if they had
		// come over TLS (a known injection attack): refuse.
		s.reply(newReply(554, "5.5.1 Error: commands sent after STARTTLS before the TLS handshake"))
		return errClosed
	}
	if err := s.reply(newReply(220, "2.0.0 Ready to start TLS")); err != nil {
		return err
	}
	evloop.MayBlock(s.ctx) // the handshake's CPU is not the loop's
	// The session's end, or the gateway's, interrupts the handshake.
	stop := context.AfterFunc(s.sessionCtx(), func() { s.conn.Close() })
	err := s.conn.StartTLS(s.p.cfg.TLS, 30*time.Second)
	stop()
	s.rd.forget() // the handshake set and cleared the connection's deadlines
	s.wd.forget()
	if err != nil {
		s.log.Info("STARTTLS handshake failed", "err", err)
		return errClosed
	}
	s.tls = true
	s.in = clientReader{conn: s.conn}
	s.r.Reset(&s.in) // empty: nothing was pipelined behind STARTTLS
	s.w.Reset(s.conn)
	// RFC 3207: the session starts afresh; the client must EHLO again.
	s.greeted, s.inTx, s.rcpts = false, false, 0
	s.gs.MessageDone()
	if r, err := s.be.cmd("RSET"); err != nil || r.code != 250 {
		return s.backendLost(fmt.Errorf("RSET after STARTTLS: %v", err))
	}
	return nil
}

// mail relays MAIL FROM.
func (s *session) mail(c command) error {
	if s.p.cfg.RequireAuth && !s.authed {
		return s.reply(newReply(530, "5.7.0 Authentication required"))
	}
	// The gate again at the start of a transaction: an address blocked
	// while its connection was open sends no more mail on it, whatever
	// close_all says.
	if s.obey(s.gs.Recheck()) {
		return errClosed
	}
	a, err := mailaddr.ParseMailTokens(c.args)
	if err != nil {
		s.log.Info("MAIL refused", "err", err)
		if len(c.args) < 2 || !ascii.EqualFold(c.args[0], "FROM:") {
			return s.reply(newReply(501, "5.5.4 Syntax: MAIL FROM:<address>"))
		}
		return s.reply(newReply(501, "5.1.7 Bad sender address syntax"))
	}
	from := a.Path.Address()
	r, err := s.be.cmdArg("MAIL", a)
	if err != nil {
		return s.backendLost(err)
	}
	if r.code == 250 {
		s.inTx, s.rcpts, s.msg = true, 0, nil
		s.from, s.rcptList, s.txStart = from, nil, time.Now()
		s.gs.Sender(from)
	}
	return s.reply(r)
}

// rcpt relays RCPT TO and reports what the backend said of the recipient.
func (s *session) rcpt(c command) error {
	a, err := mailaddr.ParseRcptTokens(c.args)
	if err != nil {
		s.log.Info("RCPT refused", "err", err)
		if len(c.args) < 2 || !ascii.EqualFold(c.args[0], "TO:") {
			return s.reply(newReply(501, "5.5.4 Syntax: RCPT TO:<address>"))
		}
		return s.reply(newReply(501, "5.1.3 Bad recipient address syntax"))
	}
	p, to := a.Path, a.Path.Address()
	if s.inTx && s.rcpts >= s.p.cfg.MaxRecipients {
		return s.reply(newReply(452, "4.5.3 Error: too many recipients"))
	}
	if s.inTx && !s.authed && len(s.env.LocalDomains) > 0 && !p.InDomains(s.env.LocalDomains) {
		if err := s.reply(newReply(554, "5.7.1 "+p.Canonical()+": Relay access denied")); err != nil {
			return err
		}
		return s.after(s.gs.RelayDenied(to))
	}
	// A tarpit account (often an address that does not exist) is checked
	// before the backend is asked, and never accepted.
	if d := s.gs.Recipient(to); d.Reject {
		if err := s.reply(newReply(550, "5.1.1 "+p.Canonical()+": Recipient address rejected")); err != nil {
			return err
		}
		return s.after(d)
	}
	r, err := s.be.cmdArg("RCPT", a)
	if err != nil {
		return s.backendLost(err)
	}
	var d guard.Decision
	switch {
	case r.code == 250 || r.code == 251:
		s.rcpts++
		s.rcptList = append(s.rcptList, to)
	case s.isUnknownUser(r):
		d = s.gs.UnknownRecipient(to)
	case isRelayDenial(r):
		d = s.gs.RelayDenied(to)
	}
	if err := s.reply(r); err != nil {
		return err
	}
	return s.after(d)
}

// after obeys a decision made after a reply went out.
func (s *session) after(d guard.Decision) error {
	if s.obey(d) {
		return errClosed
	}
	return nil
}

func (s *session) isUnknownUser(r reply) bool {
	if r.code < 500 {
		return false
	}
	e := r.enhanced()
	for _, c := range s.p.cfg.UnknownUserCodes {
		if e == c {
			return true
		}
	}
	return e == "" && strings.Contains(strings.ToLower(r.text()), "user unknown")
}

func isRelayDenial(r reply) bool {
	e := r.enhanced()
	if (r.code == 554 || r.code == 550) && e == "5.7.1" || r.code == 454 && e == "4.7.1" {
		return strings.Contains(strings.ToLower(r.text()), "relay")
	}
	return false
}

// rset relays RSET and counts it (R).
func (s *session) rset(c command) error {
	if len(c.args) > 0 {
		// The server would refuse it too: not an RSET, not counted.
		return s.reply(newReply(501, "5.5.4 Syntax: RSET"))
	}
	r, err := s.be.cmd("RSET")
	if err != nil {
		return s.backendLost(err)
	}
	s.inTx, s.rcpts, s.msg = false, 0, nil
	s.dropSpool()
	d := s.gs.Rset()
	if err := s.reply(r); err != nil {
		return err
	}
	return s.after(d)
}
