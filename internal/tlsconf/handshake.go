package tlsconf

import (
	"crypto/tls"
	"time"
)

// Handshake runs t's handshake, giving up timeout after it starts (none if
// timeout <= 0). The bound is a deadline on the connection (t's deadlines
// are its socket's), cleared once the handshake has succeeded: the session
// sets its own before its reads and writes. After a failure the
// connection is unusable and keeps the deadline; close it. A context would
// bound the handshake as well, but crypto/tls then starts a goroutine for
// every handshake to watch it.
func Handshake(t *tls.Conn, timeout time.Duration) error {
	if timeout > 0 {
		if err := t.SetDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
	}
	if err := t.Handshake(); err != nil {
		return err
	}
	if timeout > 0 {
		return t.SetDeadline(time.Time{})
	}
	return nil
}
