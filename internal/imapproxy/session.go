package imapproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/relay"
)

type session struct {
	p      *Proxy
	ctx    context.Context
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	rd     reader
	client netip.AddrPort
	log    *slog.Logger
	gs     *guard.Session
	tarpit time.Duration

	be     net.Conn
	br     *bufio.Reader
	caps   []string // the backend's capabilities
	tls    bool
	errors int
	seq    int // tags of postern's own backend commands

	handedOff bool // spliced: the connections and the guard session belong to relay.Conns.Handoff
}

// Handle serves one client connection to its end.
func (p *Proxy) Handle(ctx context.Context, conn net.Conn, client, local netip.AddrPort) {
	s := &session{p: p, ctx: ctx, conn: conn, client: client, tls: p.cfg.ImplicitTLS,
		log: p.log.With("client", client.Addr().String())}
	defer func() {
		if !s.handedOff {
			conn.Close()
		}
	}()
	s.setConn(conn)
	addr := client.Addr().Unmap()
	gs, v := p.eng.Accept(addr, p.cfg.Service, func() { conn.Close() })
	if gs != nil {
		s.gs = gs
		defer func() {
			if !s.handedOff {
				gs.Close()
			}
		}()
	}
	// A client refused again and again on an implicit-TLS port is closed
	// without a word and without a handshake: answering it would cost one
	// each time. Otherwise the handshake comes after the gate: every
	// connection is checked and counted (I) before it costs any
	// cryptography.
	if v.Quiet && p.cfg.ImplicitTLS {
		s.log.Info("refused at connect, without a TLS handshake", "reason", v.Reason.String())
		return
	}
	if hs, ok := conn.(interface{ Handshake(time.Duration) error }); ok && p.cfg.ImplicitTLS {
		if err := hs.Handshake(30 * time.Second); err != nil {
			s.log.Info("TLS handshake failed", "err", err)
			return
		}
	}
	if v.Action == guard.Refuse {
		s.log.Info("refused at connect", "why", v.Refusal())
		s.send("* BYE " + v.Refusal())
		return
	}
	if s.obey(v.Decision) {
		return
	}
	// Closes the backend connection also when its greeting was bad
	// (dialBackend keeps it in s.be); splice takes it over.
	defer func() {
		if s.be != nil {
			s.be.Close()
		}
	}()
	greeting, err := s.dialBackend(local)
	if err != nil {
		s.log.Error("backend unavailable", "err", err)
		s.send("* BYE [UNAVAILABLE] Server temporarily unavailable, try again later")
		return
	}
	if netlisten.SpokeFirst(s.conn, s.r) {
		s.log.Info("early talker: the client sent data before the greeting")
	}
	if err := s.send("* OK [CAPABILITY " + strings.Join(s.capabilities(), " ") + "] " + greeting); err != nil {
		return
	}
	s.loop()
}

func (s *session) setConn(c net.Conn) {
	s.conn = c
	s.r = bufio.NewReaderSize(c, maxLine+2)
	s.w = bufio.NewWriterSize(c, 4096)
	s.rd = reader{r: s.r, cont: func() error { return s.send("+ Ready for literal data") }}
}

// send writes one line to the client, after the tarpit delay.
func (s *session) send(lines ...string) error {
	if s.tarpit > 0 {
		t := time.NewTimer(s.tarpit)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return s.ctx.Err()
		}
	}
	s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	for _, l := range lines {
		s.w.WriteString(l)
		s.w.WriteString("\r\n")
	}
	return s.w.Flush()
}

// obey applies an engine decision: tarpit from now on, or refuse and
// close; it reports true when the session ends.
func (s *session) obey(d guard.Decision) bool {
	if d.Delay > 0 {
		s.tarpit = d.Delay
	}
	if d.Action == guard.Close || d.Action == guard.Refuse {
		s.log.Info("closing a blocked connection", "reason", d.Reason.String(), "why", d.Refusal())
		s.send("* BYE " + d.Refusal())
		return true
	}
	return false
}

