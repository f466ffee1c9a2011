package imapproxy

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/postern/postern/internal/ascii"
	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/mailgate"
)

type session struct {
	*mailgate.Session
	ms     mailgate.Session // Session's storage, for a session of Proxy.Handle
	p      *Proxy
	rd     reader
	caps   *capSet // the backend's capabilities
	errors int
	seq    int // tags of postern's own backend commands
}

// capSet is a backend's capabilities as one greeting gave them, and what
// postern makes of them for every session that gets the same greeting.
type capSet struct {
	line string   // the backend's greeting
	text string   // its text after the capabilities
	caps []string // the backend's capabilities
	// kept is the backend's capabilities that postern passes on (not
	// STARTTLS, LOGINDISABLED, SASL-IR or AUTH=), each followed by a
	// space.
	kept string
	// full and greeting are postern's capabilities and greeting for each
	// of capTails, made once for every session greeted alike (shared);
	// empty for a set one session learnt by asking.
	full, greeting [len(capTails)]string
	// plainIR: the backend takes AUTHENTICATE PLAIN with an initial
	// response (AUTH=PLAIN and SASL-IR), as a login is replayed.
	plainIR bool
}

// capTails are what postern adds to the backend's capabilities: with
// STARTTLS offered and plaintext logins allowed before it, with STARTTLS
// required first, with plaintext logins allowed, and with logins
// disabled.
var capTails = [...]string{
	"STARTTLS SASL-IR AUTH=PLAIN AUTH=LOGIN",
	"STARTTLS LOGINDISABLED",
	"SASL-IR AUTH=PLAIN AUTH=LOGIN",
	"LOGINDISABLED",
}

func newCapSet(line, text string, caps []string, shared bool) *capSet {
	cs := &capSet{line: line, text: text, caps: caps}
	var b strings.Builder
	for _, c := range caps {
		u := strings.ToUpper(c)
		if u == "STARTTLS" || u == "LOGINDISABLED" || u == "SASL-IR" || strings.HasPrefix(u, "AUTH=") {
			continue
		}
		b.WriteString(c)
		b.WriteByte(' ')
	}
	cs.kept = b.String()
	cs.plainIR = cs.has("AUTH=PLAIN") && cs.has("SASL-IR")
	for i, tail := range capTails {
		if !shared {
			break
		}
		cs.full[i] = cs.kept + tail
		cs.greeting[i] = "* OK [CAPABILITY " + cs.full[i] + "] " + text
	}
	return cs
}

// reset reads commands through the client connection's current reader.
func (s *session) reset() {
	s.rd = reader{r: s.R, cont: s}
}

// continueLiteral asks the client for a synchronizing literal.
func (s *session) continueLiteral() error { return s.Send("+ Ready for literal data") }

// Greet reads the backend's greeting, learns its capabilities and
// returns postern's greeting.
func (s *session) Greet() (string, error) {
	s.reset() // the client's reader, set by now
	if err := s.greet(); err != nil {
		return "", err
	}
	if g := s.caps.greeting[s.capTail()]; g != "" {
		return g, nil
	}
	return "* OK [CAPABILITY " + s.capabilities() + "] " + s.caps.text, nil
}

func (s *session) greet() error {
	b, err := s.BackendLineBytes()
	if err != nil {
		return fmt.Errorf("backend greeting: %w", err)
	}
	// A backend greets every session alike: the capabilities of the last
	// greeting serve while it does not change.
	if cs := s.p.caps.Load(); cs != nil && cs.line == string(b) {
		s.caps = cs
		return nil
	}
	line := string(b)
	if !strings.HasPrefix(line, "* OK") {
		return fmt.Errorf("backend greeting: %q", mailgate.Truncate(line, 80))
	}
	text := strings.TrimSpace(line[4:])
	if strings.HasPrefix(text, "[CAPABILITY ") {
		end := strings.IndexByte(text, ']')
		if end < 0 {
			return fmt.Errorf("backend greeting: %q", mailgate.Truncate(line, 80))
		}
		s.caps = newCapSet(line, strings.TrimSpace(text[end+1:]), strings.Fields(text[len("[CAPABILITY "):end]), true)
		s.p.caps.Store(s.caps)
		return nil
	}
	// No capabilities in the greeting: ask, each session (they may
	// differ from one to the next).
	lines, tagged, err := s.beCommand("CAPABILITY")
	if err != nil || !strings.Contains(tagged, " OK") {
		return fmt.Errorf("backend CAPABILITY: %v %q", err, tagged)
	}
	var caps []string
	for _, l := range lines {
		if strings.HasPrefix(strings.ToUpper(l), "* CAPABILITY ") {
			caps = strings.Fields(l[len("* CAPABILITY "):])
		}
	}
	s.caps = newCapSet(line, text, caps, false)
	return nil
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
	l, err := s.BackendCommand(line)
	return s.beUntil(tag, l, err)
}

// beTaggedBytes is beTagged for a line in the caller's buffer (a login's,
// holding the password: no string of it is made).
func (s *session) beTaggedBytes(tag string, line []byte) ([]string, string, error) {
	l, err := s.BackendCommandBytes(line)
	return s.beUntil(tag, l, err)
}

