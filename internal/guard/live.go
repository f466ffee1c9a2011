package guard

import (
	"net/netip"
	"sync"

	"github.com/postern/postern/internal/service"
)

const liveShards = 32

// liveSessions indexes open sessions by address, so a block can close the
// connections it concerns. Each address's sessions are a list linked
// through the sessions themselves (Session.liveNext): opening and closing
// one allocates nothing, where a set per address cost two allocations for
// most connections (one session an address).
type liveSessions struct {
	shards [liveShards]struct {
		mu sync.Mutex
		m  map[netip.Addr]*Session // the last session opened from each address
	}
}

func (l *liveSessions) init() {
	for i := range l.shards {
		l.shards[i].m = make(map[netip.Addr]*Session)
	}
}

func (l *liveSessions) shard(a netip.Addr) int {
	b := a.As16()
	return int(b[15]^b[14]^b[11]^b[7]) % liveShards
}

func (l *liveSessions) add(s *Session) {
	sh := &l.shards[l.shard(s.addr)]
	sh.mu.Lock()
	if !s.inLive {
		s.inLive = true
		s.livePrev = nil
		s.liveNext = sh.m[s.addr]
		if s.liveNext != nil {
			s.liveNext.livePrev = s
		}
		sh.m[s.addr] = s
	}
	sh.mu.Unlock()
}

func (l *liveSessions) remove(s *Session) {
	sh := &l.shards[l.shard(s.addr)]
	sh.mu.Lock()
	if s.inLive {
		switch {
		case s.livePrev != nil:
			s.livePrev.liveNext = s.liveNext
		case s.liveNext != nil:
			sh.m[s.addr] = s.liveNext
		default:
			delete(sh.m, s.addr)
		}
		if s.liveNext != nil {
			s.liveNext.livePrev = s.livePrev
		}
		s.inLive, s.livePrev, s.liveNext = false, nil, nil
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
		for a, first := range sh.m {
			if !p.Contains(a) {
				continue
			}
			for s := first; s != nil; s = s.liveNext {
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
		for _, first := range sh.m {
			for s := first; s != nil; s = s.liveNext {
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
		for _, first := range sh.m {
			for s := first; s != nil; s = s.liveNext {
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}
