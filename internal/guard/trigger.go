package guard

import (
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

// trigger indexes the automatic triggers.
type trigger uint8

const (
	trigI trigger = iota // connections per minute
	trigL                // failed logins
	trigP                // unknown recipients
	trigY                // relay denials
	trigR                // RSET commands
	trigS                // spam score
	trigD                // DNSBL listing
	trigM                // message size
	trigA                // tarpit account
	trigC                // content rule
	numTriggers

	// trigRefused counts refused connections for Verdict.Quiet; it is
	// a counter only, never a trigger.
	trigRefused = numTriggers
)

var triggerReasons = [numTriggers]reason.Code{
	trigI: reason.Connections, trigL: reason.Login, trigP: reason.UnknownRecipients,
	trigY: reason.Relay, trigR: reason.RSET, trigS: reason.Spam, trigD: reason.DNSBL,
	trigM: reason.Size, trigA: reason.TarpitAccount, trigC: reason.Content,
}

func (t trigger) reason() reason.Code { return triggerReasons[t] }

func triggerOf(code byte) (trigger, bool) {
	for t, r := range triggerReasons {
		if byte(r) == code {
			return trigger(t), true
		}
	}
	return 0, false
}

// Group is a protocol group with its own trigger settings.
type Group uint8

// The protocol groups.
const (
	GroupSMTP Group = iota // smtp, submission, smtps
	GroupMail              // imap, imaps, pop3, pop3s
	GroupWeb               // web
	numGroups

	// groupAll keys the counters every group shares: the failed logins
	// of failed_logins_across_groups and the refusals of
	// Verdict.Quiet. It is a counter key only, never a service's group.
	groupAll = numGroups
)

var groupNames = [numGroups]string{"smtp", "imap_pop3", "web"}

func (g Group) String() string { return groupNames[g] }

// GroupOf returns the protocol group of a service: its protocol's.
func GroupOf(svc service.Service) (Group, bool) {
	switch svc.Protocol() {
	case service.ProtocolSMTP:
		return GroupSMTP, true
	case service.ProtocolMail:
		return GroupMail, true
	case service.ProtocolWeb:
		return GroupWeb, true
	}
	return 0, false
}
