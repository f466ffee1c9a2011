package netlisten

import (
	"math/rand/v2"
	"testing"
)

// TestConnListModel adds and removes connections at random and checks
// the list against a set: the same members, the same count, each once.
func TestConnListModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([]*Conn, 64)
	for i := range pool {
		pool[i] = new(Conn)
	}
	var l connList
	set := map[*Conn]bool{}
	for step := range 20000 {
		c := pool[rng.IntN(len(pool))]
		if set[c] {
			l.remove(c)
			delete(set, c)
		} else {
			l.add(c)
			set[c] = true
		}
		if step%97 != 0 {
			continue
		}
		seen := map[*Conn]bool{}
		var prev *Conn
		for c := l.head; c != nil; c = c.next {
			if seen[c] || !set[c] || !c.listed || c.prev != prev {
				t.Fatalf("step %d: a member twice, not in the set, unmarked or mislinked", step)
			}
			seen[c], prev = true, c
		}
		if len(seen) != len(set) || l.n != len(set) {
			t.Fatalf("step %d: %d listed, n %d, %d in the set", step, len(seen), l.n, len(set))
		}
	}
}
