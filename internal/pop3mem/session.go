package pop3mem

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	// maxLine is the longest command or SASL response line accepted,
	// CRLF not counted.
	maxLine = 1024
	// bufSize is the size of each connection's read and write buffer.
	bufSize = 4096
	// proxyHeaderTimeout bounds the wait for the PROXY header.
	proxyHeaderTimeout = 5 * time.Second
	// maxHandshakeTimeout bounds the TLS handshake after STLS.
	maxHandshakeTimeout = 30 * time.Second
)

// Replies whose exact text clients or tests depend on (Dovecot's wording).
const (
	replyAuthFailed        = "-ERR [AUTH] Authentication failed."
	replyPlaintextDisabled = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
	replyLineTooLong       = "-ERR Line too long"
	replyLoggedIn          = "+OK Logged in."
	replyLogout            = "+OK Logging out."
)

// errLineTooLong is returned by readLine for a line over maxLine octets;
// the whole line has been consumed.
var errLineTooLong = errors.New("line too long")

// session is one POP3 connection.
type session struct {
	srv *Server
	raw net.Conn // the accepted connection
	nc  net.Conn // raw, or the TLS connection over it after STLS
	r   *bufio.Reader
	w   *bufio.Writer
	log *slog.Logger

	client netip.AddrPort
	rec    *SessionRecord
	tls    bool

	// AUTHORIZATION state
	pendingUser string
	hasUser     bool

	// TRANSACTION state (user != "")
	user    string
	msgs    []*message // snapshot taken at login
	deleted []bool
}

// run serves the connection until QUIT, an I/O error or a timeout.
func (c *session) run() {
	s := c.srv
	c.r = bufio.NewReaderSize(c.raw, bufSize)
	c.w = bufio.NewWriterSize(c.raw, bufSize)
	c.client = addrPortOf(c.raw.RemoteAddr())

	if s.opts.RequireProxyHeader {
		c.raw.SetReadDeadline(time.Now().Add(proxyHeaderTimeout))
		src, ok, err := readProxyHeader(c.r)
		if err != nil {
			s.log.Info("pop3mem: PROXY header refused; closing", "peer", c.client, "err", err)
			return
		}
		if ok {
			c.client = src
		}
	}
	c.log = s.log.With("client", c.client)
	c.rec = s.addSession(c.client)
	defer s.updateSession(c.rec, func(r *SessionRecord) { r.Ended = true })
	c.log.Debug("pop3mem: connection")

	if err := c.reply("+OK " + s.opts.Hostname + " POP3 ready."); err != nil {
		return
	}
	for {
		line, err := c.readLine()
		if errors.Is(err, errLineTooLong) {
			if err := c.reply(replyLineTooLong); err != nil {
				return
			}
			continue
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.log.Debug("pop3mem: idle timeout")
				c.w.Reset(c.nc)
				c.nc.SetWriteDeadline(time.Now().Add(time.Second))
				c.w.WriteString("-ERR Disconnected for inactivity.\r\n")
				c.w.Flush()
			}
			return
		}
		quit, err := c.command(line)
		if err != nil {
			c.log.Debug("pop3mem: connection ended", "err", err)
			return
		}
		if quit {
			return
		}
	}
}

// addrPortOf returns a TCP address as a netip.AddrPort (IPv4-mapped
// addresses unmapped), or the zero value for other kinds of address.
func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap
		}
	}
	return netip.AddrPort{}
}

// readLine reads one line within the idle timeout and returns it without
// its line end (CRLF, or a bare LF). A line longer than maxLine is consumed
// in full and reported as errLineTooLong.
func (c *session) readLine() (string, error) {
	if err := c.nc.SetReadDeadline(time.Now().Add(c.srv.idle)); err != nil {
		return "", fmt.Errorf("setting read deadline: %w", err)
	}
	tooLong := false
	for {
		frag, err := c.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			tooLong = true
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading command: %w", err)
		}
		frag = bytes.TrimSuffix(frag[:len(frag)-1], []byte("\r"))
		if tooLong || len(frag) > maxLine {
			return "", errLineTooLong
		}
		return string(frag), nil
	}
}

// reply writes one reply line, adding CRLF, and flushes.
func (c *session) reply(line string) error {
	c.startWrite()
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	return c.flush()
}

// startWrite sets the write deadline for a reply.
func (c *session) startWrite() {
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.idle))
}

// flush sends buffered output.
func (c *session) flush() error {
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("writing reply: %w", err)
	}
	return nil
}

