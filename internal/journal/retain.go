package journal

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// RetainOptions configure Retain.
type RetainOptions struct {
	// Retention is how long finished records are kept; zero keeps everything.
	Retention time.Duration
	// Interval is the time between two compactions.
	Interval time.Duration
	Logger   *zap.Logger
	// Now is the clock records' ages are measured by (default time.Now).
	Now func() time.Time
}

// Retain keeps finished records for o.Retention (for audit and `inspect`) and deletes older
// ones: once at start, then every o.Interval, until ctx ends.
func Retain(ctx context.Context, s Store, o RetainOptions) {
	retention, log := o.Retention, o.Logger
	if retention <= 0 {
		return
	}
	if log == nil {
		log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		n, err := s.Compact(ctx, o.Now().Add(-retention))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("journal compaction", zap.Error(err))
		case n > 0:
			log.Info("journal compacted", zap.Int("deleted", n), zap.Duration("retention", retention))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
