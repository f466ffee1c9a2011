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
	timeout  time.Duration // 0: the engine's store timeout
	alone    bool          // commit in a transaction of its own (an import)
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

// apply writes ops in order. Consecutive puts are committed in one
// transaction (group commit); if that transaction fails and it held more
// than one operation, each is retried on its own, so one bad or failing
// operation (an import the store refuses, say) never fails the others.
func (e *Engine) apply(ops []writeOp) {
	for i := 0; i < len(ops); {
		if e.st == nil {
			ops[i].done <- nil
			i++
			continue
		}
		if ops[i].kind == opPut {
			j := i + 1
			for !ops[i].alone && j < len(ops) && ops[j].kind == opPut && !ops[j].alone {
				j++
			}
			e.putGroup(ops[i:j])
			i = j
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), e.opTimeout(ops[i]))
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

// putGroup commits consecutive put operations: all in one transaction, or,
// should that fail, each in its own. A group that ran out of time is not
// retried: the store is slow for all of them alike, and retrying one by one
// would hold up the queue for each.
func (e *Engine) putGroup(ops []writeOp) {
	if len(ops) == 1 {
		ops[0].done <- e.put(ops[0].blocks, e.opTimeout(ops[0]))
		return
	}
	var batch []store.Block
	var timeout time.Duration
	for _, op := range ops {
		batch = append(batch, op.blocks...)
		timeout = max(timeout, e.opTimeout(op))
	}
	err := e.put(batch, timeout)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		for _, op := range ops {
			op.done <- err
		}
		return
	}
	for _, op := range ops {
		op.done <- e.put(op.blocks, e.opTimeout(op))
	}
}

func (e *Engine) put(blocks []store.Block, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := e.st.PutBlocks(ctx, blocks)
	if e.obs != nil {
		e.obs.StoreCommit(time.Since(start), err)
	}
	return err
}

func (e *Engine) opTimeout(op writeOp) time.Duration {
	if op.timeout > 0 {
		return op.timeout
	}
	return e.timeout
}
