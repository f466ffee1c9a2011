package config

import "runtime"

// EventLoopsOn reports whether the mail gateways' sessions run on event
// loops: event_loops as set, else on where postern has them (Linux).
func (c *File) EventLoopsOn() bool {
	if c.EventLoops != nil {
		return *c.EventLoops
	}
	return runtime.GOOS == "linux"
}
