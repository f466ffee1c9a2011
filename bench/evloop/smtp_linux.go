//go:build linux

package main

import (
	"bytes"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/mailaddr"
	psvc "github.com/postern/postern/internal/service"
)

// With -smtp-checks the smtp service's sessions are relayed command by
// command as postern's are, in the loop's own state machine, with
// postern's engine and its address parser:
//
//   - the engine's Accept for the client (and Close at the end);
//   - the backend connected at once with the PROXY v2 header; each of its
//     replies read whole (every line of a multi-line one) before it goes
//     to the client;
//   - EHLO's reply filtered as postern filters it (the first line and the
//     extensions postern passes; AUTH and STARTTLS dropped);
//   - MAIL and RCPT parsed with internal/mailaddr and sent to the backend
//     in their canonical form; MAIL is the engine's Recheck and, accepted,
//     its Sender; a recipient outside local_domains is refused with 554
//     (the engine's RelayDenied), any other is the engine's Recipient
//     before the backend is asked, and a 550 from the backend its
//     UnknownRecipient;
//   - DATA's message relayed as it comes, its end found and its size
//     counted on the way; the final reply is the engine's MessageSize and
//     MessageDone and one log line, postern's (sender, recipients, size,
//     reply, status, text, duration);
//   - any other command relayed as it is (RSET the engine's Rset).
//
// Its sessions have -login's deadlines; it has no STARTTLS, AUTH, BDAT or
// PIPELINING, no content rules, no DNSBL and no size limit of its own:
// like -login, it measures
// what the checks cost without postern's session layers.

// The states of a checked SMTP session.
const (
	smGreeting uint8 = iota + 1 // waiting for the backend's greeting
	smCommand                   // waiting for the client's next command
	smReply                     // waiting for the backend's reply to it
	smData                      // relaying the message
	smFinal                     // waiting for the message's final reply
	smClosing                   // QUIT answered: relaying to the end
)

// smtpChecked is what a checked SMTP session keeps.
type smtpChecked struct {
	state   uint8
	verb    string // the command whose reply is awaited
	arg     string // its address (MAIL, RCPT)
	lines   [][]byte
	from    string
	rcpts   int
	size    int64
	tail    [4]byte // the message's last bytes before this chunk
	ntail   int
	txStart time.Time
	domains map[string]bool
}

// smtpChecks reports whether -smtp-checks checks svc's sessions.
func (s *service) smtpChecks() bool { return s.name == "smtp" && !s.http }

// startSMTPChecked opens a checked SMTP session for the new client c.
func (l *loop) startSMTPChecked(c *sock, k *checked, ck *loginChecks) bool {
	gs, _ := ck.eng.Accept(k.src, psvc.SMTP, func() {})
	if gs == nil {
		rawWrite(c.fd, []byte("421 4.7.0 postern.bench.invalid Service not available\r\n"))
		l.closePair(c)
		return false
	}
	k.gs = gs
	k.smtp = &smtpChecked{state: smGreeting, domains: ck.eng.Settings().LocalDomains}
	return true
}

// smtpLines acts on what s has read in a checked SMTP session.
func (l *loop) smtpLines(s *sock, k *checked) {
	m := k.smtp
	for {
		if s.client && m.state == smData {
			p := s.in
			s.in = s.in[:0]
			l.smtpData(s, k, p)
			return
		}
		i := bytes.IndexByte(s.in, '\n')
		if i < 0 {
			if len(s.in) > 8192 {
				l.closePair(s)
			}
			return
		}
		line := s.in[:i+1]
		switch {
		case !s.client && (m.state == smGreeting || m.state == smReply || m.state == smFinal):
			m.lines = append(m.lines, append([]byte(nil), line...))
			more := len(line) >= 4 && line[3] == '-'
			s.in = s.in[:copy(s.in, s.in[i+1:])] // line is overwritten
			if more {
				continue // more lines of the reply
			}
			l.smtpReply(s.peer, k)
			if l.get(s.fd) != s {
				return
			}
		case s.client && m.state == smCommand:
			cmd := string(bytes.TrimRight(line, "\r\n"))
			s.in = s.in[:copy(s.in, s.in[i+1:])]
			l.smtpCommand(s, k, cmd)
			if l.get(s.fd) != s || m.state != smCommand {
				return
			}
		default:
			return // the other side's turn
		}
	}
}

