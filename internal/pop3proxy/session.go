package pop3proxy

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

// maxLine bounds a command line (RFC 2449 allows 255 octets).
const maxLine = 1024

type session struct {
	p      *Proxy
	ctx    context.Context
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	client netip.AddrPort
	log    *slog.Logger
	gs     *guard.Session
	tarpit time.Duration

	be     net.Conn
	br     *bufio.Reader
	caps   []string // the backend's CAPA lines
	tls    bool
	user   string // from USER
	errors int

	handedOff bool // spliced: the connections and the guard session belong to relay.Conns.Handoff
}

// Handle serves one client connection to its end.
func (p *Proxy) Handle(ctx context.Context, conn net.Conn, client, local netip.AddrPort) {
	s := &session{p: p, ctx: ctx, client: client, tls: p.cfg.ImplicitTLS, log: p.log.With("client", client.Addr().String())}
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
		s.send("-ERR [SYS/PERM] " + v.Refusal())
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
		s.send("-ERR [SYS/TEMP] Server temporarily unavailable, try again later")
		return
	}
	if netlisten.SpokeFirst(s.conn, s.r) {
		s.log.Info("early talker: the client sent data before the greeting")
	}
	if err := s.send("+OK " + greeting); err != nil {
		return
	}
	s.loop()
}

func (s *session) setConn(c net.Conn) {
	s.conn = c
	s.r = bufio.NewReaderSize(c, maxLine+2)
	s.w = bufio.NewWriterSize(c, 2048)
}

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
		s.send("-ERR [SYS/PERM] " + d.Refusal())
		return true
	}
	return false
}

// dialBackend connects, reads the greeting and the backend's CAPA.
func (s *session) dialBackend(local netip.AddrPort) (string, error) {
	be, err := s.p.cfg.Backend.Dial(s.ctx, s.client, local)
	if err != nil {
		return "", err
	}
	s.be, s.br = be, bufio.NewReaderSize(be, 4096)
	g, err := s.beLine()
	if err != nil {
		return "", fmt.Errorf("backend greeting: %w", err)
	}
	if !strings.HasPrefix(g, "+OK") {
		return "", fmt.Errorf("backend greeting: %q", truncate(g, 80))
	}
	text := strings.TrimSpace(g[3:])
	if i := strings.IndexByte(text, '<'); i >= 0 && strings.HasSuffix(text, ">") {
		text = strings.TrimSpace(text[:i]) // an APOP timestamp: postern does not offer APOP
	}
	if r, err := s.beCmd("CAPA"); err == nil && strings.HasPrefix(r, "+OK") {
		for range 100 {
			l, err := s.beLine()
			if err != nil {
				return "", fmt.Errorf("backend CAPA: %w", err)
			}
			if l == "." {
				break
			}
			s.caps = append(s.caps, l)
		}
	}
	return text, nil
}

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

func (s *session) beCmd(line string) (string, error) {
	s.be.SetWriteDeadline(time.Now().Add(s.p.cfg.BackendTimeout))
	if _, err := io.WriteString(s.be, line+"\r\n"); err != nil {
		return "", fmt.Errorf("writing to backend: %w", err)
	}
	return s.beLine()
}

func (s *session) plaintextOK() bool {
	return s.tls || s.p.cfg.PlaintextLogin != nil && s.p.cfg.PlaintextLogin(s.client.Addr().Unmap())
}

// capabilities are the backend's CAPA lines with STLS, USER and SASL
// adjusted to what postern offers.
func (s *session) capabilities() []string {
	var out []string
	for _, c := range s.caps {
		name, _, _ := strings.Cut(strings.ToUpper(c), " ")
		if name == "STLS" || name == "USER" || name == "SASL" || name == "APOP" {
			continue
		}
		out = append(out, c)
	}
	if !s.tls && s.p.cfg.TLS != nil {
		out = append(out, "STLS")
	}
	if s.plaintextOK() {
		out = append(out, "USER", "SASL PLAIN LOGIN")
	}
	return out
}

func (s *session) backendSASLPlain() bool {
	for _, c := range s.caps {
		f := strings.Fields(strings.ToUpper(c))
		if len(f) > 1 && f[0] == "SASL" {
			for _, m := range f[1:] {
				if m == "PLAIN" {
					return true
				}
			}
		}
	}
	return false
}

// readLine reads one command line.
func (s *session) readLine() (string, error) {
	s.conn.SetReadDeadline(time.Now().Add(s.p.cfg.PreAuthIdle))
	return readCommandLine(s.r)
}

