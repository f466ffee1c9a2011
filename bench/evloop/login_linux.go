//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"

	"github.com/postern/postern/internal/guard"
	psvc "github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// loginChecks is -login: the IMAP services' sessions do, in the loop's
// own state machine, what postern's do before their relay starts, with
// postern's own intrusion prevention engine:
//
//   - the engine's Accept for the client's address (grant rules, blocks,
//     connections per minute, the session it counts logins on);
//   - the backend connected at once with the PROXY v2 header, its greeting
//     read and its capabilities given to the client in the loop's own
//     greeting;
//   - the client's first line read whole and parsed: tag LOGIN user
//     password, each an atom or a quoted string (anything else is answered
//     BAD: this tool does not take literals or other commands);
//   - the engine's BeginLogin (a blocked address or an attempt over the
//     threshold gets NO and the connection closes), then the credentials
//     sent to the backend as AUTHENTICATE PLAIN with SASL-IR under the
//     client's tag, as postern does;
//   - the backend's tagged answer: OK is the engine's Succeeded, NO its
//     Failed (then the connection closes); the answer goes to the client
//     with what followed it, and the pair is relayed as TCP;
//   - one log line a login, postern's (time, level, msg=login, service,
//     client, account, result), appended to a buffer the loop writes once
//     a batch of events.
//
// Before it relays, a session that reads nothing for checkTimeout is
// closed (deadline_linux.go). It has none of postern's other commands; it
// measures
// what the essential work of a checked login costs when done without
// coroutines, buffered readers or a goroutine's worth of context, next to
// postern's sessions (docs/benchmarks/issue17-round28.md).
type loginChecks struct {
	eng        *guard.Engine
	ctx        context.Context
	log        int  // descriptor the log lines go to
	raw        bool // write them with a raw system call (see newLoginChecks)
	imap, smtp bool // which services are checked (-login, -smtp-checks)
}

// checks is the -login state; nil: off. Atomic, as costs are.
var checks atomic.Pointer[loginChecks]

// newLoginChecks starts postern's engine with the settings of the
// configuration at path, without a store. The log lines go to logFD with
// raw write system calls when it is a pipe or a socket, as postern's log
// writer makes them (internal/logbatch), unless viaRuntime: then, as to a
// regular file, through the runtime's entry for blocking calls, which
// wakes its monitor thread.
func newLoginChecks(ctx context.Context, path string, logFD int, viaRuntime bool) (*loginChecks, error) {
	snap, err := snapshot.Load(ctx, path, time.Now())
	if err != nil {
		return nil, fmt.Errorf("-login: %w", err)
	}
	eng, err := guard.New(ctx, snap.Guard, guard.Options{})
	if err != nil {
		return nil, fmt.Errorf("-login: %w", err)
	}
	var st unix.Stat_t
	raw := !viaRuntime && unix.Fstat(logFD, &st) == nil && (st.Mode&unix.S_IFMT == unix.S_IFIFO || st.Mode&unix.S_IFMT == unix.S_IFSOCK)
	return &loginChecks{eng: eng, ctx: ctx, log: logFD, raw: raw}, nil
}

// The states of a checked session, kept in its client socket.
const (
	stRelay    uint8 = iota // bytes both ways (also every unchecked session)
	stGreeting              // waiting for the backend's greeting
	stLogin                 // waiting for the client's LOGIN
	stAuth                  // waiting for the backend's answer to the credentials
)

// checked is what a checked session keeps until it relays.
type checked struct {
	state    uint8
	smtp     *smtpChecked // an SMTP session (-smtp-checks)
	deadline int64        // the second the session times out in (wheel)
	src      netip.Addr
	gs       *guard.Session
	lg       *guard.Login
	tag      string
	user     string
	saslIR   bool  // the backend offers AUTH=PLAIN with SASL-IR
	co       *coro // -costs stack: the session's coroutine
}

