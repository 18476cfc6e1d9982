package journal

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Retain keeps finished records for retention (for audit and `inspect`) and deletes older ones:
// once at start, then every interval, until ctx ends. A retention of zero keeps everything.
func Retain(ctx context.Context, s Store, retention, interval time.Duration, log *zap.Logger) {
	if retention <= 0 {
		return
	}
	if log == nil {
		log = zap.NewNop()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := s.Compact(ctx, time.Now().Add(-retention))
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
