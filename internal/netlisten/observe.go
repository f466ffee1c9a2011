package netlisten

// observed tells the listener's Config.HandshakeFailed about a failed
// handshake and returns err.
func (c *Conn) observed(err error) error {
	if err != nil && c.owner != nil && c.owner.cfg.HandshakeFailed != nil {
		c.owner.cfg.HandshakeFailed()
	}
	return err
}
