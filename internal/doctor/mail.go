package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/relay"
)

// maxLines bounds the lines read for one reply.
const maxLines = 200

// lineConn reads and writes CRLF lines under the check's deadline.
type lineConn struct {
	c net.Conn
	r *bufio.Reader
}

func newLineConn(ctx context.Context, c net.Conn) *lineConn {
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	return &lineConn{c: c, r: bufio.NewReaderSize(c, 4096)}
}

// line reads one line without its end.
func (l *lineConn) line() (string, error) {
	b, err := l.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", errors.New("line longer than 4096 bytes")
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func (l *lineConn) send(s string) error {
	if _, err := l.c.Write([]byte(s + "\r\n")); err != nil {
		verb, _, _ := strings.Cut(s, " ")
		return fmt.Errorf("writing %s: %w", verb, err)
	}
	return nil
}

// reply reads an SMTP reply: its code, the text of each line.
func (l *lineConn) reply() (int, []string, error) {
	var texts []string
	for range maxLines {
		s, err := l.line()
		if err != nil {
			return 0, texts, err
		}
		if len(s) < 3 {
			return 0, texts, fmt.Errorf("not an SMTP reply: %q", s)
		}
		code, err := strconv.Atoi(s[:3])
		if err != nil {
			return 0, texts, fmt.Errorf("not an SMTP reply: %q", s)
		}
		texts = append(texts, strings.TrimSpace(s[min(4, len(s)):]))
		if len(s) == 3 || s[3] != '-' {
			return code, texts, nil
		}
	}
	return 0, texts, errors.New("SMTP reply of more than 200 lines")
}

// firstRead waits for the first byte of the greeting and, when none comes,
// returns the problem in plain words.
func firstRead(ctx context.Context, l *lineConn, hop relay.Hop) (problem string, err error) {
	if _, err := l.r.Peek(1); err != nil {
		if errors.Is(err, net.ErrClosed) && ctx.Err() != nil {
			// The check's time ran out: closed by the context.
			err = fmt.Errorf("%w (%w)", os.ErrDeadlineExceeded, ctx.Err())
		}
		var ae *relay.AdviceError
		if e := hop.ExplainFirstRead(err); errors.As(e, &ae) {
			return ae.Advice, err
		}
		if relay.TimedOut(err) {
			return fmt.Sprintf("%s at %s sent no greeting in time", hop.Server(), hop.Addr), err
		}
		return fmt.Sprintf("%s at %s sent no greeting", hop.Server(), hop.Addr), err
	}
	return "", nil
}

// dial connects as the gateway does; conn is nil when r failed.
func dial(ctx context.Context, b Backend, o Options, r *Result, example string) (*lineConn, relay.Hop, func(), bool) {
	conn, err := b.Dialer.Dial(ctx, o.Client, netip.AddrPort{})
	if err != nil {
		hop := b.Hop(nil)
		*r = r.fail(dialProblem(hop, example, err), err)
		return nil, hop, nil, false
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	l := newLineConn(ctx, conn)
	hop := b.Hop(conn)
	if p, err := firstRead(ctx, l, hop); p != "" {
		stop()
		conn.Close()
		*r = r.fail(p, err)
		return nil, hop, nil, false
	}
	return l, hop, func() { stop(); l.c.Close() }, true
}

// checkSMTP talks to an SMTP backend as the SMTP gateway does: PROXY
// header or XCLIENT, STARTTLS or implicit TLS, and EHLO.
func checkSMTP(ctx context.Context, name string, svc *config.Service, o Options) Result {
	r := Result{Check: name, Server: "Postfix", Target: svc.Backend.Value}
	b, err := BackendFor(name, svc)
	if err != nil {
		return r.fail(err.Error(), nil)
	}
	r.Via = b.via()
	l, hop, done, ok := dial(ctx, b, o, &r, relay.ExamplePostfixMaster)
	if !ok {
		return r
	}
	defer done()
	code, text, err := l.reply()
	if err != nil {
		return r.fail(fmt.Sprintf("Postfix at %s sent no complete greeting", hop.Addr), err)
	}
	r.Greeting = fmt.Sprintf("%d %s", code, strings.Join(text, " "))
	if code != 220 {
		if a := hop.ExplainGreeting(code, strings.Join(text, " ")); a != "" {
			return r.fail(a, nil)
		}
		return r.fail(fmt.Sprintf("Postfix at %s greets with an error: %q", hop.Addr, r.Greeting), nil)
	}
	ehlo := func() ([]string, string) {
		if err := l.send("EHLO " + b.Hostname); err != nil {
			return nil, err.Error()
		}
		code, text, err := l.reply()
		switch {
		case err != nil && hop.SendsHeader() && relay.ClosedEarly(err):
			return nil, hop.HeaderUnexpected()
		case err != nil:
			return nil, fmt.Sprintf("Postfix at %s did not answer EHLO: %v", hop.Addr, err)
		case hop.SendsHeader() && (code == 500 || code == 502):
			return nil, hop.HeaderUnexpected() + fmt.Sprintf(" (EHLO answered %d %s)", code, strings.Join(text, " "))
		case code != 250:
			return nil, fmt.Sprintf("Postfix at %s refused EHLO: %d %s", hop.Addr, code, strings.Join(text, " "))
		}
		return text[1:], ""
	}
	caps, p := ehlo()
	if p != "" {
		return r.fail(p, nil)
	}
	if b.TLS == config.TLSStartTLS {
		if !hasWord(caps, "STARTTLS") {
			return r.fail(fmt.Sprintf("Postfix at %s does not offer STARTTLS but services.%s has `backend_tls: starttls`: set `smtpd_tls_security_level = may` on that port, or `backend_tls: none`", hop.Addr, name), nil)
		}
		if err := l.send("STARTTLS"); err != nil {
			return r.fail("STARTTLS failed", err)
		}
		if code, text, err := l.reply(); err != nil || code != 220 {
			return r.fail(fmt.Sprintf("Postfix at %s refused STARTTLS: %d %s", hop.Addr, code, strings.Join(text, " ")), err)
		}
		tc := tls.Client(l.c, b.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return r.fail(fmt.Sprintf("TLS with Postfix at %s after STARTTLS failed (backend_tls_verify: false accepts a self-signed certificate)", hop.Addr), err)
		}
		l.c, l.r = tc, bufio.NewReaderSize(tc, 4096)
		if caps, p = ehlo(); p != "" {
			return r.fail(p, nil)
		}
		r.Notes = append(r.Notes, "STARTTLS to the backend works")
	}
	if b.Proxy == config.ProxyXClient {
		if !hasWord(caps, "XCLIENT") {
			from := "postern's address"
			if hop.From.IsValid() {
				from = hop.From.String()
			}
			return r.fail(fmt.Sprintf("Postfix at %s does not offer XCLIENT to postern: set `smtpd_authorized_xclient_hosts = %s` on that port (see %s), or use `backend_proxy: v2`", hop.Addr, from, relay.ExamplePostfixMaster), nil)
		}
		addr := o.Client.Addr().String()
		if o.Client.Addr().Is6() {
			addr = "IPV6:" + addr
		}
		if err := l.send(fmt.Sprintf("XCLIENT ADDR=%s PORT=%d NAME=[UNAVAILABLE]", addr, o.Client.Port())); err != nil {
			return r.fail("XCLIENT failed", err)
		}
		if code, text, err := l.reply(); err != nil || code != 220 {
			return r.fail(fmt.Sprintf("Postfix at %s refused XCLIENT: %d %s", hop.Addr, code, strings.Join(text, " ")), err)
		}
		if caps, p = ehlo(); p != "" {
			return r.fail(p, nil)
		}
		r.Notes = append(r.Notes, "XCLIENT accepted")
	}
	r.Capabilities = caps
	st := hasWord(caps, "STARTTLS")
	r.StartTLS = &st
	for _, c := range caps {
		f := strings.Fields(c)
		if len(f) > 0 && (strings.EqualFold(f[0], "AUTH") || strings.HasPrefix(strings.ToUpper(f[0]), "AUTH=")) {
			if strings.EqualFold(f[0], "AUTH") {
				r.Auth = f[1:]
			} else if len(r.Auth) == 0 {
				r.Auth = append(strings.Fields(f[0][5:]), f[1:]...)
			}
		}
	}
	if len(r.Auth) == 0 && name != "smtp" {
		r.Notes = append(r.Notes, "no AUTH offered: clients of "+name+" cannot log in (Postfix: smtpd_sasl_auth_enable = yes on that port)")
	}
	l.send("QUIT")
	r.OK = true
	return r
}

// hasWord reports whether a capability list has the keyword w.
func hasWord(caps []string, w string) bool {
	for _, c := range caps {
		f := strings.Fields(c)
		if len(f) > 0 && strings.EqualFold(f[0], w) {
			return true
		}
	}
	return false
}

// checkMail talks to an IMAP or POP3 backend as the gateways do.
func checkMail(ctx context.Context, name string, svc *config.Service, o Options) Result {
	r := Result{Check: name, Server: "Dovecot", Target: svc.Backend.Value}
	b, err := BackendFor(name, svc)
	if err != nil {
		return r.fail(err.Error(), nil)
	}
	r.Via = b.via()
	l, hop, done, ok := dial(ctx, b, o, &r, relay.ExampleDovecot)
	if !ok {
		return r
	}
	defer done()
	greet, err := l.line()
	if err != nil {
		return r.fail(fmt.Sprintf("Dovecot at %s sent no complete greeting", hop.Addr), err)
	}
	r.Greeting = greet
	if strings.HasPrefix(name, "imap") {
		return imapCaps(l, hop, r)
	}
	return pop3Caps(l, hop, r)
}

func imapCaps(l *lineConn, hop relay.Hop, r Result) Result {
	if !strings.HasPrefix(r.Greeting, "* OK") {
		return r.fail(fmt.Sprintf("Dovecot at %s greets without OK: %q", hop.Addr, r.Greeting), nil)
	}
	if err := l.send("d1 CAPABILITY"); err != nil {
		return r.fail("CAPABILITY failed", err)
	}
	for range maxLines {
		s, err := l.line()
		if err != nil {
			return r.fail(fmt.Sprintf("Dovecot at %s did not answer CAPABILITY", hop.Addr), err)
		}
		up := strings.ToUpper(s)
		switch {
		case strings.HasPrefix(up, "* CAPABILITY "):
			r.Capabilities = strings.Fields(s)[2:]
		case strings.HasPrefix(up, "D1 OK"):
			st := false
			for _, c := range r.Capabilities {
				cu := strings.ToUpper(c)
				switch {
				case strings.HasPrefix(cu, "AUTH="):
					r.Auth = append(r.Auth, c[5:])
				case cu == "STARTTLS":
					st = true
				case cu == "LOGINDISABLED":
					r.Notes = append(r.Notes, "LOGIN is disabled on this connection (Dovecot: disable_plaintext_auth = no on the postern listener, see "+relay.ExampleDovecot+")")
				}
			}
			r.StartTLS = &st
			l.send("d2 LOGOUT")
			r.OK = true
			return r
		case strings.HasPrefix(up, "D1 "):
			return r.fail(fmt.Sprintf("Dovecot at %s refused CAPABILITY: %q", hop.Addr, s), nil)
		case hop.SendsHeader() && (strings.Contains(up, " BAD ") || strings.HasPrefix(up, "* BYE")):
			return r.fail(hop.HeaderUnexpected()+fmt.Sprintf(" (it answered %q)", s), nil)
		}
	}
	return r.fail(fmt.Sprintf("Dovecot at %s sent too many lines", hop.Addr), nil)
}

func pop3Caps(l *lineConn, hop relay.Hop, r Result) Result {
	if !strings.HasPrefix(r.Greeting, "+OK") {
		return r.fail(fmt.Sprintf("Dovecot at %s greets without +OK: %q", hop.Addr, r.Greeting), nil)
	}
	if err := l.send("CAPA"); err != nil {
		return r.fail("CAPA failed", err)
	}
	s, err := l.line()
	if err != nil {
		return r.fail(fmt.Sprintf("Dovecot at %s did not answer CAPA", hop.Addr), err)
	}
	if !strings.HasPrefix(s, "+OK") {
		if hop.SendsHeader() {
			return r.fail(hop.HeaderUnexpected()+fmt.Sprintf(" (it answered %q)", s), nil)
		}
		return r.fail(fmt.Sprintf("Dovecot at %s refused CAPA: %q", hop.Addr, s), nil)
	}
	st := false
	for range maxLines {
		s, err := l.line()
		if err != nil {
			return r.fail(fmt.Sprintf("Dovecot at %s did not finish its CAPA list", hop.Addr), err)
		}
		if s == "." {
			r.StartTLS = &st
			l.send("QUIT")
			r.OK = true
			return r
		}
		r.Capabilities = append(r.Capabilities, s)
		f := strings.Fields(s)
		switch {
		case len(f) > 0 && strings.EqualFold(f[0], "SASL"):
			r.Auth = f[1:]
		case len(f) > 0 && strings.EqualFold(f[0], "STLS"):
			st = true
		}
	}
	return r.fail(fmt.Sprintf("Dovecot at %s sent too many CAPA lines", hop.Addr), nil)
}
