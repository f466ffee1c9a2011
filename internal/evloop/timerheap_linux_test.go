package evloop

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The timer heap gives the deadlines back in order through any mix of
// pushes, removals from the middle and pops, and every task knows its
// index (-1 once out).
func TestTimerHeap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h timerHeap
	in := map[*task]bool{}
	check := func(step int) {
		t.Helper()
		for i, x := range h {
			if x.heapIdx != i {
				t.Fatalf("step %d: task at %d says %d", step, i, x.heapIdx)
			}
			if i > 0 && h[(i-1)/2].deadline > x.deadline {
				t.Fatalf("step %d: parent of %d is later", step, i)
			}
		}
		if len(h) != len(in) {
			t.Fatalf("step %d: %d in the heap, want %d", step, len(h), len(in))
		}
	}
	for step := range 20000 {
		switch op := r.IntN(10); {
		case op < 5 || len(h) == 0:
			x := &task{deadline: r.Int64N(1000) + 1, heapIdx: -1}
			h.push(x)
			in[x] = true
		case op < 8:
			x := h[r.IntN(len(h))]
			h.remove(x.heapIdx)
			if x.heapIdx != -1 {
				t.Fatalf("step %d: a removed task keeps index %d", step, x.heapIdx)
			}
			delete(in, x)
		default:
			min := h.next()
			x := h.pop()
			if x.deadline != min {
				t.Fatalf("step %d: pop gave %d, next said %d", step, x.deadline, min)
			}
			for y := range in {
				if y.deadline < x.deadline {
					t.Fatalf("step %d: pop gave %d with %d still in", step, x.deadline, y.deadline)
				}
			}
			delete(in, x)
		}
		check(step)
	}
	var got []int64
	for len(h) > 0 {
		got = append(got, h.pop().deadline)
	}
	if !slices.IsSorted(got) {
		t.Fatalf("drained out of order: %v", got)
	}
	if h.next() != 0 {
		t.Fatal("an empty heap has a next deadline")
	}
}
