package guard

import (
	"net/netip"
	"sync"

	"github.com/postern/postern/internal/service"
)

const liveShards = 32

// liveSessions indexes open sessions by address, so a block can close the
// connections it concerns.
type liveSessions struct {
	shards [liveShards]struct {
		mu sync.Mutex
		m  map[netip.Addr]map[*Session]struct{}
	}
}

func (l *liveSessions) init() {
	for i := range l.shards {
		l.shards[i].m = make(map[netip.Addr]map[*Session]struct{})
	}
}

func (l *liveSessions) shard(a netip.Addr) int {
	b := a.As16()
	return int(b[15]^b[14]^b[11]^b[7]) % liveShards
}

func (l *liveSessions) add(s *Session) {
	sh := &l.shards[l.shard(s.addr)]
	sh.mu.Lock()
	m := sh.m[s.addr]
	if m == nil {
		m = make(map[*Session]struct{}, 1)
		sh.m[s.addr] = m
	}
	m[s] = struct{}{}
	sh.mu.Unlock()
}

func (l *liveSessions) remove(s *Session) {
	sh := &l.shards[l.shard(s.addr)]
	sh.mu.Lock()
	if m := sh.m[s.addr]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(sh.m, s.addr)
		}
	}
	sh.mu.Unlock()
}

// closeIn closes every live session whose address is in p, except skip,
// and returns how many it closed. Closers run outside the locks.
func (l *liveSessions) closeIn(p netip.Prefix, skip *Session) int {
	var victims []*Session
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for a, m := range sh.m {
			if !p.Contains(a) {
				continue
			}
			for s := range m {
				if s != skip {
					victims = append(victims, s)
				}
			}
		}
		sh.mu.Unlock()
	}
	for _, s := range victims {
		s.kill()
	}
	return len(victims)
}

// count returns the number of live sessions.
// countByService adds each open session to its service's count.
func (l *liveSessions) countByService(n *[service.Count]int) {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for _, m := range sh.m {
			for s := range m {
				if s.service.Valid() {
					n[s.service]++
				}
			}
		}
		sh.mu.Unlock()
	}
}

func (l *liveSessions) count() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for _, m := range sh.m {
			n += len(m)
		}
		sh.mu.Unlock()
	}
	return n
}
