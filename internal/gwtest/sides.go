package gwtest

import (
	"errors"
	"sync"
	"time"
)

// BothSides calls ask(i, side) for every i below n on each side (0: a
// backend directly, 1: the gateway in front of it, in the differential
// tests), at most limit calls at a time, and returns the answers by side
// once every call has returned, with the errors joined. An ask that
// meets Dovecot's per-user-and-address limit (ErrUserIPLimit) is asked
// again (retry).
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
				errs[2*i+side] = retry(func() error {
					var err error
					answers[side][i], err = ask(i, side)
					return err
				})
			})
		}
	}
	wg.Wait()
	return answers[0], answers[1], errors.Join(errs...)
}

// UserIPLimit is how Dovecot's answer begins to say that a login went
// over mail_max_userip_connections (10 by default): too many sessions of
// one user from one address at once, which the differential tests'
// concurrent logins can reach.
const UserIPLimit = "Maximum number of connections from user+IP exceeded"

// ErrUserIPLimit is an ask that met UserIPLimit: BothSides asks again.
var ErrUserIPLimit = errors.New("dovecot: " + UserIPLimit)

// retry calls ask until it returns anything but ErrUserIPLimit, at most
// 100 times, 50 ms apart, and returns its last error.
func retry(ask func() error) error {
	var err error
	for range 100 {
		if err = ask(); !errors.Is(err, ErrUserIPLimit) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}
