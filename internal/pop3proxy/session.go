package pop3proxy

import (
	"bufio"
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

// maxLine bounds a command line (RFC 2449 allows 255 octets).
const maxLine = 1024

type session struct {
	*mailgate.Session
	ms     mailgate.Session // Session's storage, for a session of Proxy.Handle
	caps   []string         // the backend's CAPA lines
	user   string           // from USER
	errors int
}

// Greet reads the backend's greeting and CAPA and returns postern's
// greeting.
func (s *session) Greet() (string, error) {
	g, err := s.BackendLine()
	if err != nil {
		return "", fmt.Errorf("backend greeting: %w", err)
	}
	if !strings.HasPrefix(g, "+OK") {
		return "", fmt.Errorf("backend greeting: %q", mailgate.Truncate(g, 80))
	}
	text := strings.TrimSpace(g[3:])
	if i := strings.IndexByte(text, '<'); i >= 0 && strings.HasSuffix(text, ">") {
		text = strings.TrimSpace(text[:i]) // an APOP timestamp: postern does not offer APOP
	}
	if r, err := s.beCmd("CAPA"); err == nil && strings.HasPrefix(r, "+OK") {
		for range 100 {
			l, err := s.BackendLine()
			if err != nil {
				return "", fmt.Errorf("backend CAPA: %w", err)
			}
			if l == "." {
				break
			}
			s.caps = append(s.caps, l)
		}
	}
	return "+OK " + text, nil
}

func (s *session) beCmd(line string) (string, error) { return s.BackendCommand(line) }

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
	if !s.TLS && s.Gate.Cfg.TLS != nil {
		out = append(out, "STLS")
	}
	if s.PlaintextOK() {
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
	s.Idle()
	return readCommandLine(s.R)
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
		name = ascii.Upper(verb)
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
	errTooLong = errors.New("line too long")
	errBad     = errors.New("bad command")
)

// Serve reads commands until the client logs in, leaves, or misbehaves.
func (s *session) Serve() {
	for {
		line, err := s.readLine()
		switch {
		case errors.Is(err, errTooLong):
			s.Log.Info("bad command", "err", err)
			if s.bad("-ERR Line too long") {
				return
			}
			continue
		case errors.Is(err, errBad):
			s.Log.Info("bad command", "err", "NUL or CR inside a line")
			if s.bad("-ERR Unknown command") {
				return
			}
			continue
		case err != nil:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.Send("-ERR Disconnected for inactivity.")
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
	if s.errors >= s.Gate.Cfg.MaxErrors {
		s.Send("-ERR Too many bad commands.")
		return true
	}
	return s.Send(text) != nil
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
		return s.Send(append(append([]string{"+OK"}, s.capabilities()...), ".")...) != nil
	case "QUIT":
		s.Send("+OK Logging out.")
		return true
	case "STLS":
		return s.startTLS()
	case "USER":
		if !s.PlaintextOK() {
			return s.Send("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.") != nil
		}
		if arg == "" {
			return s.bad("-ERR No username given.")
		}
		if !mailgate.ValidUser(arg) {
			s.Log.Info("bad login: characters postern does not pass on")
			return s.bad("-ERR Invalid characters in the user name.")
		}
		s.user = arg
		return s.Send("+OK") != nil
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
		return s.Send("-ERR APOP is not supported.") != nil
	}
	return s.bad("-ERR Unknown command: " + mailgate.Truncate(printable(verb), 20))
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
	case !mailgate.ValidUser(user) || strings.ContainsAny(pass, "\x00\r\n"):
		s.Log.Info("bad login: characters postern does not pass on")
		return s.bad("-ERR Invalid characters in the user name or password.")
	case authz != "":
		s.Log.Info("bad login: an authorization identity", "account", user)
		return s.bad("-ERR Authorization identities are not supported.")
	case len(user)+len(pass)+2 > maxReplay:
		return s.bad("-ERR User name or password too long.")
	}
	return s.login(authz, user, pass)
}

func (s *session) startTLS() bool {
	if s.TLS || s.Gate.Cfg.TLS == nil {
		return s.bad("-ERR TLS is not available.")
	}
	if s.R.Buffered() > 0 {
		s.Send("-ERR Commands sent after STLS before the TLS handshake.")
		return true
	}
	if err := s.Send("+OK Begin TLS negotiation now."); err != nil {
		return true
	}
	if err := s.StartTLS(); err != nil {
		s.Log.Info("STLS handshake failed", "err", err)
		return true
	}
	s.user = ""
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
		return s.Send("+OK", "PLAIN", "LOGIN", ".") != nil
	}
	if !s.PlaintextOK() {
		return s.Send("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.") != nil
	}
	authz, user, pass, err := s.SASL(mech, initial, "+ ", s.readLine)
	if errors.Is(err, gate.ErrMechanism) {
		return s.Send("-ERR Unsupported authentication mechanism.") != nil
	}
	if err != nil {
		return s.saslError(err)
	}
	return s.checkedLogin(authz, user, pass)
}

func (s *session) saslError(err error) bool {
	if errors.Is(err, gate.ErrCancelled) {
		return s.Send("-ERR Authentication aborted.") != nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// A client that never answers a continuation is told why, as
		// one that never sends a command.
		s.Send("-ERR Disconnected for inactivity.")
		return true
	}
	if errors.As(err, &ne) || errors.Is(err, io.EOF) {
		return true
	}
	s.Log.Info("bad authentication data", "err", err)
	return s.bad("-ERR Invalid base64 data.")
}

// login checks a login and, unless refused, replays it to the backend and
// relays the answer; on success the session is spliced.
func (s *session) login(authz, user, pass string) bool {
	if strings.ContainsAny(user+pass+authz, "\x00\r\n") {
		return s.Send(s.Gate.AuthFailed()) != nil
	}
	return s.Login(user, pass, "", func(pass string) (mailgate.Reply, error) {
		reply, err := s.backendLogin(authz, user, pass)
		if err != nil {
			return mailgate.Reply{}, err
		}
		return loginReply(reply), nil
	})
}

// loginReply reads the backend's answer to a replayed login.
func loginReply(reply string) mailgate.Reply {
	r := mailgate.Reply{Last: reply, Raw: reply}
	switch {
	case strings.HasPrefix(reply, "+OK"):
		r.Outcome = gate.Accepted
	case strings.HasPrefix(reply, "-ERR"):
		r.Outcome = gate.Answered
		if strings.Contains(reply, "[AUTH]") || !strings.Contains(reply, "[SYS/") && !strings.Contains(reply, "[IN-USE]") {
			r.Outcome, r.FailText = gate.Rejected, reply
		}
	}
	// Neither +OK nor -ERR: the backend is not speaking POP3; never
	// relay what it said.
	return r
}

// backendLogin replays the login in a form postern writes itself: AUTH
// PLAIN with an initial response when the backend offers it (base64:
// nothing to quote), else USER and PASS, whose arguments Dovecot reads raw
// to the line end (checkedLogin has refused NUL, CR, LF, and names with
// control characters or outer spaces).
func (s *session) backendLogin(authz, user, pass string) (string, error) {
	if strings.ContainsAny(authz+user+pass, "\x00\r\n") {
		return s.Gate.AuthFailed(), nil
	}
	if s.backendSASLPlain() {
		blob := base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
		return s.beCmd("AUTH PLAIN " + blob)
	}
	if authz != "" {
		return s.Gate.AuthFailed(), nil
	}
	r, err := s.beCmd("USER " + user)
	if err != nil || !strings.HasPrefix(r, "+OK") {
		return r, err
	}
	return s.beCmd("PASS " + pass)
}
