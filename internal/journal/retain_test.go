package journal_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
)

func TestRetain(t *testing.T) {
	s := journal.NewMemory()
	ctx := context.Background()
	now := time.Now()
	recs := map[string]*journal.Record{
		"old-finished":        {Name: "old-finished", State: journal.StateUploaded, FinishedAt: now.Add(-48 * time.Hour)},
		"recent-finished":     {Name: "recent-finished", State: journal.StateFailed, FinishedAt: now.Add(-time.Hour)},
		"old-unfinished":      {Name: "old-unfinished", State: journal.StateSignRequested, Created: now.Add(-72 * time.Hour)},
		"just-past-retention": {Name: "just-past-retention", State: journal.StateUploaded, FinishedAt: now.Add(-25 * time.Hour)},
	}
	for _, r := range recs {
		if _, err := s.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		journal.Retain(rctx, s, journal.RetainOptions{Retention: 24 * time.Hour, Interval: time.Hour, Now: func() time.Time { return now }})
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errOld := s.Get(ctx, "old-finished")
		_, errNew := s.Get(ctx, "just-past-retention")
		if errors.Is(errOld, journal.ErrNotFound) && errors.Is(errNew, journal.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("records finished more than the retention ago were not compacted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	for _, keep := range []string{"recent-finished", "old-unfinished"} {
		if _, err := s.Get(ctx, keep); err != nil {
			t.Errorf("%s: %v (must be kept)", keep, err)
		}
	}

	// Zero retention keeps everything and returns at once.
	journal.Retain(ctx, s, journal.RetainOptions{Interval: time.Hour})
	if _, err := s.Get(ctx, "recent-finished"); err != nil {
		t.Fatal(err)
	}
}