// checksLogin reports whether -login checks svc's sessions.
func (s *service) checksLogin() bool { return s.name == "imap" && !s.http }

// checkedService reports whether ck checks svc's sessions.
func (ck *loginChecks) checkedService(svc *service) bool {
	return ck.imap && svc.checksLogin() || ck.smtp && svc.smtpChecks()
}

// checked returns the checks of s's session; nil: unchecked.
func (s *sock) checked() *checked {
	if s.client {
		return s.chk
	}
	if s.peer != nil {
		return s.peer.chk
	}
	return nil
}

// startChecked opens a checked session for the new client c from src.
func (l *loop) startChecked(c *sock, src netip.AddrPort, ck *loginChecks) {
	if c.svc.smtpChecks() {
		c.chk = &checked{state: stGreeting, src: src.Addr()}
		if !l.startSMTPChecked(c, c.chk, ck) {
			return
		}
	} else {
		gs, _ := ck.eng.Accept(src.Addr(), psvc.IMAP, func() {})
		if gs == nil {
			rawWrite(c.fd, []byte("* BYE Connection refused.\r\n"))
			l.closePair(c)
			return
		}
		c.chk = &checked{state: stGreeting, src: src.Addr(), gs: gs}
	}
	b := l.dial(c)
	if b == nil {
		return
	}
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(c.svc.listen))
	hb, err := h.Format()
	if err != nil {
		l.closePair(c)
		return
	}
	b.out = append(b.out, hb...)
	l.arm(c)
}

// readableChecked reads for a session not relaying yet; s is its client
// or its backend.
func (l *loop) readableChecked(s *sock, k *checked) {
	if costs.stack.Load() {
		l.onCoro(s, k)
		return
	}
	l.readableCheckedNow(s, k)
}

// readableCheckedNow is readableChecked on the loop's own stack.
func (l *loop) readableCheckedNow(s *sock, k *checked) {
	n, e := rawRead(s.fd, l.buf)
	switch {
	case e == unix.EAGAIN:
		return
	case e != 0 || n == 0:
		l.abandon(s, k)
		return
	}
	if s.client {
		l.arm(s)
	} else {
		l.arm(s.peer)
	}
	if k.smtp != nil && s.client && k.smtp.state == smData && len(s.in) == 0 {
		l.smtpData(s, k, l.buf[:n]) // the message goes from the read buffer
		return
	}
	s.in = append(s.in, l.buf[:n]...)
	if k.smtp != nil {
		l.smtpLines(s, k)
		return
	}
	l.lines(s, k)
}

// lines acts on the complete lines s has read, as far as it is s's turn.
func (l *loop) lines(s *sock, k *checked) {
	for {
		i := bytes.IndexByte(s.in, '\n')
		if i < 0 {
			if len(s.in) > 8192 {
				l.abandon(s, k)
			}
			return
		}
		line := bytes.TrimRight(s.in[:i], "\r")
		rest := s.in[i+1:]
		switch {
		case s.client && k.state == stLogin:
			l.clientLine(s, k, line)
			if l.get(s.fd) != s {
				return // closed
			}
			s.in = s.in[:copy(s.in, rest)]
			if k.state != stLogin {
				return
			}
		case !s.client && k.state == stGreeting:
			l.backendGreeting(s, k, line)
			s.in = s.in[:copy(s.in, rest)]
			if k.state != stLogin {
				return
			}
			if c := s.peer; len(c.in) > 0 { // the client did not wait for the greeting
				l.lines(c, k)
			}
			return
		case !s.client && k.state == stAuth:
			if bytes.HasPrefix(line, []byte("* ")) { // untagged: the client's too
				out := append(append(l.scratch[:0], line...), "\r\n"...)
				l.scratch = out[:0]
				s.in = s.in[:copy(s.in, rest)]
				if !l.send(s.peer, out) {
					return
				}
				continue
			}
			l.backendAnswer(s, k, line, rest)
			return
		default:
			// The other side's turn: keep the bytes for later.
			return
		}
	}
}

