package evloop

// timerHeap orders waiting tasks by deadline: a binary min-heap on the
// tasks' deadlines, each task keeping its index (heapIdx, -1 when it is
// not in the heap) so that a resumed task leaves it in O(log n). Written
// out rather than through container/heap: a loop pushes and removes a
// task at every wait with a deadline, and the interface's calls were a
// measurable share of a login's CPU.
type timerHeap []*task

// next returns the earliest deadline, 0 for none.
func (h timerHeap) next() int64 {
	if len(h) == 0 {
		return 0
	}
	return h[0].deadline
}

// push adds t, whose deadline is set.
func (h *timerHeap) push(t *task) {
	t.heapIdx = len(*h)
	*h = append(*h, t)
	h.up(t.heapIdx)
}

// pop removes and returns the task with the earliest deadline; the heap
// must not be empty.
func (h *timerHeap) pop() *task {
	t := (*h)[0]
	h.remove(0)
	return t
}

// remove takes out the task at index i.
func (h *timerHeap) remove(i int) {
	s := *h
	n := len(s) - 1
	t := s[i]
	if i != n {
		s[i] = s[n]
		s[i].heapIdx = i
	}
	s[n] = nil
	*h = s[:n]
	if i != n {
		if !h.down(i) {
			h.up(i)
		}
	}
	t.heapIdx = -1
}

func (h timerHeap) up(i int) {
	t := h[i]
	for i > 0 {
		p := (i - 1) / 2
		if h[p].deadline <= t.deadline {
			break
		}
		h[i] = h[p]
		h[i].heapIdx = i
		i = p
	}
	h[i] = t
	t.heapIdx = i
}

// down sinks the task at i; true when it moved.
func (h timerHeap) down(i0 int) bool {
	i, n, t := i0, len(h), h[i0]
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && h[r].deadline < h[c].deadline {
			c = r
		}
		if h[c].deadline >= t.deadline {
			break
		}
		h[i] = h[c]
		h[i].heapIdx = i
		i = c
	}
	h[i] = t
	t.heapIdx = i
	return i != i0
}
