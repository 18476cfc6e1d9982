package journaltest_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
)

// TestFaultyConformance: without a fault, the wrapper is the store it wraps.
func TestFaultyConformance(t *testing.T) {
	journaltest.Run(t, func(t *testing.T) journal.Store { return journaltest.NewFaulty(journal.NewMemory()) })
}

func TestFaultyFailsWritesAndWritesNothing(t *testing.T) {
	ctx := context.Background()
	f := journaltest.NewFaulty(journal.NewMemory())
	t0 := journaltest.T0
	rec := journaltest.NewRecord("p", t0)
	f.FailWrites(1, journaltest.ErrDiskFull, journaltest.OpCreate)
	if _, err := f.Create(ctx, rec); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Create = %v, want ENOSPC", err)
	}
	if _, err := f.Get(ctx, "p"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Get after a failed Create = %v, want ErrNotFound", err)
	}
	if created, err := f.Create(ctx, rec); err != nil || !created {
		t.Fatalf("Create once the fault is used up = %v, %v", created, err)
	}

	leased, err := f.Lease(ctx, "w", t0, time.Minute, 1)
	if err != nil || len(leased) != 1 {
		t.Fatalf("Lease = %d, %v", len(leased), err)
	}
	f.FailWrites(-1, journaltest.ErrDiskFull, journaltest.OpUpdate)
	upd := leased[0].Clone()
	upd.State = journal.StateSignRequested
	for range 3 {
		if err := f.Update(ctx, "w", upd, t0, time.Minute); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Update = %v, want ENOSPC", err)
		}
	}
	if got, _ := f.Get(ctx, "p"); got.State != journal.StateClaimed {
		t.Fatalf("a failed Update wrote state %s", got.State)
	}
	if n := f.Unwritten("p", journal.StateSignRequested); n != 3 {
		t.Errorf("Unwritten(sign_requested) = %d, want 3", n)
	}
	if got := f.Refused(); got[journaltest.OpCreate] != 1 || got[journaltest.OpUpdate] != 3 || got[journaltest.OpLease] != 0 {
		t.Errorf("Refused = %v, want 1 Create and 3 Updates", got)
	}
	f.Heal()
	if err := f.Update(ctx, "w", upd, t0, 0); err != nil {
		t.Fatalf("Update after Heal: %v", err)
	}
	if got, _ := f.Get(ctx, "p"); got.State != journal.StateSignRequested {
		t.Errorf("state after Heal = %s", got.State)
	}
}

// TestFaultyCountsStoreErrors: errors of the wrapped store are counted by op; the answers
// ErrNotFound and ErrLeaseLost are not errors.
func TestFaultyCountsStoreErrors(t *testing.T) {
	ctx := context.Background()
	mem := journal.NewMemory()
	f := journaltest.NewFaulty(mem)
	if _, err := f.Get(ctx, "absent"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
	rec := journaltest.NewRecord("p", journaltest.T0)
	if _, err := f.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := f.Update(ctx, "nobody", rec, journaltest.T0, 0); !errors.Is(err, journal.ErrLeaseLost) {
		t.Fatalf("Update without the lease = %v, want ErrLeaseLost", err)
	}
	if got := f.StoreErrors(); len(got) != 0 {
		t.Fatalf("StoreErrors = %v after answers only, want none", got)
	}
	if n := f.Unwritten("p", journal.StateClaimed); n != 1 {
		t.Errorf("Unwritten(claimed) = %d after a refused Update, want 1", n)
	}
	if err := mem.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Get(ctx, "p"); !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("Get on a closed store = %v", err)
	}
	if _, _, err := f.NextDue(ctx); err == nil {
		t.Fatal("NextDue on a closed store = nil")
	}
	if got := f.StoreErrors(); got[journaltest.OpGet] != 1 || got[journaltest.OpNextDue] != 1 {
		t.Errorf("StoreErrors = %v, want one Get and one NextDue", got)
	}
}
