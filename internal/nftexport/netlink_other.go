//go:build !linux

package nftexport

import (
	"errors"
	"fmt"
)

// Netlink is the Target of the kernel's nftables. nftables is Linux's, so
// there is none on this system.
type Netlink struct{}

// errNotLinux says why Open fails here.
var errNotLinux = errors.New("nftables is Linux only: turn nftables.enabled off on this system")

// Open fails: nftables is Linux only.
func Open(c Config, netns int) (*Netlink, error) {
	return nil, fmt.Errorf("nftables export: table %s %s: %w", c.Family, c.Table, errNotLinux)
}

// Close does nothing.
func (*Netlink) Close() error { return nil }

// List fails: see Open.
func (*Netlink) List() ([]Elem, error) { return nil, errNotLinux }

// Apply fails: see Open.
func (*Netlink) Apply(del []Range, add []Elem) error { return errNotLinux }
