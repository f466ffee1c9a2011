package webhook

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/postern/postern/internal/guard"
)

// The event names, as configured and as sent in "type".
const (
	EventBlock           = "block"
	EventUnblock         = "unblock"
	EventEscalation      = "escalation"
	EventNewCountryLogin = "new_country_login"
	EventReloadFailed    = "reload_failed"
)

// Event is one notification, as sent (JSON).
type Event struct {
	ID   string    `json:"id"`   // unique per event, the same in every retry
	Type string    `json:"type"` // block, unblock, escalation, new_country_login, reload_failed
	Time time.Time `json:"time"` // when it happened (RFC 3339, UTC)
	Node string    `json:"node"` // the gateway that sent it
	// Text is a one-line summary, escaped for Slack (and accepted as is
	// by Mattermost, Rocket.Chat and Teams' incoming webhooks).
	Text   string  `json:"text"`
	Block  *Block  `json:"block,omitempty"`  // block, unblock, escalation
	Reload *Reload `json:"reload,omitempty"` // reload_failed
	Login  *Login  `json:"login,omitempty"`  // new_country_login, impossible_travel
}

// Block describes the block an event is about.
type Block struct {
	Prefix     string     `json:"prefix"`            // address or network, CIDR
	Reason     string     `json:"reason"`            // the reason code (one letter)
	ReasonName string     `json:"reason_name"`       // what the code means
	Service    string     `json:"service,omitempty"` // where the offence was seen
	Detail     string     `json:"detail,omitempty"`  // what was seen
	Expires    *time.Time `json:"expires,omitempty"` // absent: never, or an unblock
	Level      int        `json:"level"`             // escalation level, 0 for a first offence
	Node       string     `json:"node,omitempty"`    // the node that made the block
	Actor      string     `json:"actor"`             // engine, admin:<who>; for an unblock who removed it, or expired
	Auto       bool       `json:"auto"`              // made (or purged) by the engine
}

// Reload describes a rejected configuration reload.
type Reload struct {
	Error string `json:"error"`
}

// newID returns a random event id.
func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// FromNotice is the event of an engine notice.
func FromNotice(n guard.Notice, node string) Event {
	b := &Block{
		Prefix: n.Prefix.String(), Reason: n.Reason.String(), ReasonName: n.Reason.Name(), Service: n.Service,
		Detail: n.Detail, Level: n.Level, Node: n.Node, Actor: n.Actor, Auto: n.Auto,
	}
	if !n.Expires.IsZero() {
		t := n.Expires.UTC()
		b.Expires = &t
	}
	ev := Event{ID: newID(), Type: n.Kind.String(), Time: n.Time.UTC(), Node: node, Block: b}
	var s strings.Builder
	fmt.Fprintf(&s, "postern %s: ", node)
	switch n.Kind {
	case guard.NoticeBlock:
		fmt.Fprintf(&s, "blocked %s (%s: %s", b.Prefix, b.Reason, b.ReasonName)
		if b.Service != "" {
			fmt.Fprintf(&s, ", %s", b.Service)
		}
		s.WriteString(")")
		if b.Expires != nil {
			fmt.Fprintf(&s, " for %s, until %s", n.Expires.Sub(n.Time).Round(time.Second), b.Expires.Format(time.RFC3339))
		} else {
			s.WriteString(" without expiry")
		}
		if !n.Auto {
			fmt.Fprintf(&s, " by %s", b.Actor)
		}
	case guard.NoticeUnblock:
		if n.Actor == "expired" {
			fmt.Fprintf(&s, "expired block of %s purged", b.Prefix)
		} else {
			fmt.Fprintf(&s, "unblocked %s by %s", b.Prefix, b.Actor)
		}
	case guard.NoticeEscalation:
		fmt.Fprintf(&s, "%s blocked again (%s: %s), escalation level %d", b.Prefix, b.Reason, b.ReasonName, b.Level)
		if b.Expires != nil {
			fmt.Fprintf(&s, ", for %s", n.Expires.Sub(n.Time).Round(time.Second))
		}
	}
	ev.Text = slackEscape(s.String())
	return ev
}

// ReloadFailed is the event of a rejected configuration reload.
func ReloadFailed(err error, node string, at time.Time) Event {
	msg := err.Error()
	return Event{
		ID: newID(), Type: EventReloadFailed, Time: at.UTC(), Node: node,
		Text:   slackEscape(fmt.Sprintf("postern %s: configuration reload failed, the running configuration stays: %s", node, msg)),
		Reload: &Reload{Error: msg},
	}
}

var slackReplacer = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// slackEscape escapes the three characters Slack's text formatting
// reserves.
func slackEscape(s string) string { return slackReplacer.Replace(s) }