// dialBackend connects, reads the greeting and learns the capabilities.
func (s *session) dialBackend(local netip.AddrPort) (string, error) {
	be, err := s.p.cfg.Backend.Dial(s.ctx, s.client, local)
	if err != nil {
		return "", err
	}
	s.be, s.br = be, bufio.NewReaderSize(be, 4096)
	line, err := s.beLine()
	if err != nil {
		return "", fmt.Errorf("backend greeting: %w", err)
	}
	if !strings.HasPrefix(line, "* OK") {
		return "", fmt.Errorf("backend greeting: %q", truncate(line, 80))
	}
	text := strings.TrimSpace(line[4:])
	if strings.HasPrefix(text, "[CAPABILITY ") {
		end := strings.IndexByte(text, ']')
		if end < 0 {
			return "", fmt.Errorf("backend greeting: %q", truncate(line, 80))
		}
		s.caps = strings.Fields(text[len("[CAPABILITY "):end])
		text = strings.TrimSpace(text[end+1:])
		return text, nil
	}
	// No capabilities in the greeting: ask.
	lines, tagged, err := s.beCommand("CAPABILITY")
	if err != nil || !strings.Contains(tagged, " OK") {
		return "", fmt.Errorf("backend CAPABILITY: %v %q", err, tagged)
	}
	for _, l := range lines {
		if strings.HasPrefix(strings.ToUpper(l), "* CAPABILITY ") {
			s.caps = strings.Fields(l[len("* CAPABILITY "):])
		}
	}
	return text, nil
}

// beLine reads one line from the backend.
func (s *session) beLine() (string, error) {
	s.be.SetReadDeadline(time.Now().Add(s.p.cfg.BackendTimeout))
	l, err := s.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errors.New("backend line too long")
		}
		return "", err
	}
	return strings.TrimRight(string(l), "\r\n"), nil
}

// beCommand sends a command of postern's own and returns the untagged
// lines and the tagged completion.
func (s *session) beCommand(cmd string) ([]string, string, error) {
	s.seq++
	tag := fmt.Sprintf("P%d", s.seq)
	return s.beTagged(tag, tag+" "+cmd)
}

// beTagged sends a line and reads until the completion tagged tag.
func (s *session) beTagged(tag, line string) ([]string, string, error) {
	s.be.SetWriteDeadline(time.Now().Add(s.p.cfg.BackendTimeout))
	if _, err := io.WriteString(s.be, line+"\r\n"); err != nil {
		return nil, "", fmt.Errorf("writing to backend: %w", err)
	}
	var untagged []string
	for range 1000 {
		l, err := s.beLine()
		if err != nil {
			return untagged, "", err
		}
		if strings.HasPrefix(l, tag+" ") {
			return untagged, l, nil
		}
		if strings.HasPrefix(l, "+") {
			return untagged, l, nil // a continuation request
		}
		untagged = append(untagged, l)
	}
	return untagged, "", errors.New("backend sent too many lines")
}

// plaintextOK reports whether a password may be sent over this connection.
func (s *session) plaintextOK() bool {
	return s.tls || s.p.cfg.PlaintextLogin != nil && s.p.cfg.PlaintextLogin(s.client.Addr().Unmap())
}

// capabilities are the backend's, with what postern handles itself
// adjusted: STARTTLS, AUTH=, SASL-IR, LOGINDISABLED.
func (s *session) capabilities() []string {
	out := make([]string, 0, len(s.caps)+4)
	for _, c := range s.caps {
		u := strings.ToUpper(c)
		if u == "STARTTLS" || u == "LOGINDISABLED" || u == "SASL-IR" || strings.HasPrefix(u, "AUTH=") {
			continue
		}
		out = append(out, c)
	}
	if !s.tls && s.p.cfg.TLS != nil {
		out = append(out, "STARTTLS")
	}
	if s.plaintextOK() {
		out = append(out, "SASL-IR", "AUTH=PLAIN", "AUTH=LOGIN")
	} else {
		out = append(out, "LOGINDISABLED")
	}
	return out
}