// multi writes "+OK first" (or "+OK" if first is empty), the lines, and
// the terminating ".", then flushes. Lines must not start with ".".
func (c *session) multi(first string, lines []string) error {
	c.startWrite()
	c.w.WriteString("+OK")
	if first != "" {
		c.w.WriteString(" " + first)
	}
	c.w.WriteString("\r\n")
	for _, l := range lines {
		c.w.WriteString(l)
		c.w.WriteString("\r\n")
	}
	c.w.WriteString(".\r\n")
	return c.flush()
}

// command runs one command line. quit reports that the session is over.
func (c *session) command(line string) (quit bool, err error) {
	if strings.IndexByte(line, 0) >= 0 {
		return false, c.reply("-ERR NUL bytes are not allowed in commands.")
	}
	name, arg, _ := strings.Cut(line, " ")
	name = strings.ToUpper(name)
	if c.user == "" {
		return c.authorization(name, arg)
	}
	return c.transaction(name, arg)
}

// authorization handles a command in the AUTHORIZATION state.
func (c *session) authorization(name, arg string) (bool, error) {
	switch name {
	case "CAPA":
		return false, c.capa()
	case "QUIT":
		c.reply(replyLogout)
		return true, nil
	case "STLS":
		return false, c.stls()
	case "USER":
		if !c.plaintextAllowed() {
			return false, c.reply(replyPlaintextDisabled)
		}
		if arg == "" {
			return false, c.reply("-ERR No username given.")
		}
		c.pendingUser, c.hasUser = arg, true
		return false, c.reply("+OK")
	case "PASS":
		if !c.plaintextAllowed() {
			return false, c.reply(replyPlaintextDisabled)
		}
		if !c.hasUser {
			return false, c.reply("-ERR No username given.")
		}
		user := c.pendingUser
		c.pendingUser, c.hasUser = "", false
		return false, c.login(user, arg, "USER")
	case "AUTH":
		c.pendingUser, c.hasUser = "", false
		return false, c.auth(arg)
	case "APOP":
		return false, c.reply("-ERR APOP not enabled.")
	case "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET":
		return false, c.reply("-ERR Command not valid before login.")
	}
	return false, c.reply("-ERR Unknown command.")
}

// plaintextAllowed reports whether passwords may be sent now.
func (c *session) plaintextAllowed() bool {
	return c.tls || c.srv.opts.AllowPlaintextAuth
}

// mechanisms returns the SASL mechanisms usable now.
func (c *session) mechanisms() []string {
	if !c.plaintextAllowed() {
		return nil
	}
	return []string{"PLAIN", "LOGIN"}
}

// capa answers CAPA (RFC 2449). Before login it lists STLS while TLS is
// available but not active and, like Dovecot, USER and the SASL mechanisms
// only where they may be used.
func (c *session) capa() error {
	caps := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"}
	if c.user == "" {
		if c.srv.opts.TLS != nil && !c.tls {
			caps = append(caps, "STLS")
		}
		if c.plaintextAllowed() {
			caps = append(caps, "USER")
		}
		caps = append(caps, strings.TrimSpace("SASL "+strings.Join(c.mechanisms(), " ")))
	}
	return c.multi("Capability list follows", caps)
}

// stls answers STLS (RFC 2595) and performs the TLS handshake.
func (c *session) stls() error {
	switch {
	case c.srv.opts.TLS == nil:
		return c.reply("-ERR TLS support isn't enabled.")
	case c.tls:
		return c.reply("-ERR TLS is already active.")
	}
	if err := c.reply("+OK Begin TLS negotiation now."); err != nil {
		return err
	}
	// Anything the client sent after STLS before the handshake is
	// discarded with the old reader (no command injection, RFC 2595 §3.1
	// / CVE-2011-0411).
	tc := tls.Server(c.raw, c.srv.opts.TLS)
	tc.SetDeadline(time.Now().Add(min(c.srv.idle, maxHandshakeTimeout)))
	if err := tc.Handshake(); err != nil {
		c.log.Info("pop3mem: TLS handshake failed", "err", err)
		return fmt.Errorf("TLS handshake: %w", err)
	}
	tc.SetDeadline(time.Time{})
	c.nc = tc
	c.r.Reset(tc)
	c.w.Reset(tc)
	c.tls = true
	c.pendingUser, c.hasUser = "", false
	c.srv.updateSession(c.rec, func(r *SessionRecord) { r.TLS = true })
	return nil
}

