package smtpproxy

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/postern/postern/internal/gate"
)

// auth handles AUTH PLAIN and LOGIN. postern reads the credentials itself
// (gate.SASL, as the Dovecot authentication behind Postfix reads them;
// names and passwords with NUL, CR or LF are refused), takes the login
// through the login gate (gate.Logins.Run), asks the backend with AUTH
// PLAIN and relays its answer. A login the login IP restriction refuses is
// asked with a decoy password in place of the client's, so that its answer
// is the backend's own failure reply in the backend's own time; it counts
// as a failed login. The password is never logged or kept, and a refused
// one never leaves postern.
func (s *session) auth(c command) error {
	switch {
	case !s.greeted:
		return s.reply(newReply(503, "5.5.1 Error: send EHLO first"))
	case s.authed:
		return s.reply(newReply(503, "5.5.1 Error: already authenticated"))
	case s.inTx:
		return s.reply(newReply(503, "5.5.1 Error: MAIL transaction in progress"))
	case !s.tls && !s.p.cfg.AllowInsecureAuth:
		return s.reply(newReply(538, "5.7.11 Encryption required for requested authentication mechanism"))
	}
	if len(c.args) == 0 || len(c.args) > 2 {
		return s.reply(newReply(501, "5.5.4 Syntax: AUTH mechanism"))
	}
	mech, initial := c.args[0], ""
	if len(c.args) == 2 {
		initial = c.args[1]
	}
	authz, user, pass, err := gate.SASL(mech, initial, s.saslResponse)
	switch {
	case errors.Is(err, gate.ErrMechanism):
		return s.reply(newReply(504, "5.5.4 Unrecognized authentication type"))
	case errors.Is(err, gate.ErrCancelled):
		return s.reply(newReply(501, "5.7.0 Authentication aborted"))
	case errors.Is(err, errClosed):
		return err
	case err != nil || strings.ContainsAny(user+pass+authz, "\x00\r\n"):
		return s.reply(newReply(501, "5.5.2 Cannot decode response"))
	}
	var r reply
	o, d, err := s.p.logins.Run(s.sessionCtx(), s.gs, s.env.Policy, s.client.Addr().Unmap(), gate.Credentials{User: user, Pass: pass}, s.log,
		func(pass string) (gate.Outcome, error) {
			blob := base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
			var err error
			if r, err = s.be.cmd("AUTH PLAIN " + blob); err != nil {
				return gate.Unexpected, err
			}
			switch r.code {
			case 235:
				return gate.Accepted, nil
			case 535:
				return gate.Rejected, nil
			}
			return gate.Answered, nil
		})
	switch o {
	case gate.Blocked:
		s.obey(d)
		return errClosed
	case gate.Unexpected:
		return s.backendLost(err)
	case gate.DecoyAccepted:
		// The backend's session, authenticated with a decoy, is never used.
		s.reply(*s.p.authFail.Load())
		return errClosed
	case gate.Accepted:
		s.authed, s.account = true, user
	case gate.Rejected:
		s.p.authFail.Store(&r)
		if err := s.reply(r); err != nil {
			return err
		}
		return s.after(d)
	}
	return s.reply(r)
}

// saslResponse sends a 334 challenge and reads the client's answer as
// gate.SASLResponse reads it.
func (s *session) saslResponse(challenge string) ([]byte, error) {
	if err := s.reply(newReply(334, challenge)); err != nil {
		return nil, errClosed
	}
	line, err := s.readLine(s.p.cfg.Timeouts.Command)
	if err != nil {
		return nil, errClosed
	}
	return gate.SASLResponse(line)
}