func (s *session) backendHas(capability string) bool {
	for _, c := range s.caps {
		if strings.EqualFold(c, capability) {
			return true
		}
	}
	return false
}

// loop reads commands until the client logs in, leaves, or misbehaves.
func (s *session) loop() {
	for {
		s.conn.SetReadDeadline(time.Now().Add(s.p.cfg.PreAuthIdle))
		cmd, err := s.rd.read()
		if err != nil {
			if s.readError(cmd, err) {
				return
			}
			continue
		}
		done, err := s.command(cmd)
		if err != nil || done {
			return
		}
	}
}

// readError answers a command that could not be read; it reports true
// when the session ends.
func (s *session) readError(cmd command, err error) bool {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		s.send("* BYE Disconnected for inactivity")
		return true
	case errors.Is(err, errLiteralSize):
		// The client may send the literal anyway: the stream cannot be
		// trusted any more.
		s.log.Info("bad command: closing", "err", err)
		s.send(tagOr(cmd.tag)+" BAD Literal too big", "* BYE Too big")
		return true
	case errors.Is(err, errTooBig):
		// Dovecot would read on (or disconnect) where postern stops: the
		// next command cannot be found with certainty.
		s.log.Info("bad command: closing", "err", err)
		s.send(tagOr(cmd.tag)+" BAD Command too long", "* BYE Too big")
		return true
	case errors.Is(err, errLineTooLong), errors.Is(err, errSyntax):
		s.log.Info("bad command", "err", err)
		return s.bad(cmd.tag, "Error in IMAP command received by server.")
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		s.log.Debug("client read", "err", err)
	}
	return true
}

func tagOr(tag string) string {
	if tag == "" {
		return "*"
	}
	return tag
}

// bad answers BAD and counts the error; it reports true when the session
// ends.
func (s *session) bad(tag, text string) bool {
	s.errors++
	if s.errors >= s.p.cfg.MaxErrors {
		s.send(tagOr(tag)+" BAD "+text, "* BYE Too many invalid IMAP commands.")
		return true
	}
	return s.send(tagOr(tag)+" BAD "+text) != nil
}

// command handles one command; done means the session is over (or handed
// to the backend).
func (s *session) command(c command) (done bool, err error) {
	switch c.name {
	case "CAPABILITY":
		return false, s.send("* CAPABILITY "+strings.Join(s.capabilities(), " "), c.tag+" OK Pre-login capabilities listed, post-login capabilities have more.")
	case "NOOP":
		return false, s.send(c.tag + " OK NOOP completed.")
	case "LOGOUT":
		s.send("* BYE Logging out", c.tag+" OK Logout completed.")
		return true, nil
	case "ID":
		if !validID(c.args) {
			// Dovecot reads ID's arguments its own way, one at a time;
			// where they are not what clients send, where it goes on
			// reading is not certain: close.
			s.log.Info("bad command: closing", "err", "invalid ID parameters")
			s.send(c.tag+" BAD Invalid ID parameters", "* BYE Invalid ID parameters")
			return true, nil
		}
		return false, s.send(`* ID ("name" "postern")`, c.tag+" OK ID completed.")
	case "STARTTLS":
		return s.startTLS(c)
	case "ENABLE":
		// Dovecot's imap-login answers ENABLE before login, ignoring it.
		return false, s.send("* ENABLED", c.tag+" OK ENABLE ignored in non-authenticated state.")
	case "LOGIN":
		// Dovecot: two astrings (an atom, a quoted string or a literal;
		// NIL and lists are not), nothing after them.
		if len(c.args) != 2 {
			return s.bad(c.tag, "Invalid arguments."), nil
		}
		user, ok1 := c.args[0].astring()
		pass, ok2 := c.args[1].astring()
		if !ok1 || !ok2 {
			return s.bad(c.tag, "Invalid arguments."), nil
		}
		return s.checkedLogin(c.tag, "", user, pass)
	case "AUTHENTICATE":
		return s.authenticate(c)
	}
	return s.bad(c.tag, "Error in IMAP command received by server."), nil
}