// readResponse reads a SASL client response line; cancelled reports "*".
// An over-long line ends the exchange with "-ERR Line too long".
func (c *session) readResponse() (resp string, cancelled bool, err error) {
	line, err := c.readLine()
	if errors.Is(err, errLineTooLong) {
		return "", true, c.reply(replyLineTooLong)
	}
	if err != nil {
		return "", false, err
	}
	if line == "*" {
		return "", true, c.reply("-ERR Authentication aborted by client.")
	}
	return line, false, nil
}

// decodeResponse decodes a base64 SASL response; "=" is the empty one.
func decodeResponse(s string) ([]byte, error) {
	if s == "=" {
		return nil, nil
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decoding SASL response: %w", err)
	}
	return b, nil
}

// auth runs AUTH (RFC 5034).
func (c *session) auth(arg string) error {
	if arg == "" {
		// Pre-RFC 5034 mechanism discovery, as Dovecot answers it.
		return c.multi("", c.mechanisms())
	}
	mech, ir, _ := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	if mech != "PLAIN" && mech != "LOGIN" {
		return c.reply("-ERR Unsupported authentication mechanism.")
	}
	if !c.plaintextAllowed() {
		return c.reply(replyPlaintextDisabled)
	}
	// next returns the initial response, if any, or else the answer to
	// the challenge.
	next := func(challenge string) (resp string, stop bool, err error) {
		if ir != "" {
			resp, ir = ir, ""
			return resp, false, nil
		}
		if err := c.reply("+ " + challenge); err != nil {
			return "", true, err
		}
		resp, stop, err = c.readResponse()
		return resp, stop || err != nil, err
	}
	invalid := func() error { return c.reply("-ERR Invalid base64 data in SASL response.") }

	switch mech {
	case "PLAIN":
		resp, stop, err := next("")
		if stop {
			return err
		}
		dec, err := decodeResponse(resp)
		if err != nil {
			return invalid()
		}
		parts := bytes.Split(dec, []byte{0})
		if len(parts) != 3 {
			c.record(LoginRecord{Mech: mech})
			return c.reply(replyAuthFailed)
		}
		authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
		if authz != "" && !strings.EqualFold(authz, user) {
			// No proxy or master users here.
			c.record(LoginRecord{User: user, Mech: mech})
			return c.reply(replyAuthFailed)
		}
		return c.login(user, pass, mech)
	default: // LOGIN
		resp, stop, err := next("VXNlcm5hbWU6") // "Username:"
		if stop {
			return err
		}
		user, err := decodeResponse(resp)
		if err != nil {
			return invalid()
		}
		resp, stop, err = next("UGFzc3dvcmQ6") // "Password:"
		if stop {
			return err
		}
		pass, err := decodeResponse(resp)
		if err != nil {
			return invalid()
		}
		return c.login(string(user), string(pass), mech)
	}
}

// record stores a failed attempt that never reached a password check.
func (c *session) record(r LoginRecord) {
	r.Client, r.TLS = c.client, c.tls
	c.srv.recordLogin(r)
	c.log.Info("pop3mem: login failed", "user", r.User, "mech", r.Mech)
}

// login checks credentials and enters the TRANSACTION state.
func (c *session) login(user, pass, mech string) error {
	msgs, ok := c.srv.authenticate(LoginRecord{User: user, Client: c.client, Mech: mech, TLS: c.tls}, pass)
	if !ok {
		c.log.Info("pop3mem: login failed", "user", user, "mech", mech)
		return c.reply(replyAuthFailed)
	}
	c.log.Info("pop3mem: login", "user", user, "mech", mech, "tls", c.tls)
	c.user = user
	c.msgs = msgs
	c.deleted = make([]bool, len(msgs))
	c.srv.updateSession(c.rec, func(r *SessionRecord) { r.User = user })
	return c.reply(replyLoggedIn)
}

