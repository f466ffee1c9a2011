package guard

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/postern/postern/internal/store"
)

type opKind uint8

const (
	opPut opKind = iota
	opDelete
	opDeleteAll
	opPurge
)

// writeOp is one change to the store, queued in the order the in-memory
// table changed.
type writeOp struct {
	kind     opKind
	blocks   []store.Block
	prefixes []netip.Prefix
	before   time.Time
	done     chan error
}

// writeQueue orders store writes. Producers push while holding the
// engine's table lock, so the store sees changes in the same order as the
// table; the writer goroutine takes everything queued at once and puts
// consecutive block writes into one transaction (group commit).
type writeQueue struct {
	mu     sync.Mutex
	ops    []writeOp
	signal chan struct{}
}

// push queues op and returns the channel its result arrives on.
func (q *writeQueue) push(op writeOp) <-chan error {
	op.done = make(chan error, 1)
	q.mu.Lock()
	q.ops = append(q.ops, op)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
	return op.done
}

func (q *writeQueue) take() []writeOp {
	q.mu.Lock()
	defer q.mu.Unlock()
	ops := q.ops
	q.ops = nil
	return ops
}

// writer applies queued operations until the engine closes, then drains.
func (e *Engine) writer() {
	defer close(e.wdone)
	for {
		select {
		case <-e.wq.signal:
			e.apply(e.wq.take())
		case <-e.quit:
			for ops := e.wq.take(); len(ops) > 0; ops = e.wq.take() {
				e.apply(ops)
			}
			return
		}
	}
}

func (e *Engine) apply(ops []writeOp) {
	for i := 0; i < len(ops); {
		if e.st == nil {
			ops[i].done <- nil
			i++
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
		if ops[i].kind == opPut {
			j := i
			var batch []store.Block
			for ; j < len(ops) && ops[j].kind == opPut; j++ {
				batch = append(batch, ops[j].blocks...)
			}
			err := e.st.PutBlocks(ctx, batch)
			for ; i < j; i++ {
				ops[i].done <- err
			}
			cancel()
			continue
		}
		var err error
		switch ops[i].kind {
		case opDelete:
			_, err = e.st.DeleteBlocks(ctx, ops[i].prefixes)
		case opDeleteAll:
			_, err = e.st.DeleteAllBlocks(ctx)
		case opPurge:
			_, err = e.st.PurgeExpired(ctx, ops[i].before)
		default:
			err = errors.New("unknown store operation")
		}
		cancel()
		ops[i].done <- err
		i++
	}
}
