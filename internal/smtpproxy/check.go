package smtpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/mailgate"
)

// maxCheckLine bounds the AUTH PLAIN line CheckLogin sends: Postfix reads
// a command line of at most line_length_limit (2048) bytes and splits a
// longer one.
const maxCheckLine = 2000

// CheckOptions are the ways of a CheckLogin.
type CheckOptions struct {
	// Timeout bounds each backend read and write and the TLS handshake.
	Timeout time.Duration
	// Helo is the EHLO name.
	Helo string
	// XClient, when valid, is the client named with XCLIENT.
	XClient netip.Addr
	// TLS, when set, is the configuration of STARTTLS before the login.
	TLS *tls.Config
}

// CheckLogin logs in once over be, a fresh connection to the SMTP
// submission backend (its PROXY header written, or none when xclient is
// valid), as the gateway asks the backend for a client's login: it reads
// the greeting, starts TLS with STARTTLS when o.TLS is set, names the
// client o.XClient with XCLIENT when it is valid (as the gateway does with
// backend_tls starttls and backend_proxy xclient), sends EHLO,
// AUTH PLAIN with user and pass (no authorization identity) and reads the
// answer as the gateway does (235 accepted, 535 rejected, any other reply
// answered). It then sends QUIT and does not wait for its answer. be is
// the caller's to close. An
// error before the password was sent comes with gate.Answered (nothing to
// count), after it with gate.Unexpected. It is for servers that check a
// password for a proxy that does not (nginx's mail auth_http).
func CheckLogin(be net.Conn, o CheckOptions, user, pass string) (gate.Outcome, error) {
	b := &backend{conn: be, timeout: o.Timeout}
	b.r = bufio.NewReaderSize(backendIO{b}, 4096)
	b.w = bufio.NewWriterSize(backendIO{b}, 4096)
	greet, err := b.read()
	if err != nil {
		return gate.Answered, fmt.Errorf("smtp greeting: %w", err)
	}
	if greet.code != 220 {
		return gate.Answered, fmt.Errorf("smtp greeting: %s", truncate(greet.text(), 120))
	}
	if o.TLS != nil {
		ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
		err := b.startTLS(ctx, o.TLS, o.Helo)
		cancel()
		if err != nil {
			return gate.Answered, fmt.Errorf("smtp: %w", err)
		}
	}
	if o.XClient.IsValid() {
		if _, err := b.xclient(netip.AddrPortFrom(o.XClient, 0), o.Helo); err != nil {
			return gate.Answered, fmt.Errorf("smtp: %w", err)
		}
	}
	r, err := b.cmd("EHLO " + o.Helo)
	if err != nil {
		return gate.Answered, fmt.Errorf("smtp EHLO: %w", err)
	}
	if r.code != 250 {
		return gate.Answered, fmt.Errorf("smtp EHLO: %s", truncate(r.text(), 120))
	}
	if !hasCap(r, "AUTH") {
		return gate.Answered, fmt.Errorf("smtp backend offers no AUTH to postern (Postfix offers it only over TLS with smtpd_tls_auth_only)")
	}
	blob := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	if r, err = b.cmd("AUTH PLAIN " + blob); err != nil {
		return gate.Unexpected, fmt.Errorf("smtp AUTH: %w", err)
	}
	b.send("QUIT") // not waited for
	switch r.code {
	case 235:
		return gate.Accepted, nil
	case 535:
		return gate.Rejected, nil
	}
	return gate.Answered, nil
}

// Replayable reports whether CheckLogin can send a login of user and pass
// to the backend as the gateway does: a name the gateway passes on, no
// NUL, CR or LF in the password, and an AUTH PLAIN line Postfix reads
// whole.
func Replayable(user, pass string) bool {
	return mailgate.ValidUser(user) && !strings.ContainsAny(pass, "\x00\r\n") &&
		len("AUTH PLAIN ")+base64.StdEncoding.EncodedLen(len(user)+len(pass)+2) <= maxCheckLine
}
