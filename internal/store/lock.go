//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package store

import (
	"errors"
	"os"
	"syscall"
)

// errLockHeld reports that someone else holds the lock.
var errLockHeld = errors.New("lock held")

// fileLock is an exclusive flock(2) on a lock file beside the store. The
// kernel releases it when the process dies, however it dies. The lock file
// is never removed: removing it would let a second process lock a new file
// of the same name while the first still holds the old one.
type fileLock struct {
	f *os.File
}

// acquireLock creates path if needed (mode 0600) and takes an exclusive,
// non-blocking lock on it. flock locks belong to the open file description,
// so a second acquireLock of the same path fails even inside one process.
func acquireLock(path string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			lerr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
			if lerr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		f.Close()
		return nil, err
	}
	if lerr != nil {
		f.Close()
		if errors.Is(lerr, syscall.EWOULDBLOCK) {
			return nil, errLockHeld
		}
		return nil, &os.PathError{Op: "flock", Path: path, Err: lerr}
	}
	return &fileLock{f: f}, nil
}

// release drops the lock.
func (l *fileLock) release() error {
	return l.f.Close() // closing the only descriptor releases the flock
}
