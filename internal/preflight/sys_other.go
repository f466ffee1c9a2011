//go:build !unix

package preflight

import (
	"io/fs"
	"net/netip"
)

func owner(fs.FileInfo) (uid, gid uint32, ok bool) { return 0, 0, false }
func userName(uid uint32) string                   { return "" }
func groupName(gid uint32) string                  { return "" }

var errInUse, errDenied, errNotLocal error

// probeBind has no probe off unix: it reports nothing.
func probeBind(netip.AddrPort) error { return nil }
