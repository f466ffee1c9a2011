package admin

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerUser names the OS user of the process at the other end of a unix
// socket (SO_PEERCRED: the credentials the kernel took at connect, which
// the client cannot forge); "" when they cannot be read.
func peerUser(c *net.UnixConn) string {
	rc, err := c.SyscallConn()
	if err != nil {
		return ""
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil || cred == nil {
		return ""
	}
	return userName(cred.Uid)
}
