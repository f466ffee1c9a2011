package imapproxy

import (
	"github.com/emersion/go-imap/v2/imapserver"
)

// countingSession counts the logins that reach the test server. It keeps
// every optional interface of the in-memory session (NAMESPACE, MOVE).
// The login gate's own tests run against both gateways in mailgate.
type countingSession struct {
	imapserver.SessionIMAP4rev2
	b *testIMAP
}

func counting(s imapserver.Session, b *testIMAP) imapserver.Session {
	rev2, ok := s.(imapserver.SessionIMAP4rev2)
	if !ok {
		return s
	}
	return countingSession{rev2, b}
}

func (s countingSession) Login(user, pass string) error {
	s.b.logins.Add(1)
	return s.SessionIMAP4rev2.Login(user, pass)
}
