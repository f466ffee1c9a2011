package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const clockTicks = 100

// procTimes returns utime+stime (self) and cutime+cstime (reaped
// children) of pid in seconds, and its parent.
func procTimes(pid int) (self, children float64, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields follow the
	// last ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
	if len(f) < 15 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	num := func(k int) float64 { v, _ := strconv.ParseFloat(f[k-3], 64); return v }
	ppid = int(num(4))
	return (num(14) + num(15)) / clockTicks, (num(16) + num(17)) / clockTicks, ppid, nil
}

// procCPU returns the CPU seconds pid itself has used.
func procCPU(pid int) float64 {
	s, _, _, err := procTimes(pid)
	if err != nil {
		return 0
	}
	return s
}

// treeCPU returns the CPU seconds of the process tree under root: every
// live process in it (itself and its reaped children), so a child that
// exits between two readings moves its time from its own entry to its
// parent's and is counted once. Dovecot's imap-login, imap, pop3-login, pop3 and
// auth are children of its master.
func treeCPU(root int) float64 {
	if root <= 0 {
		return 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	type p struct {
		ppid      int
		self, chl float64
	}
	all := map[int]p{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, c, pp, err := procTimes(pid)
		if err != nil {
			continue
		}
		all[pid] = p{pp, s, c}
	}
	in := func(pid int) bool {
		for i := 0; i < 64 && pid > 1; i++ {
			if pid == root {
				return true
			}
			pid = all[pid].ppid
		}
		return pid == root
	}
	var sum float64
	for pid, v := range all {
		if in(pid) {
			sum += v.self + v.chl
		}
	}
	return sum
}

// selfCPU is this process's CPU time (the load generator, the relay floor
// and the in-process IMAP backend).
func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// machineCPU returns busy and total jiffies of all CPUs from /proc/stat.
func machineCPU() (busy, total float64) {
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

// procIO returns pid's read and write system calls (/proc/PID/io).
func procIO(pid int) (syscr, syscw float64) {
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

// statusKB returns a "VmRSS:"-style field of /proc/PID/status in KiB.
func statusKB(pid int, field string) int64 {
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

// openFilesLimit returns the "Max open files" line of /proc/PID/limits.
func openFilesLimit(pid int) string {
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

// settledRSS waits until pid's RSS stops moving (two samples 300 ms apart
// within 64 KiB, at most 6 s) and returns it in KiB.
func settledRSS(pid int) int64 {
	prev := statusKB(pid, "VmRSS")
	for i := 0; i < 20; i++ {
		time.Sleep(300 * time.Millisecond)
		cur := statusKB(pid, "VmRSS")
		if d := cur - prev; d < 64 && d > -64 {
			return cur
		}
		prev = cur
	}
	return prev
}

// cpuSnap is a reading of every CPU counter the report uses.
type cpuSnap struct {
	at            time.Time
	postern, dove float64
	self          float64
	busy, total   float64
	syscr, syscw  float64
}

// procSet names the processes whose CPU is reported: postern serve (0 on
// the sides that do not use it) and Dovecot's master (its whole tree).
type procSet struct{ postern, dovecot int }

func (ps procSet) snap() cpuSnap {
	s := cpuSnap{at: time.Now(), self: selfCPU()}
	if ps.postern > 0 {
		s.postern = procCPU(ps.postern)
		s.syscr, s.syscw = procIO(ps.postern)
	}
	s.dove = treeCPU(ps.dovecot)
	s.busy, s.total = machineCPU()
	return s
}

// cpuUse is CPU seconds spent between two snapshots.
type cpuUse struct {
	wall          float64
	postern, dove float64
	gen           float64
	busyFrac      float64 // of all CPUs
	busyCores     float64 // the whole machine, in cores
	syscr, syscw  float64 // postern's
}

// other is the CPU (in cores) the machine spent outside postern, Dovecot
// and this program: other processes (Postfix too), kernel threads,
// interrupts.
func (u cpuUse) other() float64 {
	if u.wall <= 0 {
		return 0
	}
	return u.busyCores - (u.postern+u.dove+u.gen)/u.wall
}

func diff(a, b cpuSnap) cpuUse {
	u := cpuUse{
		wall: b.at.Sub(a.at).Seconds(), postern: b.postern - a.postern,
		dove: b.dove - a.dove, gen: b.self - a.self, syscr: b.syscr - a.syscr, syscw: b.syscw - a.syscw,
	}
	if t := b.total - a.total; t > 0 {
		u.busyFrac = (b.busy - a.busy) / t
	}
	if u.wall > 0 {
		u.busyCores = (b.busy - a.busy) / clockTicks / u.wall
	}
	return u
}

// fdCount returns how many file descriptors pid has open (sockets and the
// pipes Go's splice(2) path holds).
func fdCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}
