package main

import (
	"time"

	"github.com/postern/postern/bench/internal/procstat"
)

// cpuSnap is a reading of every CPU counter the report uses.
type cpuSnap struct {
	at                     time.Time
	postern, postfix, dove float64
	self                   float64
	busy, total            float64
	syscr, syscw           float64
}

type procSet struct{ postern, postfix, dovecot int }

func (ps procSet) snap() cpuSnap {
	s := cpuSnap{at: time.Now(), self: procstat.SelfCPU()}
	if ps.postern > 0 {
		s.postern = procstat.ProcCPU(ps.postern)
		s.syscr, s.syscw = procstat.ProcIO(ps.postern)
	}
	s.postfix = procstat.TreeCPU(ps.postfix)
	s.dove = procstat.TreeCPU(ps.dovecot)
	s.busy, s.total = procstat.MachineCPU()
	return s
}

// cpuUse is CPU seconds spent between two snapshots.
type cpuUse struct {
	wall                   float64
	postern, postfix, dove float64
	gen                    float64
	busyFrac               float64 // of all CPUs
	busyCores              float64 // the whole machine, in cores
	syscr, syscw           float64 // postern's
}

// other is the CPU (in cores) the machine spent outside postern, Postfix,
// Dovecot and this program: other processes, kernel threads, interrupts.
func (u cpuUse) other() float64 {
	return u.busyCores - (u.postern+u.postfix+u.dove+u.gen)/u.wall
}

func diff(a, b cpuSnap) cpuUse {
	u := cpuUse{
		wall: b.at.Sub(a.at).Seconds(), postern: b.postern - a.postern, postfix: b.postfix - a.postfix,
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
