package metrics

import (
	"math/rand/v2"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counterShards is how many cells a hot counter is spread over: the
// engine's events and connections are counted from every core at once,
// and one shared atomic would make each core wait for the cache line.
const counterShards = 16

type counterCell struct {
	n atomic.Uint64
	_ [56]byte // a cache line each
}

// shardedCounter is a counter incremented from many goroutines at once:
// each increment goes to a cell chosen at random (the runtime's per-thread
// generator, no shared state), a scrape adds the cells up.
type shardedCounter struct {
	cells [counterShards]counterCell
}

// Inc adds one.
func (c *shardedCounter) Inc() { c.cells[rand.Uint32()&(counterShards-1)].n.Add(1) }

func (c *shardedCounter) value() uint64 {
	var sum uint64
	for i := range c.cells {
		sum += c.cells[i].n.Load()
	}
	return sum
}

// counterFamily is a counter metric with labels whose series are all made
// in advance (with) and incremented without a label lookup.
type counterFamily struct {
	desc   *prometheus.Desc
	series []familySeries
}

type familySeries struct {
	labels []string
	c      *shardedCounter
}

func newCounterFamily(name, help string, labels ...string) *counterFamily {
	return &counterFamily{desc: prometheus.NewDesc(name, help, labels, nil)}
}

// with makes the series of the label values; call it before the family is
// registered, never concurrently with a scrape.
func (f *counterFamily) with(values ...string) *shardedCounter {
	c := new(shardedCounter)
	f.series = append(f.series, familySeries{labels: values, c: c})
	return c
}

func (f *counterFamily) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

func (f *counterFamily) Collect(ch chan<- prometheus.Metric) {
	for _, s := range f.series {
		ch <- prometheus.MustNewConstMetric(f.desc, prometheus.CounterValue, float64(s.c.value()), s.labels...)
	}
}
