package guard

import (
	"context"
	"errors"
	"fmt"
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
	opSync // writes nothing: done once every earlier operation is
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
	// after, when set, is called by the writer goroutine with the
	// result, for a producer that does not wait for it (an automatic
	// block: the session that tripped it may run on an event loop, which
	// must not wait for the disk).
	after func(error)
}

// finish reports op's result.
func (op *writeOp) finish(err error) {
	if op.after != nil {
		op.after(err)
	}
	op.done <- err // buffered: never waits
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
			ops[i].finish(nil)
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
		if ops[i].kind == opSync {
			ops[i].finish(nil)
			i++
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
		ops[i].finish(err)
		i++
	}
}

// putGroup commits consecutive put operations: all in one transaction, or,
// should that fail, each in its own. A group that ran out of time is not
// retried: the store is slow for all of them alike, and retrying one by one
// would hold up the queue for each.
func (e *Engine) putGroup(ops []writeOp) {
	if len(ops) == 1 {
		ops[0].finish(e.put(ops[0].blocks, e.opTimeout(ops[0])))
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
		for i := range ops {
			ops[i].finish(err)
		}
		return
	}
	for i := range ops {
		ops[i].finish(e.put(ops[i].blocks, e.opTimeout(ops[i])))
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

// Sync waits until every store write queued before it (automatic blocks
// among them, which nothing waits for) has been applied, or ctx ends.
func (e *Engine) Sync(ctx context.Context) error {
	select {
	case <-e.wdone:
		return nil // closed: the writer drained the queue
	default:
	}
	done := e.wq.push(writeOp{kind: opSync})
	select {
	case <-done:
		return nil
	case <-e.wdone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the block store's writes: %w", ctx.Err())
	}
}
