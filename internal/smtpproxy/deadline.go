package smtpproxy

import "time"

// maxSlack bounds how much earlier than asked a deadline may fall.
const maxSlack = time.Second

// deadline remembers one deadline (read or write) of a connection, so that
// it is set again only when it must move: earlier, or later by more than a
// slack (a 64th of the timeout, at most a second). Setting a deadline
// costs a runtime timer update, and a session sets one before every read
// and write (about thirty times for one message); with the slack, the
// commands of a quick session share one. A timeout may thus fire up to
// the slack early, never late.
type deadline struct{ at time.Time }

// due reports whether the deadline must be set to t, for an operation
// bounded by timeout, and then takes t as the deadline set.
func (d *deadline) due(t time.Time, timeout time.Duration) bool {
	if !d.at.IsZero() && !t.Before(d.at) && t.Sub(d.at) <= min(timeout/64, maxSlack) {
		return false
	}
	d.at = t
	return true
}

// forget notes that the deadline was set (or cleared) by other means.
func (d *deadline) forget() { d.at = time.Time{} }

// armRead sets the client's read deadline timeout from now, bounded by the
// session's end.
func (s *session) armRead(timeout time.Duration) {
	if t := minTime(time.Now().Add(timeout), s.deadline); s.rd.due(t, timeout) {
		s.conn.SetReadDeadline(t)
	}
}

// armWrite sets the client's write deadline for a reply.
func (s *session) armWrite() {
	timeout := s.p.cfg.Timeouts.Command
	if t := time.Now().Add(timeout); s.wd.due(t, timeout) {
		s.conn.SetWriteDeadline(t)
	}
}

// armRead sets the backend's read deadline.
func (b *backend) armRead() {
	if t := time.Now().Add(b.timeout); b.rd.due(t, b.timeout) {
		b.conn.SetReadDeadline(t)
	}
}

// armWrite sets the backend's write deadline.
func (b *backend) armWrite() {
	if t := time.Now().Add(b.timeout); b.wd.due(t, b.timeout) {
		b.conn.SetWriteDeadline(t)
	}
}
