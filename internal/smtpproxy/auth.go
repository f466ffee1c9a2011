package smtpproxy

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/postern/postern/internal/guard"
)

// auth handles AUTH PLAIN and LOGIN. postern reads the credentials itself,
// applies the login IP restriction, then asks the backend with AUTH PLAIN
// and relays its answer. A login the restriction refuses is asked with a
// decoy password in place of the client's, so that its answer is the
// backend's own failure reply in the backend's own time; it counts as a
// failed login. The password is never logged or kept, and a refused one
// never leaves postern.
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
	var authz, user, pass string
	var err error
	switch strings.ToUpper(mech) {
	case "PLAIN":
		authz, user, pass, err = s.saslPlain(initial)
	case "LOGIN":
		user, pass, err = s.saslLogin(initial)
	default:
		return s.reply(newReply(504, "5.5.4 Unrecognized authentication type"))
	}
	if errors.Is(err, errCancelled) {
		return s.reply(newReply(501, "5.7.0 Authentication aborted"))
	}
	if err != nil {
		if errors.Is(err, errClosed) {
			return err
		}
		return s.reply(newReply(501, "5.5.2 Cannot decode response"))
	}
	fp := s.p.eng.PasswordFingerprint(strings.ToLower(user), pass)
	addr := s.client.Addr().Unmap()
	lg, d := s.gs.BeginLogin(s.ctx, user)
	if lg == nil {
		s.obey(d)
		return errClosed
	}
	defer lg.Abandon()
	refused := false
	if pol := s.env.Policy; pol != nil && !pol.AllowLogin(user, addr) {
		// Refused, and answered as a wrong password is: the backend is
		// asked with a decoy password in place of the client's, fails it
		// with its own text in its own time, and that answer is relayed.
		s.log.Info("login refused by the login IP restriction", "account", user)
		refused, pass = true, s.p.decoys.Password(pass)
	}
	blob := base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
	r, err := s.be.cmd("AUTH PLAIN " + blob)
	if err != nil {
		lg.Failed(fp) // no answer, but the backend may have checked the password: count it
		return s.backendLost(err)
	}
	switch {
	case r.code == 235 && refused:
		// The backend took a decoy password (a SASL set-up that checks
		// none): the login stays refused, and the backend's session,
		// authenticated, is never used.
		s.log.Error("the backend accepted the decoy password of a refused login; closing", "account", user)
		lg.Failed(fp)
		s.reply(*s.p.authFail.Load())
		return errClosed
	case r.code == 235:
		s.authed, s.account = true, user
		lg.Succeeded()
		s.log.Info("authenticated", "account", user)
		return s.reply(r)
	case r.code == 535:
		s.p.authFail.Store(&r)
		return s.authFailed(lg, fp, r)
	}
	return s.reply(r)
}

// authFailed answers a failed login and reports it (L).
func (s *session) authFailed(lg *guard.Login, fp uint64, r reply) error {
	d := lg.Failed(fp)
	if err := s.reply(r); err != nil {
		return err
	}
	return s.after(d)
}

var errCancelled = errors.New("authentication cancelled")

// saslResponse reads one base64 line answering a 334 challenge.
func (s *session) saslResponse(challenge string) ([]byte, error) {
	if err := s.reply(newReply(334, challenge)); err != nil {
		return nil, errClosed
	}
	line, err := s.readLine(s.p.cfg.Timeouts.Command)
	if err != nil {
		return nil, errClosed
	}
	if line == "*" {
		return nil, errCancelled
	}
	return base64.StdEncoding.DecodeString(line)
}

func (s *session) saslPlain(initial string) (authz, user, pass string, err error) {
	var resp []byte
	switch initial {
	case "":
		if resp, err = s.saslResponse(""); err != nil {
			return
		}
	case "=":
	default:
		if resp, err = base64.StdEncoding.DecodeString(initial); err != nil {
			return
		}
	}
	srv := sasl.NewPlainServer(func(identity, username, password string) error {
		authz, user, pass = identity, username, password
		return nil
	})
	if _, _, err = srv.Next(resp); err != nil {
		return "", "", "", err
	}
	if user == "" || strings.ContainsAny(user+pass+authz, "\x00\r\n") {
		return "", "", "", errors.New("bad PLAIN response")
	}
	return authz, user, pass, nil
}

func (s *session) saslLogin(initial string) (user, pass string, err error) {
	var u []byte
	if initial != "" {
		if u, err = base64.StdEncoding.DecodeString(initial); err != nil {
			return
		}
	} else if u, err = s.saslResponse("VXNlcm5hbWU6"); err != nil { // "Username:"
		return
	}
	p, err := s.saslResponse("UGFzc3dvcmQ6") // "Password:"
	if err != nil {
		return
	}
	user, pass = string(u), string(p)
	if user == "" || strings.ContainsAny(user+pass, "\x00\r\n") {
		return "", "", errors.New("bad LOGIN response")
	}
	return user, pass, nil
}
