//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package store

import (
	"errors"
	"fmt"
	"runtime"
)

var errLockHeld = errors.New("lock held")

type fileLock struct{}

// acquireLock fails: the embedded store needs flock(2), which this platform
// does not offer.
func acquireLock(path string) (*fileLock, error) {
	return nil, fmt.Errorf("the embedded store needs flock(2), which %s does not offer", runtime.GOOS)
}

func (l *fileLock) release() error { return nil }