// beUntil reads the backend's answer until the completion tagged tag, l
// (or err) its first line.
func (s *session) beUntil(tag, l string, err error) ([]string, string, error) {
	var untagged []string
	for i := range 1000 {
		if i > 0 {
			l, err = s.BackendLine()
		}
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

// capabilities are the backend's, with what postern handles itself
// adjusted: STARTTLS, AUTH=, SASL-IR, LOGINDISABLED.
func (s *session) capabilities() string {
	i := s.capTail()
	if c := s.caps.full[i]; c != "" {
		return c
	}
	return s.caps.kept + capTails[i]
}

// capTail is the index in capTails of what the session adds.
func (s *session) capTail() int {
	switch starttls := !s.TLS && s.Gate.Cfg.TLS != nil; {
	case starttls && s.PlaintextOK():
		return 0
	case starttls:
		return 1
	case s.PlaintextOK():
		return 2
	}
	return 3
}

func (s *session) backendHas(capability string) bool { return s.caps.has(capability) }

// has reports whether the backend named capability (in any case).
func (cs *capSet) has(capability string) bool {
	for _, c := range cs.caps {
		if ascii.EqualFold(c, capability) {
			return true
		}
	}
	return false
}

// Serve reads commands until the client logs in, leaves, or misbehaves.
func (s *session) Serve() {
	for {
		s.Idle()
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
		s.Send("* BYE Disconnected for inactivity")
		return true
	case errors.Is(err, errLiteralSize):
		// The client may send the literal anyway: the stream cannot be
		// trusted any more.
		s.Log.Info("bad command: closing", "err", err)
		s.Send(tagOr(cmd.tag)+" BAD Literal too big", "* BYE Too big")
		return true
	case errors.Is(err, errTooBig):
		// Dovecot would read on (or disconnect) where postern stops: the
		// next command cannot be found with certainty.
		s.Log.Info("bad command: closing", "err", err)
		s.Send(tagOr(cmd.tag)+" BAD Command too long", "* BYE Too big")
		return true
	case errors.Is(err, errUncertain):
		// Dovecot might read on into a literal where postern would look
		// for the next command.
		s.Log.Info("bad command: closing", "err", err)
		s.Send(tagOr(cmd.tag)+" BAD Error in IMAP command received by server.", "* BYE Invalid command")
		return true
	case errors.Is(err, errLineTooLong), errors.Is(err, errSyntax):
		s.Log.Info("bad command", "err", err)
		return s.bad(cmd.tag, "Error in IMAP command received by server.")
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		s.Log.Debug("client read", "err", err)
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
	if s.errors >= s.Gate.Cfg.MaxErrors {
		s.Send(tagOr(tag)+" BAD "+text, "* BYE Too many invalid IMAP commands.")
		return true
	}
	return s.Send(tagOr(tag)+" BAD "+text) != nil
}

// command handles one command; done means the session is over (or handed
// to the backend).
func (s *session) command(c command) (done bool, err error) {
	switch c.name {
	case "CAPABILITY":
		return false, s.Send("* CAPABILITY "+s.capabilities(), c.tag+" OK Pre-login capabilities listed, post-login capabilities have more.")
	case "NOOP":
		return false, s.Send(c.tag + " OK NOOP completed.")
	case "LOGOUT":
		s.Send("* BYE Logging out", c.tag+" OK Logout completed.")
		return true, nil
	case "ID":
		if !validID(c.args) {
			// Dovecot reads ID's arguments its own way, one at a time;
			// where they are not what clients send, where it goes on
			// reading is not certain: close.
			s.Log.Info("bad command: closing", "err", "invalid ID parameters")
			s.Send(c.tag+" BAD Invalid ID parameters", "* BYE Invalid ID parameters")
			return true, nil
		}
		return false, s.Send(`* ID ("name" "postern")`, c.tag+" OK ID completed.")
	case "STARTTLS":
		return s.startTLS(c)
	case "ENABLE":
		// Dovecot's imap-login answers ENABLE before login, ignoring it.
		return false, s.Send("* ENABLED", c.tag+" OK ENABLE ignored in non-authenticated state.")
	case "LOGIN":
		// Dovecot: two astrings (an atom, NIL as the string as sent, a
		// quoted string or a literal; not a list), nothing after them.
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
	if s.TLS || s.Gate.Cfg.TLS == nil {
		return s.bad(c.tag, "TLS is already active."), nil
	}
	if s.R.Buffered() > 0 {
		s.Send(c.tag + " BAD Commands sent after STARTTLS before the TLS handshake.")
		return true, nil
	}
	if err := s.Send(c.tag + " OK Begin TLS negotiation now."); err != nil {
		return true, err
	}
	if err := s.StartTLS(); err != nil {
		s.Log.Info("STARTTLS handshake failed", "err", err)
		return true, nil
	}
	s.reset()
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
	if !s.PlaintextOK() {
		return false, s.Send(c.tag + " NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
	}
	authz, user, pass, err := s.SASL(mech, initial, "+ ", s.rd.line)
	if errors.Is(err, gate.ErrMechanism) {
		return false, s.Send(c.tag + " NO Unsupported authentication mechanism.")
	}
	if err != nil {
		return s.saslError(c.tag, err)
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
	case !mailgate.ValidUser(user) || !validPassword(pass):
		s.Log.Info("bad login: characters postern does not pass on")
		return s.bad(tag, "Invalid characters in the user name or password."), nil
	case authz != "":
		s.Log.Info("bad login: an authorization identity", "account", user)
		return s.bad(tag, "Authorization identities are not supported."), nil
	case base64.StdEncoding.EncodedLen(len(user)+len(pass)+2) > maxSASL:
		return s.bad(tag, "User name or password too long."), nil
	}
	return s.login(tag, authz, user, pass)
}

func (s *session) saslError(tag string, err error) (bool, error) {
	if errors.Is(err, gate.ErrCancelled) {
		return false, s.Send(tag + " BAD Authentication aborted by client.")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// A client that never answers a continuation is told why, as
		// one that never sends a command.
		s.Send("* BYE Disconnected for inactivity")
		return true, nil
	}
	if errors.As(err, &ne) || errors.Is(err, io.EOF) {
		return true, nil
	}
	s.Log.Info("bad authentication data", "err", err)
	return s.bad(tag, "Invalid base64 data in continued response."), nil
}

// login checks a login and, unless refused, replays it to the backend and
// relays the backend's tagged answer. On success the session is spliced.
func (s *session) login(tag, authz, user, pass string) (bool, error) {
	if !s.PlaintextOK() {
		return false, s.Send(tag + " NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
	}
	if strings.ContainsAny(user+pass+authz, "\x00\r\n") {
		return false, s.Send(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
	}
	done := s.Login(user, pass, tag+" ", func(pass string) (mailgate.Reply, error) {
		untagged, tagged, err := s.backendLogin(tag, authz, user, pass)
		if err != nil {
			return mailgate.Reply{}, err
		}
		return loginReply(tag, untagged, tagged), nil
	})
	return done, nil
}

// loginReply reads the backend's answer to a replayed login.
func loginReply(tag string, untagged []string, tagged string) mailgate.Reply {
	r := mailgate.Reply{Lines: untagged, Last: tagged, Raw: tagged}
	status := ""
	if rest := strings.TrimPrefix(tagged, tag+" "); len(rest) >= 2 {
		status, _, _ = strings.Cut(rest, " ")
	}
	switch {
	case ascii.EqualFold(status, "OK"):
		r.Outcome = gate.Accepted
	case ascii.EqualFold(status, "NO"):
		r.Outcome, r.FailText = gate.Rejected, strings.TrimPrefix(tagged, tag+" ")
	case ascii.EqualFold(status, "BAD"):
		r.Outcome = gate.Answered
	}
	// Neither OK, NO nor BAD (a continuation request, garbage): the
	// backend is not speaking IMAP; never relay what it said.
	return r
}

// backendLogin replays a login in a form postern writes itself: the
// client's tag (checked by validTag), then AUTHENTICATE PLAIN with SASL-IR
// when the backend offers it (base64: nothing to quote), else LOGIN with
// quoted strings, or with LITERAL+ literals for 8-bit bytes. The user name
// and password never hold NUL, CR or LF here (checkedLogin).
// appendAuthenticatePlain appends the command "tag AUTHENTICATE PLAIN"
// with the credentials as its initial response (SASL-IR) to cmd: a
// login's buffer on the stack, which the caller clears once sent, so that
// no copy of the password is left on the heap (the backend's writer
// clears its own, mailgate.Session.BackendCommandBytes).
func appendAuthenticatePlain(cmd []byte, tag, authz, user, pass string) []byte {
	const verb = " AUTHENTICATE PLAIN "
	n := len(authz) + len(user) + len(pass) + 2
	if need := len(cmd) + len(tag) + len(verb) + base64.StdEncoding.EncodedLen(n) + n; need > cap(cmd) {
		cmd = append(make([]byte, 0, need), cmd...)
	}
	cmd = append(append(cmd, tag...), verb...)
	// The credentials go after the room for their encoding, which is
	// longer, and are cleared once encoded.
	enc := len(cmd)
	cmd = cmd[:enc+base64.StdEncoding.EncodedLen(n)]
	raw := append(append(append(append(append(cmd[len(cmd):], authz...), 0), user...), 0), pass...)
	base64.StdEncoding.Encode(cmd[enc:], raw)
	clear(raw)
	return cmd
}

func (s *session) backendLogin(tag, authz, user, pass string) ([]string, string, error) {
	const bad = "\x00\r\n"
	if !validTag(tag) || strings.ContainsAny(authz, bad) || strings.ContainsAny(user, bad) || strings.ContainsAny(pass, bad) {
		return nil, tag + " NO [AUTHENTICATIONFAILED] Authentication failed.", nil
	}
	if s.caps.plainIR {
		var stack [512]byte
		cmd := appendAuthenticatePlain(stack[:0], tag, authz, user, pass)
		defer clear(cmd)
		return s.beTaggedBytes(tag, cmd)
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
