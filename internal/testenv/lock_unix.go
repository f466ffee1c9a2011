//go:build unix

package testenv

import (
	"errors"
	"os"
	"syscall"
)

// errSlotBusy: another process holds the slot.
var errSlotBusy = errors.New("slot in use")

// lockSlot takes an exclusive, non-blocking flock(2) on path and keeps the
// file open for the life of the process: the kernel releases the lock when
// the test binary exits, however it exits, so a slot whose holder crashed
// is free again (and its leftover daemons are stopped by the next holder).
func lockSlot(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for range 100 { // EINTR retries, bounded
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errSlotBusy
		}
		return nil, err
	}
	return f, nil
}
