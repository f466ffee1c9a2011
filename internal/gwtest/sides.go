package gwtest

import (
	"errors"
	"sync"
)

// BothSides calls ask(i, side) for every i below n on each side (0: a
// backend directly, 1: the gateway in front of it, in the differential
// tests), at most limit calls at a time, and returns the answers by side
// once every call has returned, with the errors joined.
func BothSides[T any](n, limit int, ask func(i, side int) (T, error)) (direct, through []T, err error) {
	answers := [2][]T{make([]T, n), make([]T, n)}
	errs := make([]error, 2*n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, limit)
	for i := range n {
		for side := range 2 {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				answers[side][i], errs[2*i+side] = ask(i, side)
			})
		}
	}
	wg.Wait()
	return answers[0], answers[1], errors.Join(errs...)
}
