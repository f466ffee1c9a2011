package gate

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/postern/postern/internal/ascii"
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

// SASLResponse reads the client's line answering a continuation: "*"
// cancels (ErrCancelled), anything else is decoded with DecodeSASL.
func SASLResponse(line string) ([]byte, error) {
	if line == "*" {
		return nil, ErrCancelled
	}
	return DecodeSASL(line)
}

// SASL runs a PLAIN or LOGIN exchange as Dovecot's authentication reads it
// (for its own login processes, and for Postfix, whose Dovecot SASL passes
// the client's responses on to it): the mechanism
// name is compared in ASCII without case; the initial response is ""
// (none: asked with a continuation), "=" (empty) or base64; PLAIN wants
// exactly two NULs and a login name, LOGIN a non-empty name (an empty
// initial name, which Dovecot asks again, is refused). step sends a
// continuation with its base64 challenge and returns the client's decoded
// answer (SASLResponse reads the line). The error is ErrMechanism,
// ErrBadSASL, ErrCancelled, or step's.
func SASL(mech, initial string, step func(challenge string) ([]byte, error)) (authz, user, pass string, err error) {
	switch ascii.Upper(mech) {
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
			u, err = step("VXNlcm5hbWU6") // "Username:"
		case "=":
			err = ErrBadSASL
		default:
			u, err = DecodeSASL(initial)
		}
		if err == nil {
			p, err = step("UGFzc3dvcmQ6") // "Password:"
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
// skips white space, CR and LF inside; postern refuses those, and non-zero
// padding bits, which a decoder may read its own way (ErrBadSASL).
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
