//go:build unix

package console

import (
	"os"
	"syscall"
)

// ownership is a file's owner and group.
type ownership struct{ uid, gid int }

func ownerOf(fi os.FileInfo) *ownership {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return &ownership{uid: int(st.Uid), gid: int(st.Gid)}
	}
	return nil
}
