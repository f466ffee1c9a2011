package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
)

// The example files the advice points to (examples/ in the source tree).
const (
	ExampleDovecot       = "examples/dovecot/conf.d/99-postern.conf"
	ExamplePostfixMaster = "examples/postfix/master.cf.snippet"
	ExamplePostfixMain   = "examples/postfix/main.cf.snippet"
)

// Hop describes one connection from postern to a backend, as much as the
// advice for a failure on it needs. Gateways and `postern doctor` build the
// same Hop, so a mistake reads the same in the log and in the doctor's
// report.
type Hop struct {
	Service string     // smtp, submission, smtps, imap, imaps, pop3, pop3s
	Addr    string     // the backend, host:port
	Proxy   string     // backend_proxy: v2, v1, xclient or none ("" is v2)
	From    netip.Addr // postern's address on the connection, as the backend sees it; invalid: unknown
}

// SendsHeader reports whether postern writes a PROXY header on this hop.
func (h Hop) SendsHeader() bool { return h.Proxy != "none" && h.Proxy != "xclient" }

// version is the PROXY protocol version named in advice.
func (h Hop) version() string {
	if h.Proxy == "v1" {
		return "v1"
	}
	return "v2"
}

// Server names the kind of server expected behind the service: Postfix for
// the SMTP services, Dovecot for IMAP and POP3.
func (h Hop) Server() string {
	switch h.Service {
	case "smtp", "submission", "smtps":
		return "Postfix"
	case "imap", "imaps", "pop3", "pop3s":
		return "Dovecot"
	}
	return "the backend"
}

func (h Hop) from() string {
	if h.From.IsValid() {
		return h.From.Unmap().String()
	}
	return "postern's address"
}

// ClosedEarly reports whether err means that the peer closed or reset the
// connection (end of file, reset, broken pipe), as opposed to a timeout or
// a reply.
func ClosedEarly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// TimedOut reports whether err is a deadline that passed.
func TimedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// HeaderRejectedAdvice is what to change when the backend closed the
// connection right after postern's PROXY header, before any greeting.
func (h Hop) HeaderRejectedAdvice() string {
	switch h.Server() {
	case "Dovecot":
		return fmt.Sprintf("set `haproxy_trusted_networks` to include %s (see %s)", h.from(), ExampleDovecot)
	case "Postfix":
		s := fmt.Sprintf("set `smtpd_upstream_proxy_protocol = haproxy` on that port in master.cf, or `postscreen_upstream_proxy_protocol = haproxy` where postscreen listens (see %s)", ExamplePostfixMaster)
		if h.version() == "v2" {
			s += "; Postfix reads PROXY v2 since 3.5, older versions need `backend_proxy: v1`"
		}
		return s
	}
	return fmt.Sprintf("make the backend accept a PROXY %s header from %s (Dovecot: `haproxy_trusted_networks`, see %s; Postfix: `smtpd_upstream_proxy_protocol = haproxy`, see %s)",
		h.version(), h.from(), ExampleDovecot, ExamplePostfixMaster)
}

// HeaderRejected is the sentence for a backend that closed the connection
// right after postern's PROXY header: what happened and what to change.
func (h Hop) HeaderRejected() string {
	return fmt.Sprintf("%s at %s closed the connection after postern's PROXY %s header: %s",
		h.Server(), h.Addr, h.version(), h.HeaderRejectedAdvice())
}

// HeaderUnexpectedAdvice is what to change when the backend took
// postern's PROXY header for protocol commands: it does not expect one.
func (h Hop) HeaderUnexpectedAdvice() string {
	switch h.Server() {
	case "Dovecot":
		return fmt.Sprintf("add `haproxy = yes` to the inet_listener on that port and list %s in `haproxy_trusted_networks` (see %s)", h.from(), ExampleDovecot)
	case "Postfix":
		return fmt.Sprintf("set `smtpd_upstream_proxy_protocol = haproxy` on that port in master.cf, or `postscreen_upstream_proxy_protocol = haproxy` where postscreen listens (see %s)", ExamplePostfixMaster)
	}
	return "make the backend expect a PROXY header on that port, or point postern at the port that does"
}

