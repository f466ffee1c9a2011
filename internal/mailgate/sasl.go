package mailgate

import "github.com/postern/postern/internal/gate"

// saslStep sends a continuation (prefix, then a base64 challenge) and
// reads the client's answer with readLine, as gate.SASLResponse reads it.
func (s *Session) saslStep(prefix, challenge string, readLine func() (string, error)) ([]byte, error) {
	if err := s.Send(prefix + challenge); err != nil {
		return nil, err
	}
	s.Idle()
	line, err := readLine()
	if err != nil {
		return nil, err
	}
	return gate.SASLResponse(line)
}

// SASL runs a PLAIN or LOGIN exchange (gate.SASL); continuations are sent
// with prefix and answered through readLine. The error is one of gate's
// (ErrMechanism, ErrBadSASL, ErrCancelled) or the connection's.
func (s *Session) SASL(mech, initial, prefix string, readLine func() (string, error)) (authz, user, pass string, err error) {
	return gate.SASL(mech, initial, func(challenge string) ([]byte, error) { return s.saslStep(prefix, challenge, readLine) })
}

// DecodeSASL decodes one base64 SASL response strictly (gate.DecodeSASL).
func DecodeSASL(s string) ([]byte, error) { return gate.DecodeSASL(s) }

// ValidUser reports whether a login name can be passed on as it is: no
// control characters, no leading or trailing space, not empty. Dovecot
// would pass such names to its authentication as they are, where only its
// username_chars setting stands in the way; postern refuses them.
func ValidUser(u string) bool {
	if u == "" || u[0] == ' ' || u[len(u)-1] == ' ' {
		return false
	}
	for i := 0; i < len(u); i++ {
		if u[i] < ' ' || u[i] == 0x7f {
			return false
		}
	}
	return true
}
