package evloop

import (
	"context"
	"time"

	"github.com/postern/postern/internal/sockio"
)

// Bindable is a connection whose waits a loop can take over: a
// *sockio.Conn, or a connection over one that says so.
type Bindable interface {
	// SetWaiter makes w wait for the connection's socket; nil undoes it.
	SetWaiter(w sockio.Waiter)
}

type ctxKey struct{}

// taskCtx is a handler's context: its parent's, with the handler's task
// as the value of ctxKey (what context.WithValue would make, kept in the
// task rather than allocated).
type taskCtx struct {
	context.Context
	t *task
}

// Value returns the task for ctxKey, and the parent's values otherwise.
func (c *taskCtx) Value(key any) any {
	if _, ok := key.(ctxKey); ok {
		return c.t
	}
	return c.Context.Value(key)
}

// MayBlock moves the handler that ctx belongs to off its loop, when it
// runs on one, before it waits for something the loop does not watch. It
// is cheap when the handler is not on a loop, and does nothing a second
// time.
func MayBlock(ctx context.Context) {
	if t, ok := ctx.Value(ctxKey{}).(*task); ok {
		t.mayBlock()
	}
}

// OnLoop reports whether the handler ctx belongs to runs on a loop now.
func OnLoop(ctx context.Context) bool {
	t, ok := ctx.Value(ctxKey{}).(*task)
	return ok && t.onLoop()
}

// Bind makes the loop of the handler ctx belongs to wait for c's socket,
// when the handler runs on a loop; c is unbound when the handler ends. It
// reports whether c is bound.
func Bind(ctx context.Context, c Bindable) bool {
	t, ok := ctx.Value(ctxKey{}).(*task)
	return ok && t.bind(c)
}

// Release gives the connections bound to the handler ctx belongs to back
// to the runtime's poller, before the handler hands them to code that
// waits for them on other goroutines. The handler goes on on its loop.
func Release(ctx context.Context) {
	if t, ok := ctx.Value(ctxKey{}).(*task); ok {
		t.unbind()
	}
}

// Ready is what a wait asks of one socket: readability, writability or
// both.
type Ready struct {
	FD          int
	Read, Write bool
}

// WaitAny waits on the handler's loop until one of two sockets is ready as
// asked, until deadline (zero: none); it reports false, without waiting,
// when the handler does not run on a loop. A Ready asking for nothing is
// ignored. Readiness is a hint: the caller tries its reads and writes
// again, and may find nothing to do.
func WaitAny(ctx context.Context, a, b Ready, deadline time.Time) (bool, error) {
	t, ok := ctx.Value(ctxKey{}).(*task)
	if !ok {
		return false, nil
	}
	return t.waitAny(a, b, deadline)
}
