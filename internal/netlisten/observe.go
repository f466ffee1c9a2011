package netlisten

import "net"

// observed tells the listener's Config.HandshakeFailed about a failed
// handshake and returns err.
func (c *Conn) observed(err error) error {
	if err != nil && c.owner != nil && c.owner.cfg.HandshakeFailed != nil {
		c.owner.cfg.HandshakeFailed()
	}
	return err
}

// NoteEarlyTalker reports that the client of conn sent bytes before the
// greeting (SpokeFirst said so) to the listener's Config.EarlyTalker;
// nothing for a connection of another kind.
func NoteEarlyTalker(conn net.Conn) {
	if c, ok := conn.(*Conn); ok && c.owner != nil && c.owner.cfg.EarlyTalker != nil {
		c.owner.cfg.EarlyTalker()
	}
}