// validID reports whether ID's arguments are what Dovecot's imap-login
// takes: NIL, or one list of key (string) and value (string or NIL) pairs,
// at most 30 of them, keys under 30 bytes. postern answers ID itself and
// passes nothing of it on.
func validID(args []arg) bool {
	if len(args) != 1 {
		return false
	}
	if args[0].kind == argNil {
		return true
	}
	l := args[0].list
	if args[0].kind != argList || len(l)%2 != 0 || len(l) > 60 {
		return false
	}
	for i := 0; i < len(l); i += 2 {
		k, v := l[i], l[i+1]
		if k.kind != argString || len(k.s) >= 30 || v.kind != argString && v.kind != argNil {
			return false
		}
	}
	return true
}

func (s *session) startTLS(c command) (bool, error) {
	if s.tls || s.p.cfg.TLS == nil {
		return s.bad(c.tag, "TLS is already active."), nil
	}
	if s.r.Buffered() > 0 {
		s.send(c.tag + " BAD Commands sent after STARTTLS before the TLS handshake.")
		return true, nil
	}
	if err := s.send(c.tag + " OK Begin TLS negotiation now."); err != nil {
		return true, err
	}
	tc := tls.Server(s.conn, s.p.cfg.TLS)
	hctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		s.log.Info("STARTTLS handshake failed", "err", err)
		return true, nil
	}
	s.tls = true
	s.setConn(tc)
	return false, nil
}

