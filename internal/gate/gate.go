// Package gate is what every gateway does alike with the engine's
// answers, whatever its protocol: the verdict at the door (a quiet refusal
// before an implicit-TLS handshake, a refusal, a tarpit), obeying the
// decisions that come later, the login gate around
// guard.Session.BeginLogin (account protection, the login IP restriction
// with its decoy replay, the report of the backend's answer) and the SASL
// PLAIN/LOGIN exchange the mail gateways read credentials with. A gateway
// gives only its wording, its replay to the backend and its reading of
// the backend's answer.
package gate

import (
	"context"
	"log/slog"
	"time"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/policy"
)

// HandshakeTimeout bounds a TLS handshake, implicit or after STARTTLS.
const HandshakeTimeout = 30 * time.Second

// Ends reports whether a decision ends the session: a refusal or a close.
func Ends(d guard.Decision) bool { return d.Action == guard.Close || d.Action == guard.Refuse }

// Obey applies a decision to a session that answers in lines (SMTP, IMAP,
// POP3): its delay becomes the tarpit before every later answer (*tarpit),
// and a refusal or a close is logged and said with refuse, given the
// engine's refusal text, as the session's last answer. It reports true
// when the session ends.
func Obey(d guard.Decision, tarpit *time.Duration, log *slog.Logger, refuse func(why string)) bool {
	if d.Delay > 0 {
		*tarpit = d.Delay
	}
	if Ends(d) {
		log.Info("closing a blocked connection", "reason", d.Reason.String(), "why", d.Refusal())
		refuse(d.Refusal())
		return true
	}
	return false
}

// Handshaker is the client connection at the door: it runs the
// implicit-TLS handshake when asked.
type Handshaker interface {
	Handshake(timeout time.Duration) error
}

// Door applies the connection gate's verdict before a line protocol's
// session says a word. A client refused again and again on an implicit-TLS
// port is closed without a word and without a handshake: answering it
// would cost one each time. Otherwise the implicit-TLS handshake comes
// after the gate, so every connection is checked and counted (I) before it
// costs any cryptography; then a refusal is said with atConnect, and the
// rest of the verdict is obeyed as Obey does (refuse says a close). It
// reports true when the session ends.
func Door(v guard.Verdict, conn Handshaker, implicitTLS bool, tarpit *time.Duration, log *slog.Logger, atConnect, refuse func(why string)) bool {
	if v.Quiet && implicitTLS {
		log.Info("refused at connect, without a TLS handshake", "reason", v.Reason.String())
		return true
	}
	if implicitTLS {
		if err := conn.Handshake(HandshakeTimeout); err != nil {
			log.Info("TLS handshake failed", "err", err)
			return true
		}
	}
	if v.Action == guard.Refuse {
		log.Info("refused at connect", "why", v.Refusal())
		atConnect(v.Refusal())
		return true
	}
	return Obey(v.Decision, tarpit, log, refuse)
}

// BeforeAccess moves a session on an event loop to a goroutine of its own
// before the engine's access checks when pol has host masks: the checks
// may then look the client's name up in DNS, which a loop must not wait
// for.
func BeforeAccess(ctx context.Context, pol *policy.Policy) {
	if pol != nil && pol.HasHostMasks() {
		evloop.MayBlock(ctx)
	}
}