// backendGreeting takes the backend's greeting and greets the client.
func (l *loop) backendGreeting(b *sock, k *checked, line []byte) {
	text, ok := bytes.CutPrefix(line, []byte("* OK [CAPABILITY "))
	end := bytes.IndexByte(text, ']')
	if !ok || end < 0 {
		l.abandon(b, k)
		return
	}
	caps := text[:end]
	for c := range bytes.FieldsSeq(caps) {
		if bytes.Equal(c, []byte("SASL-IR")) {
			k.saslIR = true
		}
	}
	if !k.saslIR || !bytes.Contains(caps, []byte("AUTH=PLAIN")) {
		l.abandon(b, k)
		return
	}
	c := b.peer
	g := append(append(append(l.scratch[:0], "* OK [CAPABILITY "...), caps...), "] postern ready.\r\n"...)
	l.scratch = g[:0]
	k.state = stLogin
	if l.send(c, g) {
		l.setMask(c, c.mask|unix.EPOLLIN)
	}
}

// clientLine takes the client's command.
func (l *loop) clientLine(c *sock, k *checked, line []byte) {
	tag, cmd, user, pass, ok := parseLogin(line)
	if !ok || !bytes.EqualFold(cmd, []byte("LOGIN")) {
		t := "*"
		if tag != nil {
			t = string(tag)
		}
		l.send(c, []byte(t+" BAD Error in IMAP command.\r\n"))
		return
	}
	k.tag, k.user = string(tag), user
	lg, _ := k.gs.BeginLogin(checks.Load().ctx, user)
	if lg == nil {
		l.send(c, []byte(k.tag+" NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"))
		l.abandon(c, k)
		return
	}
	k.lg = lg
	k.state = stAuth
	l.setMask(c, c.mask&^unix.EPOLLIN)
	blob := make([]byte, 0, 2*len(user)+len(pass)+2)
	blob = append(append(append(append(blob, 0), user...), 0), pass...)
	cmdline := make([]byte, 0, len(k.tag)+24+base64.StdEncoding.EncodedLen(len(blob)))
	cmdline = append(append(cmdline, k.tag...), " AUTHENTICATE PLAIN "...)
	cmdline = base64.StdEncoding.AppendEncode(cmdline, blob)
	cmdline = append(cmdline, "\r\n"...)
	l.send(c.peer, cmdline)
}

// backendAnswer takes the backend's tagged answer to the credentials.
func (l *loop) backendAnswer(b *sock, k *checked, line, rest []byte) {
	c := b.peer
	t, r, _ := bytes.Cut(line, []byte(" "))
	if string(t) != k.tag {
		l.abandon(b, k)
		return
	}
	if !bytes.HasPrefix(r, []byte("OK")) {
		k.lg.Failed(0)
		l.logLogin(k, "failed")
		l.send(c, []byte(k.tag+" NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"))
		l.abandon(b, k)
		return
	}
	k.lg.Succeeded()
	l.logLogin(k, "ok")
	out := append(append(l.scratch[:0], line...), "\r\n"...)
	out = append(out, rest...)
	l.scratch = out[:0]
	b.in = nil
	k.state = stRelay
	if !l.send(c, out) {
		return
	}
	l.setMask(c, c.mask|unix.EPOLLIN)
	if len(c.in) > 0 { // what the client sent after its LOGIN
		p := c.in
		c.in = nil
		l.send(b, p)
	}
}

// abandon ends a session that fails before it relays.
func (l *loop) abandon(s *sock, k *checked) {
	if k.lg != nil && k.state == stAuth {
		k.lg.Failed(0) // the credentials were sent: count them
	}
	l.closePair(s)
}

// endChecked closes a checked session's engine session; c is its client.
func endChecked(c *sock) {
	if c.chk != nil && c.chk.gs != nil {
		c.chk.gs.Close()
		c.chk.gs = nil
	}
}

