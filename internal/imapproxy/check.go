package imapproxy

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/mailgate"
)

// CheckLogin logs in once over be, a fresh connection to the IMAP backend
// (its PROXY header written), exactly as the gateway replays a client's
// login: it reads the greeting and the capabilities, replays user and pass
// (AUTHENTICATE PLAIN with SASL-IR when offered, else LOGIN) and reads the
// answer as the gateway does. Logged in, it sends a logout and does not
// wait for its answer. timeout bounds each backend read and write; be is
// the caller's to close. An error before the login was sent comes with
// gate.Answered (nothing to count), after it with gate.Unexpected. It is for servers that check a password for a
// proxy that does not (nginx's mail auth_http).
func CheckLogin(be net.Conn, timeout time.Duration, user, pass string) (gate.Outcome, error) {
	g := mailgate.New(mailgate.Config{BackendTimeout: timeout}, wording, nil, nil, nil)
	s := &session{Session: &mailgate.Session{Gate: g}, p: &Proxy{g: g}}
	s.SetBackend(be, bufio.NewReaderSize(nil, 4096))
	if err := s.greet(); err != nil {
		return gate.Answered, err // the password was not sent
	}
	const tag = "P0"
	untagged, tagged, err := s.backendLogin(tag, "", user, pass)
	if err != nil {
		return gate.Unexpected, fmt.Errorf("imap login: %w", err)
	}
	r := loginReply(tag, untagged, tagged)
	if r.Outcome == gate.Accepted {
		// Not waited for: Dovecot answers LOGOUT from the mail process it
		// starts after the login, milliseconds later.
		s.BackendWrite("P1 LOGOUT")
	}
	return r.Outcome, nil
}

// Replayable reports whether the gateway replays a login of user and pass
// (no authorization identity) to the backend: what checkedLogin lets
// through. A login it does not replay is refused as a bad command,
// uncounted.
func Replayable(user, pass string) bool {
	return mailgate.ValidUser(user) && validPassword(pass) && base64.StdEncoding.EncodedLen(len(user)+len(pass)+2) <= maxSASL
}
