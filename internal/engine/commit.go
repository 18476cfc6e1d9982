package engine

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/journal"
)

// commit journals rec under h's lease, extending the lease by renew or releasing it (renew 0),
// and returns the time it was written at.
//
// rec may hold what a step learned from a side effect that already happened (the CA's
// certificate, signData's operation, an upload or a setFailure that landed): dropping it would
// fail the process or repeat the side effect, and leave the record leased until the lease ran
// out. So a write the journal fails (a connection cut, a full disk) is retried with backoff
// under the same lease, while the lease may be relied on and for at most one lease duration;
// the step itself is never repeated. commit stops on a refused lease (journal.ErrLeaseLost,
// ErrNotFound: another worker may hold the record) or when h's context ends (the lease lost or
// expired, the grace period over), and returns that error or the journal's last one. By then
// the lease is about to run out (or no longer renewed), so the record is leased again soon
// after the journal is back.
func (e *Engine) commit(h *holder, rec *journal.Record, renew time.Duration) (time.Time, error) {
	var first time.Time
	// Spread the retries over the lease rather than spend it waiting on one long backoff.
	ceiling := min(e.o.Retry.MaxBackoff, e.o.LeaseDuration/8)
	for attempt := 0; ; attempt++ {
		at := e.now()
		wctx, cancel := h.writeContext()
		err := e.o.Store.Update(wctx, e.owner, rec, at, renew)
		cancel()
		if err == nil {
			if attempt > 0 {
				e.m.JournalWritesRecovered.Inc()
				e.log.Info("journal write landed after retries", zap.String("process", rec.Name),
					zap.String("state", string(rec.State)), zap.Int("attempts", attempt+1), zap.Duration("after", at.Sub(first)))
			}
			return at, nil
		}
		if errors.Is(err, journal.ErrLeaseLost) || errors.Is(err, journal.ErrNotFound) {
			return at, err
		}
		if attempt == 0 {
			first = at
		}
		delay := jitter(min(e.o.Retry.InitialBackoff, ceiling), ceiling, attempt)
		if h.ctx.Err() != nil || h.left() <= delay || at.Add(delay).Sub(first) > e.o.LeaseDuration {
			e.m.JournalWritesDropped.Inc()
			e.log.Error("journal write kept failing for as long as the lease allows; the outcome of the step is dropped",
				zap.String("process", rec.Name), zap.String("state", string(rec.State)), zap.Int("attempts", attempt+1),
				zap.Duration("for", at.Sub(first)), zap.Error(err))
			return at, err
		}
		e.m.JournalWriteRetries.Inc()
		if attempt == 0 {
			e.log.Warn("journal write failed; retrying under the same lease", zap.String("process", rec.Name),
				zap.String("state", string(rec.State)), zap.Duration("in", delay), zap.Error(err))
		}
		if !sleep(h.ctx, delay) {
			e.m.JournalWritesDropped.Inc()
			e.log.Error("journal write abandoned with the step; the outcome of the step is dropped",
				zap.String("process", rec.Name), zap.String("state", string(rec.State)),
				zap.NamedError("cause", context.Cause(h.ctx)), zap.Error(err))
			return at, err
		}
	}
}

// sleep waits d and reports whether ctx was still alive then.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
