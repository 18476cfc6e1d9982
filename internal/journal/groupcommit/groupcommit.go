// Package groupcommit gathers the calls of concurrent callers into batches that one loop
// commits together, so that the writes of many workers share one commit: one fsync of a
// SQLite journal, one round trip and one WAL flush of a PostgreSQL one.
//
// There is no timer: a call that arrives while a batch commits waits for the next one, which
// takes every call waiting by then. A lone caller waits for nothing but its own commit, and a
// busy journal commits as often as its disk allows, each commit carrying whatever arrived
// meanwhile. A caller is answered only once its batch has committed, or failed, so a write is
// as durable when its call returns as the backend's commit makes it.
package groupcommit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// ErrClosed is the answer to a call made, or still queued, when the loop was closed.
var ErrClosed = errors.New("groupcommit: closed")

// Call is one caller's share of a batch.
type Call[O any] struct {
	// Ctx is the caller's context. Commit may skip a call whose context has ended (setting
	// Err to its error), but a call it runs is not cut short by it.
	Ctx context.Context
	// Op is what to do, and where Commit leaves the results.
	Op O
	// Err is the call's answer, set by Commit.
	Err error

	state atomic.Int32
	done  chan struct{}
}

const (
	queued int32 = iota
	taken
	answered
	abandoned
)

// Options configures a Loop.
type Options[O any] struct {
	// Commit runs the calls of one batch, in the order they came, and sets each one's Err and
	// results. It runs on the loop's goroutine, one batch at a time, so whatever it alone
	// touches needs no lock.
	Commit func(batch []*Call[O])
	// Abandoned, when set, is called on the loop's goroutine, after Commit, for each call of
	// the batch whose caller stopped waiting (its context ended) while the batch ran: to give
	// back what the call took and nobody will use.
	Abandoned func(*Call[O])
	// MaxBatch bounds the calls in one batch (default 256).
	MaxBatch int
}

// Loop commits batches of calls until it is closed. Its methods are safe for concurrent use.
type Loop[O any] struct {
	o      Options[O]
	calls  chan *Call[O]
	quit   chan struct{}
	exited chan struct{}
	once   sync.Once
}

// Start starts a loop.
func Start[O any](o Options[O]) *Loop[O] {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
	}
	l := &Loop[O]{o: o, calls: make(chan *Call[O], 4*o.MaxBatch), quit: make(chan struct{}), exited: make(chan struct{})}
	go l.run()
	return l
}

// Do queues op and waits until its batch was committed, then returns the call's Err. If ctx
// ends first, Do returns ctx's error at once: a call that was already in a batch may still
// take effect, as a statement interrupted after its commit would. After Close, Do returns
// ErrClosed.
func (l *Loop[O]) Do(ctx context.Context, op O) error {
	c := &Call[O]{Ctx: ctx, Op: op, done: make(chan struct{})}
	select {
	case <-l.quit:
		return ErrClosed
	default:
	}
	select {
	case l.calls <- c:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.quit:
		return ErrClosed
	}
	select {
	case <-c.done:
		return c.Err
	case <-ctx.Done():
		if c.state.CompareAndSwap(queued, abandoned) || c.state.CompareAndSwap(taken, abandoned) {
			return ctx.Err()
		}
	case <-l.exited:
		// Queued after the loop had drained the queue: nobody will run it.
		if c.state.CompareAndSwap(queued, abandoned) {
			return ErrClosed
		}
	}
	<-c.done // answered meanwhile
	return c.Err
}

// Close stops the loop once the batch in progress (if any) is committed, answers every call
// still queued with ErrClosed, and returns when the loop has exited. Later calls do nothing.
func (l *Loop[O]) Close() {
	l.once.Do(func() { close(l.quit) })
	<-l.exited
}

func (l *Loop[O]) run() {
	defer close(l.exited)
	var batch, live []*Call[O]
	for {
		select {
		case <-l.quit: // before another batch, however many calls wait
			l.drain()
			return
		default:
		}
		select {
		case c := <-l.calls:
			batch = append(batch[:0], c)
		case <-l.quit:
			l.drain()
			return
		}
	gather:
		for len(batch) < l.o.MaxBatch {
			select {
			case c := <-l.calls:
				batch = append(batch, c)
			default:
				break gather
			}
		}
		live = live[:0]
		for _, c := range batch {
			if c.state.CompareAndSwap(queued, taken) {
				live = append(live, c)
			}
		}
		if len(live) > 0 {
			l.o.Commit(live)
		}
		for _, c := range live {
			if c.state.CompareAndSwap(taken, answered) {
				close(c.done)
			} else if l.o.Abandoned != nil {
				l.o.Abandoned(c)
			}
		}
		clear(batch)
		clear(live)
	}
}

// drain answers the calls still queued.
func (l *Loop[O]) drain() {
	for {
		select {
		case c := <-l.calls:
			if c.state.CompareAndSwap(queued, answered) {
				c.Err = ErrClosed
				close(c.done)
			}
		default:
			return
		}
	}
}
