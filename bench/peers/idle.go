package main

import (
	"errors"
	"fmt"
)

// idleResult is one proxy's memory per idle logged-in IMAP connection.
type idleResult struct {
	Side        string
	Asked, Held int
	RSS0, RSSN  int64 // KiB
	StoppedBy   string
}

// perConn returns the RSS growth per held connection in KiB.
func (i idleResult) perConn() float64 {
	if i.Held == 0 {
		return 0
	}
	return float64(i.RSSN-i.RSS0) / float64(i.Held)
}

func (i idleResult) cell() string {
	s := fmt.Sprintf("%.1f KiB (%d of %d held)", i.perConn(), i.Held, i.Asked)
	if i.StoppedBy != "" {
		s += "<br>stopped: " + i.StoppedBy
	}
	return s
}

func serveIMAPD(addr string) error { return errors.New("not yet") }

func (b *bench) idleTest() error { return errors.New("not yet") }