// readCommandLine reads one line without its LF and one CR before it, as
// Dovecot's pop3-login. A CR left inside (Dovecot skips it in a command
// name and keeps it in an argument) or a NUL (Dovecot ends a command name
// or an argument there) is refused with errBad; a line longer than the
// reader's buffer with errTooLong, after skipping it.
func readCommandLine(r *bufio.Reader) (string, error) {
	l, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = r.ReadSlice('\n')
		}
		if err != nil {
			return "", err
		}
		return "", errTooLong
	}
	if err != nil {
		return "", err
	}
	line := strings.TrimSuffix(strings.TrimSuffix(string(l), "\n"), "\r")
	if strings.IndexByte(line, 0) >= 0 || strings.IndexByte(line, '\r') >= 0 {
		return "", errBad
	}
	return line, nil
}

// parseCommand splits a line as Dovecot's pop3-login: the command name is
// the bytes up to the first space (or the line end), compared in ASCII
// upper case; the argument is everything after that one space, raw. name
// is "" unless the command name is 4 ASCII letters (all postern knows).
func parseCommand(line string) (name, verb, arg string) {
	verb, arg, _ = strings.Cut(line, " ")
	if len(verb) == 4 && asciiLetters(verb) {
		name = upperASCII(verb)
	}
	return name, verb, arg
}

// parseAuth splits AUTH's argument as Dovecot: empty, or starting with a
// space, lists the mechanisms; else the mechanism is the bytes up to the
// next space and the initial response the rest ("" none, "=" empty).
func parseAuth(arg string) (mech, initial string, list bool) {
	if arg == "" || arg[0] == ' ' {
		return "", "", true
	}
	mech, initial, _ = strings.Cut(arg, " ")
	return mech, initial, false
}

var (
	errTooLong   = errors.New("line too long")
	errBad       = errors.New("bad command")
	errCancelled = errors.New("cancelled")
)

func (s *session) loop() {
	for {
		line, err := s.readLine()
		switch {
		case errors.Is(err, errTooLong):
			s.log.Info("bad command", "err", err)
			if s.bad("-ERR Line too long") {
				return
			}
			continue
		case errors.Is(err, errBad):
			s.log.Info("bad command", "err", "NUL or CR inside a line")
			if s.bad("-ERR Unknown command") {
				return
			}
			continue
		case err != nil:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.send("-ERR Disconnected for inactivity.")
			}
			return
		}
		if done := s.command(line); done {
			return
		}
	}
}

// bad answers an error and counts it; it reports true when the session ends.
func (s *session) bad(text string) bool {
	s.errors++
	if s.errors >= s.p.cfg.MaxErrors {
		s.send("-ERR Too many bad commands.")
		return true
	}
	return s.send(text) != nil
}

// command handles one line; done means the session is over (or spliced).
//
// As Dovecot's pop3-login: the command name is the bytes up to the first
// space (or the line end), compared in ASCII upper case; the argument is
// everything after that one space, raw: "USER  bob" names " bob", "PASS a b "
// is the password "a b ". postern knows only 4-letter names made of
// ASCII letters, so a TAB, a leading space or a non-ASCII letter never
// makes a known command ("USER\tbob" is the unknown "USER\tBOB" to Dovecot
// too).
func (s *session) command(line string) bool {
	name, verb, arg := parseCommand(line)
	switch name {
	case "CAPA":
		return s.send(append(append([]string{"+OK"}, s.capabilities()...), ".")...) != nil
	case "QUIT":
		s.send("+OK Logging out.")
		return true
	case "STLS":
		return s.startTLS()
	case "USER":
		if !s.plaintextOK() {
			return s.send("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.") != nil
		}
		if arg == "" {
			return s.bad("-ERR No username given.")
		}
		if !validUser(arg) {
			s.log.Info("bad login: characters postern does not pass on")
			return s.bad("-ERR Invalid characters in the user name.")
		}
		s.user = arg
		return s.send("+OK") != nil
	case "PASS":
		if s.user == "" {
			return s.bad("-ERR No username given.")
		}
		user := s.user
		s.user = ""
		return s.checkedLogin("", user, arg)
	case "AUTH":
		return s.auth(arg)
	case "APOP":
		return s.send("-ERR APOP is not supported.") != nil
	}
	return s.bad("-ERR Unknown command: " + truncate(printable(verb), 20))
}

// printable replaces the bytes of s that are not printable ASCII, so that
// an echoed command name cannot carry control bytes.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

func asciiLetters(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// upperASCII upper-cases ASCII letters only, as Dovecot's i_toupper.
func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}

