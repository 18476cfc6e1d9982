package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/groupcommit"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
)

// A write the database refuses (the file cannot grow: a full disk) fails alone: the batch it
// was in is rolled back, and the other writes of the batch are made again, each on its own,
// with their leases as they were.
func TestBatchWithAFailingWrite(t *testing.T) {
	ctx := context.Background()
	t0 := journaltest.T0
	s, err := Open(ctx, filepath.Join(t.TempDir(), "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	for _, name := range []string{"a", "b"} {
		rec := journaltest.CertificateRecord(name, t0)
		rec.Attempts = 1
		if _, err := s.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	held, err := s.Lease(ctx, "w", t0, time.Hour, 2)
	if err != nil || len(held) != 2 {
		t.Fatalf("Lease = %d records, %v", len(held), err)
	}
	// The loop is idle (every call above was answered): the test may use its connection.
	var pages int64
	if err := s.c.conn.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.conn.ExecContext(ctx, `PRAGMA max_page_count = `+strconv.FormatInt(pages, 10)); err != nil {
		t.Fatal(err)
	}

	update := func(rec *journal.Record) *groupcommit.Call[*op] {
		rec.Attempts = 2 // the same size: rewritten in place, no new page
		cols, err := columnsOf(rec)
		if err != nil {
			t.Fatal(err)
		}
		return &groupcommit.Call[*op]{Ctx: ctx, Op: &op{kind: opUpdate, name: rec.Name, cols: cols, owner: "w", token: rec.LeaseToken,
			now: journal.UnixNanos(t0), until: journal.UnixNanos(t0.Add(time.Hour))}}
	}
	big := journaltest.CertificateRecord("big", t0)
	big.LastError = strings.Repeat("x", 64<<10) // needs pages the file may not have
	cols, err := columnsOf(big)
	if err != nil {
		t.Fatal(err)
	}
	batch := []*groupcommit.Call[*op]{update(held[0]), {Ctx: ctx, Op: &op{kind: opCreate, name: big.Name, cols: cols}}, update(held[1])}
	commits, writes := s.CommitStats()
	s.c.commit(batch)
	// The batch did not commit; its two good writes did, one transaction each.
	if c, w := s.CommitStats(); c-commits != 2 || w-writes != 2 {
		t.Errorf("CommitStats moved by %d commits, %d writes; want 2 and 2", c-commits, w-writes)
	}

	if err := batch[1].Err; err == nil || !strings.Contains(err.Error(), "full") {
		t.Errorf("Create beyond the file's limit: error %v, want the database's full error", err)
	}
	for _, i := range []int{0, 2} {
		if batch[i].Err != nil {
			t.Errorf("Update %s beside the failing Create: %v", batch[i].Op.name, batch[i].Err)
		}
	}
	if _, err := s.Get(ctx, "big"); !errors.Is(err, journal.ErrNotFound) {
		t.Errorf("Get of the refused record: %v, want ErrNotFound", err)
	}
	for _, rec := range held {
		got, err := s.Get(ctx, rec.Name)
		if err != nil || got.Attempts != 2 {
			t.Fatalf("%s after the batch: Attempts %v, %v; want 2", rec.Name, got, err)
		}
		// The lease survived the failed batch, once renewed: its holder writes on.
		if err := s.Update(ctx, "w", rec, t0.Add(30*time.Minute), 0); err != nil {
			t.Errorf("%s: Update under the lease after the batch: %v", rec.Name, err)
		}
	}
}

// A Lease whose caller stopped waiting gives its records back: nobody has their tokens.
func TestAbandonedLeaseGivesRecordsBack(t *testing.T) {
	ctx := context.Background()
	t0 := journaltest.T0
	s, err := Open(ctx, filepath.Join(t.TempDir(), "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Create(ctx, journaltest.NewRecord("r", t0)); err != nil {
		t.Fatal(err)
	}
	call := &groupcommit.Call[*op]{Ctx: ctx, Op: &op{kind: opLease, owner: "gone", now: journal.UnixNanos(t0),
		until: journal.UnixNanos(t0.Add(time.Hour)), limit: 1}}
	s.c.commit([]*groupcommit.Call[*op]{call})
	if call.Err != nil || len(call.Op.leased) != 1 {
		t.Fatalf("lease: %d records, %v", len(call.Op.leased), call.Err)
	}
	s.c.abandoned(call)
	got, err := s.Lease(ctx, "next", t0, time.Hour, 1)
	if err != nil || len(got) != 1 {
		t.Fatalf("Lease after the abandoned one = %d records, %v; want r", len(got), err)
	}
}
