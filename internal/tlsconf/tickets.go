package tlsconf

import (
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Session ticket key lifetimes used when TicketOptions leaves them zero.
const (
	// DefaultTicketRotation is how often a new key starts encrypting
	// the tickets handed out.
	DefaultTicketRotation = time.Hour
	// DefaultTicketLifetime is how long a key, once made, decrypts
	// tickets: a ticket resumes for at most this long, and no key stays
	// in memory (much) longer.
	DefaultTicketLifetime = 24 * time.Hour
)

// TicketOptions tune a TicketKeys. The zero value is the defaults.
type TicketOptions struct {
	Rotation time.Duration    // DefaultTicketRotation if <= 0
	Lifetime time.Duration    // DefaultTicketLifetime if <= 0; at least Rotation
	Now      func() time.Time // time.Now if nil (tests inject a clock)
}

// TicketKeys are the session ticket keys of one service. They live in
// the long-lived part of the gateway, so every tls.Config built for the
// service (one per configuration generation) encrypts and decrypts
// tickets with the same keys: a client resumes across reloads. The keys
// are random, held only in memory, and rotated: a new key encrypts every
// Rotation, an old one still decrypts until Lifetime after it was made,
// then it is dropped. Rotation happens on use (no goroutine); a key past
// its lifetime is never used to decrypt.
//
// The tickets themselves are sealed by crypto/tls (Config.EncryptTicket
// and DecryptTicket on a private Config holding the keys).
// All methods are safe for concurrent use.
type TicketKeys struct {
	rotation, lifetime time.Duration
	now                func() time.Time

	due atomic.Int64 // UnixNano when the next rotation is due

	mu     sync.Mutex
	keys   []ticketKey // newest first
	holder *tls.Config // seals and opens tickets with keys
}

type ticketKey struct {
	key     [32]byte
	created time.Time
}

// NewTicketKeys makes the key ring of one service with a first random key.
func NewTicketKeys(o TicketOptions) (*TicketKeys, error) {
	k := &TicketKeys{rotation: o.Rotation, lifetime: o.Lifetime, now: o.Now, holder: &tls.Config{}}
	if k.rotation <= 0 {
		k.rotation = DefaultTicketRotation
	}
	if k.lifetime <= 0 {
		k.lifetime = DefaultTicketLifetime
	}
	if k.lifetime < k.rotation {
		k.lifetime = k.rotation
	}
	if k.now == nil {
		k.now = time.Now
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.rotateLocked(k.now()); err != nil {
		return nil, err
	}
	return k, nil
}

// rotateLocked adds a new key made at now, drops keys past their
// lifetime, and installs the ring in the holder.
func (k *TicketKeys) rotateLocked(now time.Time) error {
	var nk ticketKey
	if _, err := rand.Read(nk.key[:]); err != nil {
		return fmt.Errorf("session ticket key: %w", err)
	}
	nk.created = now
	keep := []ticketKey{nk}
	for i := range k.keys {
		if now.Sub(k.keys[i].created) < k.lifetime {
			keep = append(keep, k.keys[i])
		} else {
			clear(k.keys[i].key[:])
		}
	}
	k.keys = keep
	raw := make([][32]byte, len(keep))
	for i := range keep {
		raw[i] = keep[i].key
	}
	k.holder.SetSessionTicketKeys(raw)
	clear(raw)
	// Due at the next rotation, or sooner when the oldest key reaches
	// its lifetime, so no key decrypts past it.
	due := now.Add(k.rotation)
	if end := keep[len(keep)-1].created.Add(k.lifetime); end.Before(due) {
		due = end
	}
	k.due.Store(due.UnixNano())
	return nil
}

// maybeRotate rotates when a rotation is due. A failure to read random
// bytes keeps the current keys (tickets then live a little longer) and
// is returned.
func (k *TicketKeys) maybeRotate() error {
	now := k.now()
	if now.UnixNano() < k.due.Load() {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.UnixNano() < k.due.Load() {
		return nil
	}
	return k.rotateLocked(now)
}

// Len reports how many keys are held (for tests and status).
func (k *TicketKeys) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.keys)
}

// wrap has the signature of tls.Config.WrapSession.
func (k *TicketKeys) wrap(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	if err := k.maybeRotate(); err != nil {
		return nil, err
	}
	return k.holder.EncryptTicket(cs, ss)
}

// unwrap has the signature of tls.Config.UnwrapSession: a ticket no key
// opens (another service's, from before a restart, too old) gives
// (nil, nil), a full handshake.
func (k *TicketKeys) unwrap(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	if err := k.maybeRotate(); err != nil {
		return nil, nil // a full handshake, not a failed one
	}
	return k.holder.DecryptTicket(identity, cs)
}

// Apply makes cfg seal its session tickets with k and returns cfg. A nil
// k leaves cfg as it is (crypto/tls then keys tickets per Config).
func (k *TicketKeys) Apply(cfg *tls.Config) *tls.Config {
	if k == nil || cfg == nil {
		return cfg
	}
	cfg.WrapSession = k.wrap
	cfg.UnwrapSession = k.unwrap
	return cfg
}

// TicketStore holds the TicketKeys of each service by name, made on first
// use. Each service has keys of its own, so a ticket issued on one port
// (HTTPS, say) never resumes on another (SMTP). The zero value is ready
// to use; it is safe for concurrent use.
type TicketStore struct {
	// Options are used for the keys made from now on.
	Options TicketOptions

	mu sync.Mutex
	m  map[string]*TicketKeys
}

// For returns the keys of the named service, making them on first use.
// If no random key can be made it returns nil, and Apply(nil) leaves a
// config with crypto/tls's own per-config keys.
func (s *TicketStore) For(name string) *TicketKeys {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.m[name]; k != nil {
		return k
	}
	k, err := NewTicketKeys(s.Options)
	if err != nil {
		return nil
	}
	if s.m == nil {
		s.m = make(map[string]*TicketKeys)
	}
	s.m[name] = k
	return k
}
