//go:build !unix

package testenv

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

var errSlotBusy = errors.New("slot in use")

// lockSlot fails: the backends (Postfix, Dovecot) run on Linux only.
func lockSlot(string) (*os.File, error) {
	return nil, fmt.Errorf("the end-to-end backends need Linux, not %s", runtime.GOOS)
}