// HeaderUnexpected is the sentence for a backend that answered postern's
// PROXY header as if it were commands.
func (h Hop) HeaderUnexpected() string {
	return fmt.Sprintf("%s at %s read postern's PROXY %s header as commands (it does not expect one on that port): %s",
		h.Server(), h.Addr, h.version(), h.HeaderUnexpectedAdvice())
}

// HeaderMissingAdvice is what to change when the backend waits for a PROXY
// header that postern does not send (backend_proxy: none or xclient).
func (h Hop) HeaderMissingAdvice() string {
	s := fmt.Sprintf("set `backend_proxy: v2` on services.%s", h.Service)
	switch h.Server() {
	case "Dovecot":
		s += fmt.Sprintf(", or point it at a listener without `haproxy = yes` (see %s)", ExampleDovecot)
	case "Postfix":
		s += fmt.Sprintf(", or point it at a port without `smtpd_upstream_proxy_protocol` (see %s)", ExamplePostfixMaster)
	}
	return s
}

// HeaderMissing is the sentence for a backend that expects a PROXY header
// and got none: typically it closes the connection after its own timeout
// (Dovecot's haproxy_timeout, 3 s) or answers an error greeting (Postfix:
// 421 … Server local error, after smtpd_upstream_proxy_timeout).
func (h Hop) HeaderMissing(what string) string {
	return fmt.Sprintf("%s at %s %s and postern sends no PROXY header (backend_proxy: %s); it probably expects one: %s",
		h.Server(), h.Addr, what, h.Proxy, h.HeaderMissingAdvice())
}

// AdviceError is a backend failure with the advice for the mistake that
// typically causes it. Unwrap gives the underlying error.
type AdviceError struct {
	Err    error
	Advice string // one sentence: what happened and what to change
}

func (e *AdviceError) Error() string { return e.Advice + " (" + e.Err.Error() + ")" }

// Unwrap returns the underlying error.
func (e *AdviceError) Unwrap() error { return e.Err }

// ExplainFirstRead returns err, wrapped with advice when it is a failure of
// the first read on a new backend connection (before any byte of the
// greeting) that a PROXY header mistake typically causes: the connection
// closed right after postern's header, or, without a header, closed or
// silent until the deadline. Other errors are returned as they are.
func (h Hop) ExplainFirstRead(err error) error {
	if err == nil {
		return nil
	}
	var ae *AdviceError
	if errors.As(err, &ae) {
		return err
	}
	switch {
	case h.SendsHeader() && ClosedEarly(err):
		return &AdviceError{Err: err, Advice: h.HeaderRejected()}
	case !h.SendsHeader() && ClosedEarly(err):
		return &AdviceError{Err: err, Advice: h.HeaderMissing("closed the connection before its greeting")}
	case !h.SendsHeader() && TimedOut(err):
		return &AdviceError{Err: err, Advice: h.HeaderMissing("sent no greeting")}
	}
	return err
}

// ExplainGreeting returns advice for an SMTP greeting with reply code
// 421 when postern sent no PROXY header (Postfix's "421 4.3.0 … Server
// local error" when the header it waits for did not come), or "" when the
// greeting says nothing about PROXY headers. text is the reply's text.
func (h Hop) ExplainGreeting(code int, text string) string {
	if h.SendsHeader() || code != 421 {
		return ""
	}
	return h.HeaderMissing(fmt.Sprintf("answered \"421 %s\"", truncate(text, 80)))
}

// ExplainTLS returns err, wrapped with advice when the TLS handshake with
// the backend failed because the backend is not speaking TLS on that port
// or closed the connection right after postern's PROXY header.
func (h Hop) ExplainTLS(err error) error {
	if err == nil {
		return nil
	}
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &rh):
		return &AdviceError{Err: err, Advice: fmt.Sprintf("%s at %s does not speak TLS at once on that port: set `backend_tls: none` on services.%s (or `starttls` for SMTP), or point it at the implicit-TLS port", h.Server(), h.Addr, h.Service)}
	case ClosedEarly(err):
		return h.ExplainFirstRead(err)
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
