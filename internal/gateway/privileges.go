package gateway

import (
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// dropPrivileges switches to the run_as user once the ports are bound.
func dropPrivileges(name string, log *slog.Logger) error {
	if name == "" {
		if os.Geteuid() == 0 {
			log.Warn("running as root: set run_as to an unprivileged user")
		}
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return runAsError(name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if os.Geteuid() == uid {
		return nil
	}
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return runAsError(name, fmt.Errorf("setgroups: %w", err))
	}
	if err := syscall.Setgid(gid); err != nil {
		return runAsError(name, fmt.Errorf("setgid: %w", err))
	}
	if err := syscall.Setuid(uid); err != nil {
		return runAsError(name, fmt.Errorf("setuid: %w", err))
	}
	log.Info("dropped privileges", "user", name, "uid", uid, "gid", gid)
	return nil
}
