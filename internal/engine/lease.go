package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/journal"
)

// Why a step's context ends before the step does.
var (
	// errLeaseLost: the journal refused a renewal; another worker may hold the record now.
	errLeaseLost = errors.New("the journal lease on this process was lost")
	// errLeaseExpired: renewals kept failing until the lease was about to run out.
	errLeaseExpired = errors.New("the journal lease on this process could not be renewed in time")
	// errGraceOver: the engine was stopped and the shutdown grace period ran out.
	errGraceOver = errors.New("the shutdown grace period ended")
)

// holder keeps one leased record's lease alive while its steps run: a heartbeat renews it every
// third of the lease duration, and ctx, the context steps run under, ends as soon as the lease
// is lost (a renewal refused) or about to expire unrenewed (renewals failing), so that a worker
// that no longer holds its record stops before its next side effect. Writes are fenced by the
// journal anyway; this stops the calls to Google and the CA that no journal can fence.
type holder struct {
	e      *Engine
	name   string
	token  int64
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu    sync.Mutex
	until time.Time // when the lease runs out, as far as this holder knows (engine clock)

	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// hold starts the heartbeat for rec, just leased at leasedAt, under parent.
func (e *Engine) hold(parent context.Context, rec *journal.Record, leasedAt time.Time) *holder {
	ctx, cancel := context.WithCancelCause(parent)
	h := &holder{
		e: e, name: rec.Name, token: rec.LeaseToken, ctx: ctx, cancel: cancel,
		until: leasedAt.Add(e.o.LeaseDuration),
		quit:  make(chan struct{}), done: make(chan struct{}),
	}
	go h.run()
	return h
}

// extended records that a write at at renewed the lease.
func (h *holder) extended(at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if u := at.Add(h.e.o.LeaseDuration); u.After(h.until) {
		h.until = u
	}
}

// left is how long the lease may still be relied on: its remaining time less a margin, so that
// a step is stopped before another worker can lease the record, not after.
func (h *holder) left() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.until.Sub(h.e.now()) - h.e.o.LeaseDuration/10
}

// writeContext bounds a journal write to the time the lease may be relied on: a write that
// lands later would be refused anyway. It outlives ctx, so that the outcome of a step cut
// short by the end of the grace period is still journaled (fenced) and the lease released.
func (h *holder) writeContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(h.ctx), max(h.left(), time.Millisecond))
}

// stop ends the heartbeat and waits for it, before the lease is released (a renewal racing
// the release would be refused, and read as a lost lease). Later calls do nothing.
func (h *holder) stop() {
	h.stopOnce.Do(func() {
		close(h.quit)
		<-h.done
	})
}

func (h *holder) run() {
	defer close(h.done)
	e := h.e
	interval := e.o.LeaseDuration / 3
	t := time.NewTimer(min(interval, h.left()))
	defer t.Stop()
	for {
		select {
		case <-h.quit:
			return
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		left := h.left()
		if left <= 0 {
			e.m.LeasesLost.WithLabelValues("expired").Inc()
			e.log.Warn("journal lease could not be renewed in time; abandoning the step", zap.String("process", h.name))
			h.cancel(errLeaseExpired)
			return
		}
		at := e.now()
		rctx, cancel := context.WithTimeout(h.ctx, left)
		err := e.o.Store.Renew(rctx, e.owner, h.name, h.token, at, e.o.LeaseDuration)
		cancel()
		next := interval
		switch {
		case err == nil:
			h.extended(at)
		case errors.Is(err, journal.ErrLeaseLost), errors.Is(err, journal.ErrNotFound):
			e.m.LeasesLost.WithLabelValues("refused").Inc()
			e.log.Warn("journal lease lost; abandoning the step", zap.String("process", h.name), zap.Error(err))
			h.cancel(errLeaseLost)
			return
		case h.ctx.Err() != nil:
			return
		default:
			// The journal is slow or unreachable: try again soon, until the lease runs out.
			e.m.LeaseRenewalErrors.Inc()
			e.log.Warn("journal lease renewal failed; retrying", zap.String("process", h.name), zap.Error(err))
			next = interval / 4
		}
		t.Reset(max(min(next, h.left()), 0))
	}
}