// validUser reports whether a login name can be passed on as it is: no
// control characters, no leading or trailing space, not empty.
func validUser(u string) bool {
	if u == "" || u[0] == ' ' || u[len(u)-1] == ' ' {
		return false
	}
	for i := 0; i < len(u); i++ {
		if u[i] < ' ' || u[i] == 0x7f {
			return false
		}
	}
	return true
}

// maxReplay bounds a login postern replays: Dovecot's pop3-login reads
// lines of at most 1026 bytes (8192 for an AUTH initial response).
const maxReplay = 1000

// checkedLogin refuses, as a bad command, a login postern cannot pass on
// exactly as the client meant it (see the IMAP gateway's checkedLogin);
// everything else goes to login.
func (s *session) checkedLogin(authz, user, pass string) bool {
	if authz == user {
		authz = "" // Dovecot ignores an authorization identity equal to the login name
	}
	switch {
	case !validUser(user) || strings.ContainsAny(pass, "\x00\r\n"):
		s.log.Info("bad login: characters postern does not pass on")
		return s.bad("-ERR Invalid characters in the user name or password.")
	case authz != "":
		s.log.Info("bad login: an authorization identity", "account", user)
		return s.bad("-ERR Authorization identities are not supported.")
	case len(user)+len(pass)+2 > maxReplay:
		return s.bad("-ERR User name or password too long.")
	}
	return s.login(authz, user, pass)
}

// decodeSASL decodes one base64 SASL response in the only form postern
// accepts: the standard alphabet with padding, nothing else (Dovecot also
// skips white space inside; postern refuses it).
func decodeSASL(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return nil, errBad
		}
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBad, err)
	}
	return b, nil
}

func (s *session) startTLS() bool {
	if s.tls || s.p.cfg.TLS == nil {
		return s.bad("-ERR TLS is not available.")
	}
	if s.r.Buffered() > 0 {
		s.send("-ERR Commands sent after STLS before the TLS handshake.")
		return true
	}
	if err := s.send("+OK Begin TLS negotiation now."); err != nil {
		return true
	}
	tc := tls.Server(s.conn, s.p.cfg.TLS)
	hctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		s.log.Info("STLS handshake failed", "err", err)
		return true
	}
	s.tls, s.user = true, ""
	s.setConn(tc)
	return false
}

// auth handles AUTH PLAIN and LOGIN (RFC 5034), with initial response. As
// Dovecot: an argument that is empty or starts with a space lists the
// mechanisms; the mechanism is the bytes up to the next space, the initial
// response the rest of the line ("" none, "=" empty). postern takes base64
// only in its strict form.
func (s *session) auth(arg string) bool {
	mech, initial, list := parseAuth(arg)
	if list {
		return s.send("+OK", "PLAIN", "LOGIN", ".") != nil
	}
	if !s.plaintextOK() {
		return s.send("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.") != nil
	}
	var authz, user, pass string
	switch upperASCII(mech) {
	case "PLAIN":
		var resp []byte
		var err error
		switch initial {
		case "":
			resp, err = s.saslStep("")
		case "=":
		default:
			resp, err = decodeSASL(initial)
		}
		if err != nil {
			return s.saslError(err)
		}
		parts := strings.Split(string(resp), "\x00")
		if len(parts) != 3 || parts[1] == "" {
			return s.saslError(errBad)
		}
		authz, user, pass = parts[0], parts[1], parts[2]
	case "LOGIN":
		var u, p []byte
		var err error
		switch initial {
		case "":
			u, err = s.saslStep("VXNlcm5hbWU6")
		case "=":
			err = errBad // Dovecot asks for the name again; postern refuses
		default:
			u, err = decodeSASL(initial)
		}
		if err == nil {
			p, err = s.saslStep("UGFzc3dvcmQ6")
		}
		if err == nil && len(u) == 0 {
			err = errBad
		}
		if err != nil {
			return s.saslError(err)
		}
		user, pass = string(u), string(p)
	default:
		return s.send("-ERR Unsupported authentication mechanism.") != nil
	}
	return s.checkedLogin(authz, user, pass)
}

func (s *session) saslStep(challenge string) ([]byte, error) {
	if err := s.send("+ " + challenge); err != nil {
		return nil, err
	}
	line, err := s.readLine()
	if err != nil {
		return nil, err
	}
	if line == "*" {
		return nil, errCancelled
	}
	return decodeSASL(line)
}