// appendLogHead appends the start of an info line as postern's text
// log writes it: the time, the level, msg, the service and the client.
func appendLogHead(b []byte, msg, service string, client netip.Addr) []byte {
	b = append(b, "time="...)
	b = time.Now().UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(append(append(append(b, " level=INFO msg="...), msg...), " service="...), service...)
	return client.AppendTo(append(b, " client="...))
}

// logLogin appends the login's line to the loop's log buffer.
func (l *loop) logLogin(k *checked, result string) {
	b := appendLogHead(l.logBuf, "login", "imap", k.src)
	b = append(b, " account="...)
	b = appendValue(b, k.user)
	b = append(b, " result="...)
	b = append(append(b, result...), '\n')
	l.logBuf = b
}

// flushLog writes the batch's log lines.
func (l *loop) flushLog() {
	if len(l.logBuf) == 0 {
		return
	}
	if ck := checks.Load(); ck != nil {
		if ck.raw {
			rawWrite(int32(ck.log), l.logBuf) // a pipe: postern's writer checks it polls writable first
		} else {
			unix.Write(ck.log, l.logBuf)
		}
	}
	l.logBuf = l.logBuf[:0]
}

// appendValue appends s as slog's text handler would: bare when it needs
// no quoting.
func appendValue(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == '"' || c == '=' || c >= 0x7f {
			return strconv.AppendQuote(b, s)
		}
	}
	if s == "" {
		return append(b, `""`...)
	}
	return append(b, s...)
}

// parseLogin splits an IMAP command line: tag SP command [SP user SP
// password], user and password each an atom or a quoted string.
func parseLogin(line []byte) (tag, cmd []byte, user, pass string, ok bool) {
	tag, rest, found := bytes.Cut(line, []byte(" "))
	if !found || len(tag) == 0 {
		return nil, nil, "", "", false
	}
	cmd, rest, found = bytes.Cut(rest, []byte(" "))
	if !found {
		return tag, cmd, "", "", false
	}
	user, rest, ok = astring(rest)
	if !ok || len(rest) == 0 || rest[0] != ' ' {
		return tag, cmd, "", "", false
	}
	pass, rest, ok = astring(rest[1:])
	return tag, cmd, user, pass, ok && len(rest) == 0
}

// astring reads an atom or a quoted string from the front of p.
func astring(p []byte) (string, []byte, bool) {
	if len(p) == 0 {
		return "", p, false
	}
	if p[0] != '"' {
		i := bytes.IndexByte(p, ' ')
		if i < 0 {
			i = len(p)
		}
		for _, c := range p[:i] {
			if c < 0x21 || c >= 0x7f || bytes.IndexByte([]byte(`(){%*"\]`), c) >= 0 {
				return "", p, false
			}
		}
		return string(p[:i]), p[i:], i > 0
	}
	var out []byte
	for i := 1; i < len(p); i++ {
		switch c := p[i]; c {
		case '\\':
			if i+1 == len(p) || (p[i+1] != '\\' && p[i+1] != '"') {
				return "", p, false
			}
			i++
			out = append(out, p[i])
		case '"':
			return string(out), p[i+1:], true
		case 0, '\r', '\n':
			return "", p, false
		default:
			out = append(out, c)
		}
	}
	return "", p, false
}

// startLoginChecks turns -login (imap) and -smtp-checks (smtp) on with
// the configuration at path (-login-log-runtime: logViaRuntime); its
// engine closes when ctx ends.
func startLoginChecks(ctx context.Context, path string, imap, smtp, logViaRuntime bool) error {
	ck, err := newLoginChecks(ctx, path, 2, logViaRuntime)
	if err != nil {
		return err
	}
	ck.imap, ck.smtp = imap, smtp
	checks.Store(ck)
	context.AfterFunc(ctx, func() { ck.eng.Close() })
	return nil
}
