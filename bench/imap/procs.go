package main

import (
	"time"

	"github.com/postern/postern/bench/internal/procstat"
)

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
	s := cpuSnap{at: time.Now(), self: procstat.SelfCPU()}
	if ps.postern > 0 {
		s.postern = procstat.ProcCPU(ps.postern)
		s.syscr, s.syscw = procstat.ProcIO(ps.postern)
	}
	s.dove = procstat.TreeCPU(ps.dovecot)
	s.busy, s.total = procstat.MachineCPU()
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
		u.busyCores = (b.busy - a.busy) / procstat.ClockTicks / u.wall
	}
	return u
}
