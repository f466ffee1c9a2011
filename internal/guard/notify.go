package guard

import (
	"net/netip"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// NoticeKind is what a Notice announces.
type NoticeKind uint8

// The kinds of notice.
const (
	// NoticeBlock is a block made (not a refreshed one), automatic or
	// manual.
	NoticeBlock NoticeKind = iota
	// NoticeUnblock is a block removed: by an administrator (Unblock,
	// UnblockAll) or purged after it expired (PurgeExpired, Sweep).
	NoticeUnblock
	// NoticeEscalation is an automatic block of a prefix blocked before
	// within the escalation memory: its level is above 0 and its time
	// longer. It follows the NoticeBlock of the same block.
	NoticeEscalation
)

var noticeNames = [...]string{"block", "unblock", "escalation"}

// String returns the kind's name: block, unblock or escalation.
func (k NoticeKind) String() string {
	if int(k) < len(noticeNames) {
		return noticeNames[k]
	}
	return "unknown"
}

// Notice describes one change of the block table, for notifications
// (webhooks) and exports. It names the prefix blocked or unblocked.
type Notice struct {
	Kind    NoticeKind
	Time    time.Time // when the engine made the change
	Prefix  netip.Prefix
	Reason  reason.Code // the block's reason (also for an unblock, when known)
	Service string      // the service the offence was seen on; "" for manual blocks
	Detail  string      // what was seen (automatic blocks)
	Expires time.Time   // the block's expiry; zero: never (or an unblock)
	Level   int         // escalation level: 0 for a first offence
	Node    string      // the node that made the block (this engine's node for an unblock)
	Actor   string      // "engine", "admin:<who>" for a block; who removed it, or "expired", for an unblock
	Auto    bool        // made by the engine, not by an administrator
}

// Notifier is told of blocks made and removed and of escalations
// (blocks added by Import and changes learned from a cluster are not
// announced: the node that made a block announces it). Notify
// runs on the goroutine that changed the block table, after the change,
// outside the engine's lock and never on Admit's path; it must not block
// or wait (hand the notice to a bounded queue and return).
type Notifier interface {
	Notify(n Notice)
}

// Notifiers tells each of its notifiers in turn.
type Notifiers []Notifier

// Notify tells every notifier.
func (ns Notifiers) Notify(n Notice) {
	for _, x := range ns {
		x.Notify(n)
	}
}

// noticeOf is the notice of block b made (at b.LastSeen).
func (e *Engine) noticeOf(k NoticeKind, b store.Block, auto bool) Notice {
	return Notice{
		Kind: k, Time: b.LastSeen, Prefix: b.Prefix, Reason: b.Reason, Service: b.Service, Detail: b.Detail,
		Expires: b.Expires, Level: b.Level, Node: b.Node, Actor: b.By, Auto: auto,
	}
}

// notifyBlock announces block b made (and its escalation, when its level
// is above 0 and it is automatic).
func (e *Engine) notifyBlock(b store.Block, auto bool) {
	if e.notify == nil {
		return
	}
	e.notify.Notify(e.noticeOf(NoticeBlock, b, auto))
	if auto && b.Level > 0 {
		e.notify.Notify(e.noticeOf(NoticeEscalation, b, auto))
	}
}

// notifyUnblock announces the removal of the blocks in gone by actor.
func (e *Engine) notifyUnblock(gone []store.Block, actor string) {
	if e.notify == nil {
		return
	}
	now := e.clock()
	for _, b := range gone {
		e.notify.Notify(Notice{
			Kind: NoticeUnblock, Time: now, Prefix: b.Prefix, Reason: b.Reason, Service: b.Service,
			Level: b.Level, Node: e.node, Actor: actor, Auto: actor == "expired",
		})
	}
}
