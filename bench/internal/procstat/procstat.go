// Package procstat reads what the benchmarks report about processes from
// /proc: CPU time (of a process, of a process tree, of the machine), system
// calls, memory and open files. Linux only.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ClockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const ClockTicks = 100

// Times are the CPU times of one process from /proc/PID/stat, in seconds:
// its own in user and in system (kernel) mode, those of its reaped
// children, and its parent. The kernel splits a thread's run time between
// user and system in proportion to the clock ticks that found it in each,
// so over a window of a few seconds the split is a sample (within a few
// per cent), while their sum is exact.
type Times struct {
	User, System           float64
	ChildUser, ChildSystem float64
	PPID                   int
}

// ReadTimes reads pid's Times.
func ReadTimes(pid int) (Times, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Times{}, err
	}
	// The command name may hold spaces and parentheses: fields follow the
	// last ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Times{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
	if len(f) < 15 {
		return Times{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	num := func(k int) float64 { v, _ := strconv.ParseFloat(f[k-3], 64); return v }
	return Times{
		User: num(14) / ClockTicks, System: num(15) / ClockTicks,
		ChildUser: num(16) / ClockTicks, ChildSystem: num(17) / ClockTicks,
		PPID: int(num(4)),
	}, nil
}

// ProcTimes returns utime+stime (self) and cutime+cstime (reaped
// children) of pid in seconds, and its parent.
func ProcTimes(pid int) (self, children float64, ppid int, err error) {
	t, err := ReadTimes(pid)
	if err != nil {
		return 0, 0, 0, err
	}
	return t.User + t.System, t.ChildUser + t.ChildSystem, t.PPID, nil
}

// ProcSplit returns the CPU seconds pid itself has used in user and in
// system mode (zeros when it cannot be read).
func ProcSplit(pid int) (user, system float64) {
	t, err := ReadTimes(pid)
	if err != nil {
		return 0, 0
	}
	return t.User, t.System
}

// ProcCPU returns the CPU seconds pid itself has used.
func ProcCPU(pid int) float64 {
	s, _, _, err := ProcTimes(pid)
	if err != nil {
		return 0
	}
	return s
}

// TreeCPU returns the CPU seconds of the process tree under root: every
// live process in it (itself and its reaped children), so a child that
// exits between two readings moves its time from its own entry to its
// parent's and is counted once. Postfix's smtpd, cleanup, qmgr, lmtp… are
// children of its master; Dovecot's lmtp and auth of its master.
func TreeCPU(root int) float64 {
	u, s := TreeSplit(root)
	return u + s
}

// TreeSplit is TreeCPU in user and in system mode.
func TreeSplit(root int) (user, system float64) {
	if root <= 0 {
		return 0, 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0
	}
	all := map[int]Times{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if t, err := ReadTimes(pid); err == nil {
			all[pid] = t
		}
	}
	in := func(pid int) bool {
		for i := 0; i < 64 && pid > 1; i++ {
			if pid == root {
				return true
			}
			pid = all[pid].PPID
		}
		return pid == root
	}
	for pid, t := range all {
		if in(pid) {
			user += t.User + t.ChildUser
			system += t.System + t.ChildSystem
		}
	}
	return user, system
}

// SelfCPU is the calling process's CPU time in seconds.
func SelfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// MachineCPU returns busy and total jiffies of all CPUs from /proc/stat.
func MachineCPU() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, s := range f[1:] {
		v, _ := strconv.ParseFloat(s, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// ProcIO returns pid's read and write system calls (/proc/PID/io).
func ProcIO(pid int) (syscr, syscw float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
		switch k {
		case "syscr":
			syscr = n
		case "syscw":
			syscw = n
		}
	}
	return syscr, syscw
}

// ContextSwitches returns the context switches of every thread of pid so
// far, voluntary (a thread that went to sleep: waiting for a socket, a
// futex) and not (/proc/PID/task/*/status).
func ContextSwitches(pid int) float64 {
	dirs, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var n float64
	for _, d := range dirs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, d.Name()))
		if err != nil {
			continue // the thread ended
		}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(k, "voluntary_ctxt_switches") {
				x, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				n += x
			}
		}
	}
	return n
}

// StatusKB returns a "VmRSS:"-style field of /proc/PID/status in KiB.
func StatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// OpenFilesLimit returns the "Max open files" line of /proc/PID/limits.
func OpenFilesLimit(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Max open files") {
			f := strings.Fields(l)
			if len(f) >= 5 {
				return f[3] + " soft / " + f[4] + " hard"
			}
		}
	}
	return "?"
}

// SettledRSS waits until pid's RSS stops moving (two samples 300 ms apart
// within 64 KiB, at most 6 s) and returns it in KiB.
func SettledRSS(pid int) int64 {
	prev := StatusKB(pid, "VmRSS")
	for i := 0; i < 20; i++ {
		time.Sleep(300 * time.Millisecond)
		cur := StatusKB(pid, "VmRSS")
		if d := cur - prev; d < 64 && d > -64 {
			return cur
		}
		prev = cur
	}
	return prev
}

// FDCount returns how many file descriptors pid has open (sockets and the
// pipes Go's splice(2) path holds).
func FDCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}
