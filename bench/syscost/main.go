//go:build linux

// Command syscost measures what one system call of each kind a loop turn
// makes costs on this machine, called in a tight loop from one thread:
// getppid (the entry and exit alone), a read that finds nothing
// (EAGAIN), an epoll_wait that finds nothing, and timerfd_settime. It
// prints the mean time a call. Linux only.
//
//	GOTOOLCHAIN=local go run ./bench/syscost [-n 200000]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	n := flag.Int("n", 200_000, "calls of each kind")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "syscost:", err)
		os.Exit(1)
	}
}

func run(n int) error {
	runtime.LockOSThread()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fds[0], &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fds[0])}); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("timerfd_create: %w", err)
	}
	defer unix.Close(tfd)
	buf := make([]byte, 64)
	evs := make([]unix.EpollEvent, 8)
	measure := func(name string, call func(i int)) {
		start := time.Now()
		for i := range n {
			call(i)
		}
		fmt.Printf("%-28s %v a call\n", name, time.Since(start)/time.Duration(n))
	}
	measure("getppid", func(int) { syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0) })
	measure("read, nothing there", func(int) { unix.Read(fds[0], buf) })
	measure("epoll_wait, nothing ready", func(int) { unix.EpollWait(ep, evs, 0) })
	measure("timerfd_settime", func(i int) {
		its := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(time.Hour) + int64(i))}
		unix.TimerfdSettime(tfd, 0, &its, nil)
	})
	return nil
}