// transaction handles a command in the TRANSACTION state.
func (c *session) transaction(name, arg string) (bool, error) {
	switch name {
	case "CAPA":
		return false, c.capa()
	case "QUIT":
		return true, c.quit()
	case "NOOP":
		return false, c.reply("+OK")
	case "STAT":
		n, size := c.stat()
		return false, c.reply(fmt.Sprintf("+OK %d %d", n, size))
	case "RSET":
		clear(c.deleted)
		n, size := c.stat()
		return false, c.reply(fmt.Sprintf("+OK maildrop has %d messages (%d octets)", n, size))
	case "LIST", "UIDL":
		return false, c.listing(name, arg)
	case "RETR", "DELE":
		i, bad := c.msgNum(arg)
		if bad != "" {
			return false, c.reply(bad)
		}
		if name == "DELE" {
			c.deleted[i] = true
			return false, c.reply("+OK Marked to be deleted.")
		}
		data := c.msgs[i].data
		return false, c.sendMessage(fmt.Sprintf("+OK %d octets", len(data)), data)
	case "TOP":
		num, lines, _ := strings.Cut(arg, " ")
		i, bad := c.msgNum(num)
		if bad != "" {
			return false, c.reply(bad)
		}
		n, ok := parseNumber(lines)
		if !ok {
			return false, c.reply(fmt.Sprintf("-ERR Invalid line count: %s", lines))
		}
		return false, c.sendMessage("+OK", top(c.msgs[i].data, n))
	case "USER", "PASS", "AUTH", "APOP", "STLS":
		return false, c.reply("-ERR Already logged in.")
	}
	return false, c.reply("-ERR Unknown command.")
}

// stat counts the messages not marked deleted and their octets.
func (c *session) stat() (n, size int) {
	for i, m := range c.msgs {
		if !c.deleted[i] {
			n++
			size += len(m.data)
		}
	}
	return n, size
}

// listing answers LIST and UIDL, with or without a message number.
func (c *session) listing(name, arg string) error {
	item := func(i int) string {
		if name == "LIST" {
			return fmt.Sprintf("%d %d", i+1, len(c.msgs[i].data))
		}
		return fmt.Sprintf("%d %s", i+1, c.msgs[i].uid)
	}
	if arg != "" {
		i, bad := c.msgNum(arg)
		if bad != "" {
			return c.reply(bad)
		}
		return c.reply("+OK " + item(i))
	}
	var lines []string
	for i := range c.msgs {
		if !c.deleted[i] {
			lines = append(lines, item(i))
		}
	}
	if name == "LIST" {
		n, size := c.stat()
		return c.multi(fmt.Sprintf("%d messages (%d octets)", n, size), lines)
	}
	return c.multi("", lines)
}

// msgNum parses a message number argument, returning its index or the
// -ERR reply to send.
func (c *session) msgNum(arg string) (int, string) {
	if arg == "" {
		return 0, "-ERR Missing message number."
	}
	if strings.Trim(arg, "0123456789") != "" {
		if num, rest, found := strings.Cut(arg, " "); found && num != "" && strings.Trim(num, "0123456789") == "" {
			return 0, "-ERR Noise after message number: " + rest
		}
		return 0, "-ERR Invalid message number: " + arg
	}
	n, ok := parseNumber(arg)
	if !ok || n == 0 || n > uint64(len(c.msgs)) {
		return 0, fmt.Sprintf("-ERR There's no message %s.", arg)
	}
	i := int(n - 1)
	if c.deleted[i] {
		return 0, "-ERR Message is deleted."
	}
	return i, ""
}

// parseNumber parses a non-negative decimal number, digits only.
func parseNumber(s string) (uint64, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// sendMessage writes the status line, data dot-stuffed, and the
// terminating ".". data ends with CRLF unless it is empty.
func (c *session) sendMessage(status string, data []byte) error {
	c.startWrite()
	c.w.WriteString(status)
	c.w.WriteString("\r\n")
	for len(data) > 0 {
		line := data
		if i := bytes.Index(data, []byte("\r\n")); i >= 0 {
			line = data[:i+2]
		}
		data = data[len(line):]
		if line[0] == '.' {
			c.w.WriteByte('.')
		}
		c.w.Write(line)
	}
	c.w.WriteString(".\r\n")
	return c.flush()
}

// top returns the header of msg, the blank line after it, and the first n
// lines of the body. A message without a blank line is all header.
func top(msg []byte, n uint64) []byte {
	end := len(msg)
	if bytes.HasPrefix(msg, []byte("\r\n")) {
		end = 2
	} else if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		end = i + 4
	}
	for ; n > 0 && end < len(msg); n-- {
		i := bytes.Index(msg[end:], []byte("\r\n"))
		if i < 0 {
			return msg
		}
		end += i + 2
	}
	return msg[:end]
}

// quit enters the UPDATE state: deletions are applied and the session
// ends.
func (c *session) quit() error {
	del := make(map[*message]bool)
	for i, d := range c.deleted {
		if d {
			del[c.msgs[i]] = true
		}
	}
	c.srv.expunge(c.user, del)
	c.log.Info("pop3mem: logout", "user", c.user, "deleted", len(del))
	return c.reply(replyLogout)
}
