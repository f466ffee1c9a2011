// Package sdnotify tells the service manager (systemd) what the gateway is
// doing: READY=1 once it serves, RELOADING=1 while it reloads its
// configuration (with the monotonic time Type=notify-reload asks for),
// STOPPING=1 when it shuts down, STATUS= lines, and WATCHDOG=1 keep-alives
// when the unit sets WatchdogSec.
//
// The protocol is one datagram per message on the unix socket named by
// NOTIFY_SOCKET (a path, or an abstract name starting with "@"), which is
// all sd_notify(3) does; so postern writes it itself rather than depend on
// a library for twenty lines.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Notifier sends notifications to the service manager. A nil *Notifier
// (not started by one) does nothing.
type Notifier struct {
	addr     *net.UnixAddr
	watchdog time.Duration
}

// FromEnv returns a Notifier for the socket named by NOTIFY_SOCKET, or nil
// when it is not set. The watchdog interval is WATCHDOG_USEC's, when
// WATCHDOG_PID is unset or this process's.
func FromEnv() *Notifier { return fromEnv(os.Getenv, os.Getpid()) }

func fromEnv(getenv func(string) string, pid int) *Notifier {
	sock := getenv("NOTIFY_SOCKET")
	if sock == "" || (sock[0] != '/' && sock[0] != '@') {
		return nil
	}
	n := &Notifier{addr: &net.UnixAddr{Net: "unixgram", Name: sock}}
	if sock[0] == '@' {
		n.addr.Name = "\x00" + sock[1:]
	}
	if us, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
		if p := getenv("WATCHDOG_PID"); p == "" || p == strconv.Itoa(pid) {
			n.watchdog = time.Duration(us) * time.Microsecond
		}
	}
	return n
}

// Send sends one notification: newline-separated KEY=VALUE lines.
func (n *Notifier) Send(state string) error {
	if n == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if err := c.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready says the gateway serves (at start, and after a reload).
func (n *Notifier) Ready(status string) error {
	return n.Send("READY=1\n" + statusLine(status))
}

// Reloading says a configuration reload has begun. MONOTONIC_USEC is the
// CLOCK_MONOTONIC time, which Type=notify-reload needs to match the
// notification to the reload it asked for.
func (n *Notifier) Reloading() error {
	if n == nil {
		return nil
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("sd_notify: monotonic clock: %w", err)
	}
	us := ts.Nano() / 1e3
	return n.Send("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(us, 10) + "\n" + statusLine("reloading the configuration"))
}

// Stopping says the gateway is shutting down.
func (n *Notifier) Stopping() error { return n.Send("STOPPING=1\n" + statusLine("stopping")) }

// Status sets the unit's status text (systemctl status).
func (n *Notifier) Status(s string) error { return n.Send(statusLine(s)) }

func statusLine(s string) string {
	if s == "" {
		return ""
	}
	return "STATUS=" + strings.ReplaceAll(s, "\n", " ") + "\n"
}

// WatchdogInterval returns the watchdog timeout the service manager set,
// 0 when none.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Watchdog sends WATCHDOG=1 every half of the watchdog timeout while
// healthy reports nil, until ctx is done. A gateway that stops answering
// (healthy blocks or fails) stops the keep-alives and the service manager
// restarts it. It returns at once when no watchdog is set.
func (n *Notifier) Watchdog(ctx context.Context, healthy func() error) {
	iv := n.WatchdogInterval()
	if iv <= 0 {
		return
	}
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if healthy == nil || healthy() == nil {
				_ = n.Send("WATCHDOG=1\n")
			}
		}
	}
}
