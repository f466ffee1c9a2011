package mailgate

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrCancelled is a SASL exchange the client cancelled with "*".
	ErrCancelled = errors.New("cancelled")
	// ErrBadSASL is a SASL response postern does not take: not strict
	// base64, or not what the mechanism wants.
	ErrBadSASL = errors.New("bad SASL response")
	// ErrMechanism is a mechanism postern does not offer.
	ErrMechanism = errors.New("unsupported authentication mechanism")
)

// SASLStep sends a continuation (prefix, then a base64 challenge) and
// reads the client's answer with readLine: "*" cancels (ErrCancelled),
// anything else is decoded with DecodeSASL.
func (s *Session) SASLStep(prefix, challenge string, readLine func() (string, error)) ([]byte, error) {
	if err := s.Send(prefix + challenge); err != nil {
		return nil, err
	}
	s.Idle()
	line, err := readLine()
	if err != nil {
		return nil, err
	}
	if line == "*" {
		return nil, ErrCancelled
	}
	return DecodeSASL(line)
}

// SASL runs a PLAIN or LOGIN exchange as Dovecot's login processes do:
// the initial response is "" (none: asked with a continuation), "="
// (empty) or base64; PLAIN wants exactly two NULs and a login name, LOGIN
// a non-empty name (an empty initial name, which Dovecot asks again, is
// refused). Continuations are sent with prefix and answered through
// readLine. The error is ErrMechanism, ErrBadSASL, ErrCancelled, or the
// connection's.
func (s *Session) SASL(mech, initial, prefix string, readLine func() (string, error)) (authz, user, pass string, err error) {
	step := func(challenge string) ([]byte, error) { return s.SASLStep(prefix, challenge, readLine) }
	switch UpperASCII(mech) {
	case "PLAIN":
		var resp []byte
		switch initial {
		case "":
			resp, err = step("")
		case "=":
		default:
			resp, err = DecodeSASL(initial)
		}
		if err != nil {
			return "", "", "", err
		}
		parts := strings.Split(string(resp), "\x00")
		if len(parts) != 3 || parts[1] == "" {
			return "", "", "", ErrBadSASL
		}
		return parts[0], parts[1], parts[2], nil
	case "LOGIN":
		var u, p []byte
		switch initial {
		case "":
			u, err = step("VXNlcm5hbWU6")
		case "=":
			err = ErrBadSASL
		default:
			u, err = DecodeSASL(initial)
		}
		if err == nil {
			p, err = step("UGFzc3dvcmQ6")
		}
		if err == nil && len(u) == 0 {
			err = ErrBadSASL
		}
		if err != nil {
			return "", "", "", err
		}
		return "", string(u), string(p), nil
	}
	return "", "", "", ErrMechanism
}

// DecodeSASL decodes one base64 SASL response in the only form postern
// accepts: the standard alphabet with padding, nothing else. Dovecot also
// skips white space, CR and LF inside; postern refuses those (ErrBadSASL).
func DecodeSASL(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return nil, ErrBadSASL
		}
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSASL, err)
	}
	return b, nil
}

// UpperASCII upper-cases ASCII letters only, as Dovecot's strcasecmp and
// i_toupper: strings.ToUpper would turn "logın" (dotless i) into "LOGIN".
func UpperASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'a' && c <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'a' && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

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
