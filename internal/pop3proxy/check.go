package pop3proxy

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/mailgate"
)

// CheckLogin logs in once over be, a fresh connection to the POP3 backend
// (its PROXY header written), exactly as the gateway replays a client's
// login: it reads the greeting and CAPA, replays user and pass (AUTH PLAIN
// when offered, else USER and PASS) and reads the answer as the gateway
// does. Logged in, it sends QUIT and does not wait for its answer. timeout
// bounds each backend read and write; be is the caller's to close. It is
// for servers that check a password for a proxy that does not (nginx's
// mail auth_http).
func CheckLogin(be net.Conn, timeout time.Duration, user, pass string) (gate.Outcome, error) {
	g := mailgate.New(mailgate.Config{BackendTimeout: timeout}, wording, nil, nil, nil)
	s := &session{Session: &mailgate.Session{Gate: g}}
	s.SetBackend(be, bufio.NewReaderSize(nil, 4096))
	if _, err := s.Greet(); err != nil {
		return gate.Answered, err // the password was not sent
	}
	reply, err := s.backendLogin("", user, pass)
	if err != nil {
		return gate.Unexpected, fmt.Errorf("pop3 login: %w", err)
	}
	r := loginReply(reply)
	if r.Outcome == gate.Accepted {
		// Not waited for: Dovecot answers QUIT from the mail process it
		// starts after the login, milliseconds later.
		s.BackendWrite("QUIT")
	}
	return r.Outcome, nil
}

// Replayable reports whether the gateway replays a login of user and pass
// (no authorization identity) to the backend: what checkedLogin lets
// through. A login it does not replay is refused as a bad command,
// uncounted.
func Replayable(user, pass string) bool {
	return mailgate.ValidUser(user) && !strings.ContainsAny(pass, "\x00\r\n") && len(user)+len(pass)+2 <= maxReplay
}
