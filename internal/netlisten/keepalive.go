package netlisten

import "time"

// Keep-alive of client connections: an idle logged-in session has no
// deadline (the relay waits for either side as long as it takes), so a
// client that vanishes without a FIN (a phone losing its network, a NAT
// dropping its mapping) is found only by TCP keep-alive probes. These are
// Go's defaults for accepted connections: the first probe after 15 s of
// silence, then every 15 s, the peer declared dead after 9 unanswered.
const (
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 9
)