// smtpCommand takes one command of the client c.
func (l *loop) smtpCommand(c *sock, k *checked, cmd string) {
	m := k.smtp
	verb, args, _ := strings.Cut(cmd, " ")
	verb = strings.ToUpper(verb)
	line := cmd
	switch verb {
	case "MAIL":
		if d := k.gs.Recheck(); d.Action == guard.Close {
			l.send(c, []byte("421 4.7.0 Closing connection\r\n"))
			l.closePair(c)
			return
		}
		a, err := mailaddr.ParseMailArg(args)
		if err != nil {
			l.send(c, []byte("501 5.1.7 Bad sender address syntax\r\n"))
			return
		}
		m.arg = a.Path.Address()
		line = "MAIL " + a.Canonical()
	case "RCPT":
		a, err := mailaddr.ParseRcptArg(args)
		if err != nil {
			l.send(c, []byte("501 5.1.3 Bad recipient address syntax\r\n"))
			return
		}
		p, to := a.Path, a.Path.Address()
		if len(m.domains) > 0 && !p.InDomains(m.domains) {
			k.gs.RelayDenied(to)
			l.send(c, []byte("554 5.7.1 "+p.Canonical()+": Relay access denied\r\n"))
			return
		}
		if d := k.gs.Recipient(to); d.Reject {
			l.send(c, []byte("550 5.1.1 "+p.Canonical()+": Recipient address rejected\r\n"))
			return
		}
		m.arg = to
		line = "RCPT " + a.Canonical()
	case "RSET":
		k.gs.Rset()
	case "EHLO", "HELO", "DATA", "QUIT", "NOOP":
	default:
		l.send(c, []byte("502 5.5.2 Error: command not recognized\r\n"))
		return
	}
	m.verb = verb
	m.state = smReply
	l.setMask(c, c.mask&^unix.EPOLLIN)
	l.send(c.peer, []byte(line+"\r\n"))
}

// smtpReply takes a whole reply of the backend (m.lines) and passes it to
// the client c.
func (l *loop) smtpReply(c *sock, k *checked) {
	m := k.smtp
	lines := m.lines
	m.lines = m.lines[:0]
	code, _ := strconv.Atoi(string(lines[0][:min(3, len(lines[0]))]))
	out := l.scratch[:0]
	switch {
	case m.state == smGreeting:
		m.state = smCommand
	case m.state == smFinal:
		k.gs.MessageSize(m.size)
		k.gs.MessageDone()
		l.logMessage(k, lines[len(lines)-1])
		m.state, m.from, m.rcpts = smCommand, "", 0
	case m.verb == "EHLO" && code == 250:
		lines = filterEHLO(lines)
		m.state = smCommand
	case m.verb == "MAIL":
		if code == 250 {
			m.from, m.rcpts, m.txStart = m.arg, 0, time.Now()
			k.gs.Sender(m.arg)
		}
		m.state = smCommand
	case m.verb == "RCPT":
		switch code {
		case 250, 251:
			m.rcpts++
		case 550:
			k.gs.UnknownRecipient(m.arg)
		}
		m.state = smCommand
	case m.verb == "DATA" && code == 354:
		m.state, m.size, m.ntail = smData, 0, 0
	case m.verb == "QUIT":
		m.state = smClosing
	default:
		m.state = smCommand
	}
	for _, ln := range lines {
		out = append(out, ln...)
	}
	l.scratch = out[:0]
	if !l.send(c, out) {
		return
	}
	if m.state == smClosing {
		k.state = stRelay // the ends are relayed
	}
	l.setMask(c, c.mask|unix.EPOLLIN)
	if len(c.in) > 0 && m.state != smClosing {
		l.smtpLines(c, k)
	}
}

