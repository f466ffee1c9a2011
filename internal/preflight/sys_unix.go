//go:build unix

package preflight

import (
	"errors"
	"io/fs"
	"net/netip"
	"os/user"
	"strconv"
	"syscall"
)

// owner returns a file's owner and group.
func owner(fi fs.FileInfo) (uid, gid uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, st.Gid, true
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return strconv.FormatUint(uint64(uid), 10)
}

func groupName(gid uint32) string {
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
		return g.Name
	}
	return strconv.FormatUint(uint64(gid), 10)
}

// Probe results.
var (
	errInUse    = errors.New("in use")
	errDenied   = errors.New("permission denied")
	errNotLocal = errors.New("not an address of this machine")
)

// probeBind binds a socket to ap with SO_REUSEADDR and closes it without
// listening: on Linux that succeeds unless a listening socket holds the
// address, so it takes no port from anyone and two probes never collide.
// A wildcard host (ap's address invalid) is probed as serve binds it: the
// IPv6 wildcard accepting IPv4 too, else the IPv4 one.
func probeBind(ap netip.AddrPort) error {
	addr := ap.Addr()
	family := syscall.AF_INET
	dual := false
	if !addr.IsValid() {
		addr, family, dual = netip.IPv6Unspecified(), syscall.AF_INET6, true
	} else if addr.Is6() && !addr.Is4In6() {
		family = syscall.AF_INET6
	}
	fd, err := probeSocket(family)
	if err != nil && dual {
		addr, family, dual = netip.IPv4Unspecified(), syscall.AF_INET, false
		fd, err = probeSocket(family)
	}
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return err
	}
	var sa syscall.Sockaddr
	if family == syscall.AF_INET6 {
		if dual {
			_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0)
		}
		sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: addr.As16()}
	} else {
		sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: addr.Unmap().As4()}
	}
	switch err := syscall.Bind(fd, sa); {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EADDRINUSE):
		return errInUse
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return errDenied
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return errNotLocal
	default:
		return err
	}
}

// probeSocket makes a TCP socket of family, closed on exec. It takes
// syscall.ForkLock as Go's net package does where SOCK_CLOEXEC is missing
// (macOS), so that no child started meanwhile inherits it.
func probeSocket(family int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	return fd, err
}
