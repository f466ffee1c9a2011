// Package mimic keeps a bounded sample of how long a backend takes to
// answer a failed login and draws from it, so that an answer postern gives
// itself in place of the backend's failure (a login the login IP
// restriction refuses) takes as long as the backend's would.
package mimic

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Size is how many recent failure times a Latencies keeps.
const Size = 64

// Latencies is a sample of the Size most recent failure times of one
// backend. It is safe for concurrent use.
type Latencies struct {
	def, max time.Duration

	mu   sync.Mutex
	ring [Size]time.Duration
	n    int // samples held, ≤ Size
	next int // where the next sample goes
}

// New returns an empty sample. Draw returns def until a failure time is
// recorded; a recorded time is clamped to [0, max], so that no draw holds
// an answer longer than max.
func New(def, max time.Duration) *Latencies {
	if def > max {
		def = max
	}
	return &Latencies{def: max0(def), max: max0(max)}
}

func max0(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}

// Record adds the time a backend took to answer a failed login,
// replacing the oldest when the sample is full.
func (l *Latencies) Record(d time.Duration) {
	d = min(max0(d), l.max)
	l.mu.Lock()
	l.ring[l.next] = d
	l.next = (l.next + 1) % Size
	l.n = min(l.n+1, Size)
	l.mu.Unlock()
}

// Draw returns one of the recorded failure times, each as likely, or the
// default before any was recorded: the empirical distribution of recent
// failures, whatever its shape (a fixed delay, Dovecot's 0.5 s steps, a
// penalty that grows).
func (l *Latencies) Draw() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == 0 {
		return l.def
	}
	return l.ring[rand.IntN(l.n)]
}

// Len returns how many failure times are held.
func (l *Latencies) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}