// authenticate handles AUTHENTICATE PLAIN and LOGIN, with SASL-IR. As
// Dovecot, the line is not parsed as IMAP arguments: the mechanism is the
// bytes up to the next space, the initial response all the rest, raw
// ("" none, "=" empty). postern takes the initial response only in strict
// base64 (Dovecot also skips white space in it).
func (s *session) authenticate(c command) (bool, error) {
	mech, initial, _ := strings.Cut(c.raw, " ")
	if mech == "" {
		return s.bad(c.tag, "Invalid arguments."), nil
	}
	if !s.plaintextOK() {
		return false, s.send(c.tag + " NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
	}
	var authz, user, pass string
	var err error
	switch upperASCII(mech) {
	case "PLAIN":
		var resp []byte
		switch initial {
		case "":
			resp, err = s.saslStep("")
		case "=":
		default:
			resp, err = decodeSASL(initial)
		}
		if err != nil {
			return s.saslError(c.tag, err)
		}
		// Dovecot's PLAIN: exactly two NULs, a non-empty login name.
		parts := strings.Split(string(resp), "\x00")
		if len(parts) != 3 || parts[1] == "" {
			return s.saslError(c.tag, errSyntax)
		}
		authz, user, pass = parts[0], parts[1], parts[2]
	case "LOGIN":
		var u, p []byte
		switch initial {
		case "":
			u, err = s.saslStep("VXNlcm5hbWU6")
		case "=":
			err = errSyntax // Dovecot asks for the name again; postern refuses
		default:
			u, err = decodeSASL(initial)
		}
		if err == nil {
			p, err = s.saslStep("UGFzc3dvcmQ6")
		}
		if err == nil && len(u) == 0 {
			err = errSyntax
		}
		if err != nil {
			return s.saslError(c.tag, err)
		}
		user, pass = string(u), string(p)
	default:
		return false, s.send(c.tag + " NO Unsupported authentication mechanism.")
	}
	return s.checkedLogin(c.tag, authz, user, pass)
}

// maxSASL bounds the AUTHENTICATE PLAIN initial response postern sends to
// the backend: Dovecot reads at most 8192 bytes of it.
const maxSASL = 8000

// checkedLogin refuses, as a bad command, a login postern cannot pass on
// exactly as the client meant it: a name with control characters or
// leading or trailing spaces, a NUL, CR or LF in the password (Dovecot cuts
// a LOGIN password at a NUL), an authorization identity other than the
// login name (the login restriction is checked against the login name), or
// a login too long for the replay. Everything else goes to login.
func (s *session) checkedLogin(tag, authz, user, pass string) (bool, error) {
	if authz == user {
		authz = "" // Dovecot ignores an authorization identity equal to the login name
	}
	switch {
	case !validUser(user) || !validPassword(pass):
		s.log.Info("bad login: characters postern does not pass on")
		return s.bad(tag, "Invalid characters in the user name or password."), nil
	case authz != "":
		s.log.Info("bad login: an authorization identity", "account", user)
		return s.bad(tag, "Authorization identities are not supported."), nil
	case base64.StdEncoding.EncodedLen(len(user)+len(pass)+2) > maxSASL:
		return s.bad(tag, "User name or password too long."), nil
	}
	return s.login(tag, authz, user, pass)
}

var errCancelled = errors.New("cancelled")

// saslStep sends a continuation with a base64 challenge and reads the
// client's base64 answer: one line, "*" cancels.
func (s *session) saslStep(challenge string) ([]byte, error) {
	if err := s.send("+ " + challenge); err != nil {
		return nil, err
	}
	s.conn.SetReadDeadline(time.Now().Add(s.p.cfg.PreAuthIdle))
	line, err := s.rd.line()
	if err != nil {
		return nil, err
	}
	if line == "*" {
		return nil, errCancelled
	}
	return decodeSASL(line)
}

func (s *session) saslError(tag string, err error) (bool, error) {
	if errors.Is(err, errCancelled) {
		return false, s.send(tag + " BAD Authentication aborted by client.")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// A client that never answers a continuation is told why, as
		// one that never sends a command.
		s.send("* BYE Disconnected for inactivity")
		return true, nil
	}
	if errors.As(err, &ne) || errors.Is(err, io.EOF) {
		return true, nil
	}
	s.log.Info("bad authentication data", "err", err)
	return s.bad(tag, "Invalid base64 data in continued response."), nil
}

// login checks a login and, unless refused, replays it to the backend and
// relays the backend's tagged answer. On success the session is spliced.
func (s *session) login(tag, authz, user, pass string) (bool, error) {
	if !s.plaintextOK() {
		return false, s.send(tag + " NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
	}
	if strings.ContainsAny(user+pass+authz, "\x00\r\n") {
		return false, s.send(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
	}
	addr := s.client.Addr().Unmap()
	fp := s.p.eng.PasswordFingerprint(strings.ToLower(user), pass)
	lg, d := s.gs.BeginLogin(s.ctx, user)
	if lg == nil {
		return s.obey(d), nil
	}
	defer lg.Abandon()
	refused := false
	if pol := s.p.policy(); pol != nil && !pol.AllowLogin(user, addr) {
		// Refused, and answered as a wrong password is: the backend is
		// asked with a decoy password in place of the client's, fails it
		// with its own text in its own time, and that answer is relayed.
		s.log.Info("login refused by the login IP restriction", "account", user)
		refused, pass = true, s.p.decoys.Password(pass)
	}
	untagged, tagged, err := s.backendLogin(tag, authz, user, pass)
	if err != nil {
		lg.Failed(fp) // no answer, but the backend may have checked the password: count it
		s.log.Error("backend failed during login", "err", err)
		s.send("* BYE [UNAVAILABLE] Server temporarily unavailable, try again later")
		return true, nil
	}
	status := ""
	if rest := strings.TrimPrefix(tagged, tag+" "); len(rest) >= 2 {
		status, _, _ = strings.Cut(rest, " ")
	}
	if strings.EqualFold(status, "OK") && refused {
		// The backend took a decoy password (a passdb that checks none):
		// the login stays refused, and the backend's session, logged in,
		// is never handed over.
		lg.Failed(fp)
		s.log.Error("the backend accepted the decoy password of a refused login; closing", "account", user)
		s.send(tag + " " + *s.p.authFail.Load())
		return true, nil
	}
	if strings.EqualFold(status, "OK") {
		lg.Succeeded()
		s.log.Info("logged in", "account", user)
		if err := s.send(append(untagged, tagged)...); err != nil {
			return true, err
		}
		return true, s.splice()
	}
	if strings.EqualFold(status, "NO") {
		text := strings.TrimPrefix(tagged, tag+" ")
		s.p.authFail.Store(&text)
		return s.failed(tag, lg, fp, append(untagged, tagged)...)
	}
	if strings.EqualFold(status, "BAD") {
		return false, s.send(append(untagged, tagged)...)
	}
	// Neither OK, NO nor BAD (a continuation request, garbage): the
	// backend is not speaking IMAP; never relay what it said.
	lg.Failed(fp)
	s.log.Error("backend failed during login", "err", fmt.Errorf("unexpected reply %q", truncate(tagged, 80)))
	s.send("* BYE [UNAVAILABLE] Server temporarily unavailable, try again later")
	return true, nil
}

// failed relays a failed login and reports it (L).
func (s *session) failed(tag string, lg *guard.Login, fp uint64, lines ...string) (bool, error) {
	d := lg.Failed(fp)
	if err := s.send(lines...); err != nil {
		return true, err
	}
	return s.obey(d), nil
}

// backendLogin replays a login in a form postern writes itself: the
// client's tag (checked by validTag), then AUTHENTICATE PLAIN with SASL-IR
// when the backend offers it (base64: nothing to quote), else LOGIN with
// quoted strings, or with LITERAL+ literals for 8-bit bytes. The user name
// and password never hold NUL, CR or LF here (checkedLogin).
func (s *session) backendLogin(tag, authz, user, pass string) ([]string, string, error) {
	if !validTag(tag) || strings.ContainsAny(authz+user+pass, "\x00\r\n") {
		return nil, tag + " NO [AUTHENTICATIONFAILED] Authentication failed.", nil
	}
	if s.backendHas("AUTH=PLAIN") && s.backendHas("SASL-IR") {
		blob := base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
		return s.beTagged(tag, tag+" AUTHENTICATE PLAIN "+blob)
	}
	if authz != "" {
		return nil, tag + " NO [AUTHENTICATIONFAILED] Authentication failed.", nil
	}
	qu, ok1 := quote(user)
	qp, ok2 := quote(pass)
	if ok1 && ok2 {
		return s.beTagged(tag, tag+" LOGIN "+qu+" "+qp)
	}
	if !s.backendHas("LITERAL+") {
		return nil, tag + " NO [AUTHENTICATIONFAILED] Authentication failed.", nil
	}
	return s.beTagged(tag, fmt.Sprintf("%s LOGIN {%d+}\r\n%s {%d+}\r\n%s", tag, len(user), user, len(pass), pass))
}

// splice hands the session to the backend: bytes go both ways untouched.
func (s *session) splice() error {
	var pending []byte
	if n := s.r.Buffered(); n > 0 {
		pending, _ = s.r.Peek(n)
		pending = append([]byte(nil), pending...)
	}
	if n := s.br.Buffered(); n > 0 {
		early, _ := s.br.Peek(n)
		if _, err := s.conn.Write(early); err != nil {
			return err
		}
	}
	client, be := s.conn, s.be
	// Logged in: the backend's login process is done with this connection,
	// which no longer counts against the bound of pre-login connections.
	relay.ReleaseLimit(be)
	s.r, s.w, s.br, s.rd = nil, nil, nil, reader{}
	s.be = nil // owned by the hand-off from now on
	// Handle returns and its goroutine, whose stack grew during the
	// dialogue, ends; the splice runs on fresh goroutines.
	s.handedOff = true
	s.p.conns.Handoff(s.ctx, client, be, pending, s.gs.Close)
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
