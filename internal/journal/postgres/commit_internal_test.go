package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/groupcommit"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
)

func openInternal(t *testing.T, dsn string) *Store {
	t.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	table := "certprov_journal_test_" + hex.EncodeToString(b)
	s, err := Open(context.Background(), dsn, WithTable(table))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		_, _ = s.pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table)
		_ = s.Close()
	})
	return s
}

// A statement the server refuses rolls its whole batch back; the batch's other writes are then
// sent again, each on its own, and land with their leases as they were.
func TestBatchWithAFailingWrite(t *testing.T) {
	ctx := context.Background()
	t0 := journaltest.T0
	s := openInternal(t, pgtest.DSN(t))
	for _, name := range []string{"a", "b"} {
		if _, err := s.Create(ctx, journaltest.CertificateRecord(name, t0)); err != nil {
			t.Fatal(err)
		}
	}
	held, err := s.Lease(ctx, "w", t0, time.Hour, 2)
	if err != nil || len(held) != 2 {
		t.Fatalf("Lease = %d records, %v", len(held), err)
	}
	update := func(rec *journal.Record) *groupcommit.Call[*op] {
		rec.Attempts = 2
		c, err := columnsOf(rec)
		if err != nil {
			t.Fatal(err)
		}
		until := journal.UnixNanos(t0.Add(time.Hour))
		owner := "w"
		return &groupcommit.Call[*op]{Ctx: ctx, Op: &op{query: s.q.update, args: []any{rec.Name, c.state, c.final, c.nextDue, c.finishedAt, c.data,
			&owner, &until, owner, rec.LeaseToken, journal.UnixNanos(t0), c.identity}}}
	}
	// state is NOT NULL: the server refuses the row.
	broken := &groupcommit.Call[*op]{Ctx: ctx, Op: &op{query: s.q.create, args: []any{"broken", nil, false, int64(0), nil, "{}", nil}, exec: true}}
	batch := []*groupcommit.Call[*op]{update(held[0]), broken, update(held[1])}
	commits, writes := s.CommitStats()
	s.commit(batch)
	// The batch did not commit; its two good writes did, one transaction each.
	if c, w := s.CommitStats(); c-commits != 2 || w-writes != 2 {
		t.Errorf("CommitStats moved by %d commits, %d writes; want 2 and 2", c-commits, w-writes)
	}

	var pgErr *pgconn.PgError
	if !errors.As(broken.Err, &pgErr) || pgErr.Code != "23502" {
		t.Errorf("the refused Create: error %v, want a not-null violation", broken.Err)
	}
	for _, i := range []int{0, 2} {
		if batch[i].Err != nil || !batch[i].Op.wrote {
			t.Errorf("Update %v beside the refused Create: wrote %v, error %v", batch[i].Op.args[0], batch[i].Op.wrote, batch[i].Err)
		}
	}
	for _, rec := range held {
		got, err := s.Get(ctx, rec.Name)
		if err != nil || got.Attempts != 2 {
			t.Fatalf("%s after the batch: %v, %v; want Attempts 2", rec.Name, got, err)
		}
		if err := s.Update(ctx, "w", rec, t0.Add(30*time.Minute), 0); err != nil {
			t.Errorf("%s: Update under the lease after the batch: %v", rec.Name, err)
		}
	}
}

// The journal's sessions wait for their commits to reach the disk even where the role or the
// DSN says they need not (synchronous_commit off, which returns before the WAL is flushed).
func TestSessionsCommitDurably(t *testing.T) {
	ctx := context.Background()
	u, err := url.Parse(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	u.RawQuery += "&options=-c%20synchronous_commit%3Doff" // pgx reads no '+' as a space
	dsn := u.String()

	plain, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close(ctx)
	var setting string
	if err := plain.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&setting); err != nil || setting != "off" {
		t.Fatalf("a plain session of the DSN: synchronous_commit %q, %v; want off (else this test proves nothing)", setting, err)
	}

	s := openInternal(t, dsn)
	conns := make([]*pgxpool.Conn, 0, 3)
	for range 3 { // more than one connection of the pool
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		if err := c.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&setting); err != nil || setting != "on" {
			t.Errorf("journal session %d: synchronous_commit %q, %v; want on", i, setting, err)
		}
		c.Release()
	}
}
