package tlsconf

import (
	"context"
	"time"
)

// DefaultWatchInterval is the interval Watch uses when given none.
const DefaultWatchInterval = time.Minute

// Watch calls ReloadIfChanged every interval (DefaultWatchInterval if
// interval <= 0) until ctx is done, then returns. It logs through logf
// (nil: no logging) each reload, with any warning about the new
// certificate, and each failed reload; a failure that repeats unchanged is
// logged once, and again only after a success or a different error.
//
// logf has the shape of slog.Logger.Info: a message and key/value pairs.
// Run Watch in a goroutine owned by the caller:
//
//	go certs.Watch(ctx, time.Minute, logger.Info)
func (c *Certs) Watch(ctx context.Context, interval time.Duration, logf func(msg string, args ...any)) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := c.ReloadIfChanged()
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				logf("certificate reload failed; keeping the old certificate", "cert", c.certFile, "key", c.keyFile, "err", err)
			}
			continue
		}
		lastErr = ""
		if changed {
			l := c.cur.Load()
			logf("certificate reloaded", "cert", c.certFile, "key", c.keyFile, "certificate", describe(l.cert.Leaf))
			for _, w := range warnings(l, c.certFile, time.Now()) {
				logf(w)
			}
		}
	}
}
