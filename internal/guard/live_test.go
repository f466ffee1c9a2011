package guard

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/postern/postern/internal/service"
)

// The address lists of live sessions agree with a set per address through
// random opens and closes (twice, and of sessions never opened, included):
// the count, the count by service, and closeIn over prefixes with a
// session spared.
func TestLiveSessionsModel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var l liveSessions
	l.init()
	model := map[*Session]bool{}
	addrs := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"),
		netip.MustParseAddr("198.51.100.9"), netip.MustParseAddr("2001:db8::1"),
	}
	var all []*Session
	for i := range 3000 {
		switch op := r.IntN(10); {
		case op < 5 || len(all) == 0:
			s := &Session{addr: addrs[r.IntN(len(addrs))], service: service.SMTP + service.Service(r.IntN(int(service.Console-service.SMTP)+1))}
			all = append(all, s)
			l.add(s)
			model[s] = true
		case op < 9:
			s := all[r.IntN(len(all))]
			l.remove(s) // perhaps closed already
			delete(model, s)
		default:
			s := all[r.IntN(len(all))]
			l.add(s) // again: no second entry
			if !model[s] {
				// A closed session added again is open again.
				model[s] = true
			}
		}
		if i%100 != 0 {
			continue
		}
		if got := l.count(); got != len(model) {
			t.Fatalf("step %d: count %d, want %d", i, got, len(model))
		}
		var want, got [service.Count]int
		for s := range model {
			want[s.service]++
		}
		l.countByService(&got)
		if got != want {
			t.Fatalf("step %d: by service %v, want %v", i, got, want)
		}
	}
	// closeIn: the sessions of 192.0.2.0/24 but one are killed, and only
	// they; none is closed twice (kill's Once), the rest stay listed.
	p := netip.MustParsePrefix("192.0.2.0/24")
	var skip *Session
	want := 0
	for s := range model {
		if p.Contains(s.addr) {
			if skip == nil {
				skip = s
				continue
			}
			want++
		}
	}
	if got := l.closeIn(p, skip); got != want {
		t.Fatalf("closeIn killed %d, want %d", got, want)
	}
	for s := range model {
		if p.Contains(s.addr) && s != skip != s.killed.Load() {
			t.Fatalf("session of %v: killed %v", s.addr, s.killed.Load())
		}
	}
}