func (s *session) saslError(err error) bool {
	if errors.Is(err, errCancelled) {
		return s.send("-ERR Authentication aborted.") != nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// A client that never answers a continuation is told why, as
		// one that never sends a command.
		s.send("-ERR Disconnected for inactivity.")
		return true
	}
	if errors.As(err, &ne) || errors.Is(err, io.EOF) {
		return true
	}
	s.log.Info("bad authentication data", "err", err)
	return s.bad("-ERR Invalid base64 data.")
}

// login checks a login and, unless refused, replays it to the backend and
// relays the answer; on success the session is spliced.
func (s *session) login(authz, user, pass string) bool {
	if strings.ContainsAny(user+pass+authz, "\x00\r\n") {
		return s.send(*s.p.authFail.Load()) != nil
	}
	addr := s.client.Addr().Unmap()
	fp := s.p.eng.PasswordFingerprint(strings.ToLower(user), pass)
	lg, d := s.gs.BeginLogin(s.ctx, user)
	if lg == nil {
		return s.obey(d)
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
	reply, err := s.backendLogin(authz, user, pass)
	if err != nil {
		lg.Failed(fp) // no answer, but the backend may have checked the password: count it
		s.log.Error("backend failed during login", "err", err)
		s.send("-ERR [SYS/TEMP] Server temporarily unavailable, try again later")
		return true
	}
	switch {
	case strings.HasPrefix(reply, "+OK") && refused:
		// The backend took a decoy password (a passdb that checks none):
		// the login stays refused, and the backend's session, logged in,
		// is never handed over.
		lg.Failed(fp)
		s.log.Error("the backend accepted the decoy password of a refused login; closing", "account", user)
		s.send(*s.p.authFail.Load())
		return true
	case strings.HasPrefix(reply, "+OK"):
		lg.Succeeded()
		s.log.Info("logged in", "account", user)
		if s.send(reply) != nil {
			return true
		}
		s.splice()
		return true
	case strings.HasPrefix(reply, "-ERR"):
		if strings.Contains(reply, "[AUTH]") || !strings.Contains(reply, "[SYS/") && !strings.Contains(reply, "[IN-USE]") {
			r := reply
			s.p.authFail.Store(&r)
			return s.failed(lg, fp, reply)
		}
		return s.send(reply) != nil
	}
	// Neither +OK nor -ERR: the backend is not speaking POP3; never relay
	// what it said.
	lg.Failed(fp)
	s.log.Error("backend failed during login", "err", fmt.Errorf("unexpected reply %q", truncate(reply, 80)))
	s.send("-ERR [SYS/TEMP] Server temporarily unavailable, try again later")
	return true
}

func (s *session) failed(lg *guard.Login, fp uint64, reply string) bool {
	d := lg.Failed(fp)
	if s.send(reply) != nil {
		return true
	}
	return s.obey(d)
}

// backendLogin replays the login in a form postern writes itself: AUTH
// PLAIN with an initial response when the backend offers it (base64:
// nothing to quote), else USER and PASS, whose arguments Dovecot reads raw
// to the line end (checkedLogin has refused NUL, CR, LF, and names with
// control characters or outer spaces).
func (s *session) backendLogin(authz, user, pass string) (string, error) {
	if strings.ContainsAny(authz+user+pass, "\x00\r\n") {
		return *s.p.authFail.Load(), nil
	}
	if s.backendSASLPlain() {
		blob := base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
		return s.beCmd("AUTH PLAIN " + blob)
	}
	if authz != "" {
		return *s.p.authFail.Load(), nil
	}
	r, err := s.beCmd("USER " + user)
	if err != nil || !strings.HasPrefix(r, "+OK") {
		return r, err
	}
	return s.beCmd("PASS " + pass)
}

func (s *session) splice() {
	var pending []byte
	if n := s.r.Buffered(); n > 0 {
		b, _ := s.r.Peek(n)
		pending = append([]byte(nil), b...)
	}
	if n := s.br.Buffered(); n > 0 {
		early, _ := s.br.Peek(n)
		if _, err := s.conn.Write(early); err != nil {
			return
		}
	}
	client, be := s.conn, s.be
	// Logged in: the backend's login process is done with this connection,
	// which no longer counts against the bound of pre-login connections.
	relay.ReleaseLimit(be)
	s.r, s.w, s.br, s.be = nil, nil, nil, nil
	// Handle returns and its goroutine, whose stack grew during the
	// dialogue, ends; the splice runs on fresh goroutines.
	s.handedOff = true
	s.p.conns.Handoff(s.ctx, client, be, pending, s.gs.Close)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