// filterEHLO keeps the reply's first line and the extensions postern
// passes, with the right continuation marks.
func filterEHLO(lines [][]byte) [][]byte {
	out := lines[:1]
	for _, ln := range lines[1:] {
		if len(ln) <= 4 {
			continue
		}
		name, _, _ := bytes.Cut(bytes.TrimRight(ln[4:], "\r\n"), []byte(" "))
		if passedEHLO[strings.ToUpper(string(name))] {
			out = append(out, ln)
		}
	}
	for i, ln := range out {
		if i < len(out)-1 {
			ln[3] = '-'
		} else {
			ln[3] = ' '
		}
	}
	return out
}

// passedEHLO are the extensions postern relays (internal/smtpproxy).
var passedEHLO = map[string]bool{
	"SIZE": true, "PIPELINING": true, "8BITMIME": true, "SMTPUTF8": true, "CHUNKING": true,
	"BINARYMIME": true, "DSN": true, "ENHANCEDSTATUSCODES": true, "REQUIRETLS": true,
	"DELIVERBY": true, "MT-PRIORITY": true, "FUTURERELEASE": true, "LIMITS": true,
}

// smtpData relays p, what the client c sent of its message, up to and
// including its end; what follows the end is appended to c.in. p may be
// c.in's storage (c.in is then empty) or the loop's read buffer.
func (l *loop) smtpData(c *sock, k *checked, p []byte) {
	m := k.smtp
	end := -1
	// The end is CR LF . CR LF, possibly across chunks: look at the
	// message's last four bytes before this chunk and the chunk.
	var win [8]byte
	n := copy(win[:], m.tail[:m.ntail])
	n += copy(win[n:], p[:min(len(p), 8-n)])
	if i := bytes.Index(win[:n], []byte("\r\n.\r\n")); i >= 0 && i < m.ntail {
		end = i + 5 - m.ntail
	} else if i := bytes.Index(p, []byte("\r\n.\r\n")); i >= 0 {
		end = i + 5
	}
	chunk := p
	if end >= 0 {
		chunk = p[:end]
	}
	m.size += int64(len(chunk))
	if t := chunk; len(t) >= 4 {
		m.ntail = copy(m.tail[:], t[len(t)-4:])
	} else {
		all := append(m.tail[:m.ntail:m.ntail], t...)
		m.ntail = copy(m.tail[:], all[max(0, len(all)-4):])
	}
	if !l.send(c.peer, chunk) {
		return
	}
	if end < 0 {
		return
	}
	c.in = append(c.in[:0], p[end:]...) // copy moves it down when p is c.in's storage
	m.state = smFinal
	l.setMask(c, c.mask&^unix.EPOLLIN)
}

// logMessage appends the message's line to the loop's log buffer.
func (l *loop) logMessage(k *checked, final []byte) {
	m := k.smtp
	final = bytes.TrimRight(final, "\r\n")
	reply, text, _ := bytes.Cut(final, []byte(" "))
	status := []byte{}
	if s, t, ok := bytes.Cut(text, []byte(" ")); ok && len(s) > 0 && s[0] >= '2' && s[0] <= '5' && bytes.Count(s, []byte(".")) == 2 {
		status, text = s, t
	}
	b := appendLogHead(l.logBuf, "message", "smtp", k.src)
	b = append(b, " sender="...)
	b = appendValue(b, m.from)
	b = append(b, " recipients="...)
	b = strconv.AppendInt(b, int64(m.rcpts), 10)
	b = append(b, " size="...)
	b = strconv.AppendInt(b, m.size, 10)
	b = append(b, " reply="...)
	b = append(b, reply...)
	b = append(b, " status="...)
	b = append(b, status...)
	b = append(b, " text="...)
	b = appendValue(b, string(text))
	b = append(b, " duration="...)
	b = append(b, time.Since(m.txStart).String()...)
	l.logBuf = append(b, '\n')
}
