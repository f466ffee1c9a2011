package gateway

import (
	"errors"
	"fmt"
	"os/user"
	"syscall"
)

// fixError is a start-up error in the administrator's words: what failed,
// why, and what to do. It wraps the cause for errors.Is.
type fixError struct {
	what string // "service smtp cannot listen on :25"
	why  error
	fix  string // "" when there is no known remedy
}

func (e *fixError) Error() string {
	msg := e.what + ": " + errnoText(e.why)
	if e.fix != "" {
		msg += ". Fix: " + e.fix
	}
	return msg
}

func (e *fixError) Unwrap() error { return e.why }

// errnoText is the operating system's reason when err carries one (not the
// whole chain of wrapping contexts), else err's text.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// listenError explains why a service's listener could not be opened.
func listenError(service, addr string, err error) error {
	e := &fixError{what: fmt.Sprintf("service %s cannot listen on %s", service, addr), why: err}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		e.fix = "another program listens there — typically the mail server still on its public port. " +
			"Move it to a backend port on loopback (Postfix: master.cf, Dovecot: the inet_listener; see examples/), " +
			"point this service's backend at it, then start postern; `ss -ltnp` shows who holds the port"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		e.fix = "ports below 1024 need root or CAP_NET_BIND_SERVICE: start postern as root (it drops to run_as after binding) " +
			"or through its systemd unit (examples/systemd/postern.service grants the capability)"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		e.fix = "no interface of this host has that address: listen on an address of this machine, or on \":port\" for all of them"
	default:
		return fmt.Errorf("service %s cannot listen on %s: %w", service, addr, err)
	}
	return e
}

// runAsError explains a run_as user that cannot be taken on.
func runAsError(name string, err error) error {
	var unknown user.UnknownUserError
	switch {
	case errors.As(err, &unknown):
		return &fixError{what: fmt.Sprintf("run_as: user %q does not exist", name), why: err,
			fix: fmt.Sprintf("create it (useradd --system --home-dir /var/lib/postern --shell /usr/sbin/nologin %s) or remove run_as", name)}
	case errors.Is(err, syscall.EPERM):
		return &fixError{what: fmt.Sprintf("run_as: cannot switch to user %q", name), why: err,
			fix: "only root can switch users: start postern as root, or leave run_as out when it starts as that user already"}
	}
	return fmt.Errorf("run_as %s: %w", name, err)
}

// storeError explains a block store that cannot be opened.
func storeError(path string, err error) error {
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EROFS) {
		return &fixError{what: "cannot open the block store " + path, why: err,
			fix: "the directory and file must be writable by the user postern runs as (run_as): chown that user " +
				"the directory of store.path (default /var/lib/postern), or set store.path to a writable place"}
	}
	return err
}
