package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
	"github.com/certprov/certprov-adapter/internal/journal/postgres"
	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
)

var t0 = journaltest.T0

func testDSN(t testing.TB) string { return pgtest.DSN(t) }

// newTable returns a table name no other test uses, and drops the table when the test ends.
func newTable(t testing.TB) string {
	t.Helper()
	dsn := testDSN(t)
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	table := "certprov_journal_test_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop %s: %v", table, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	return table
}

func open(t testing.TB, table string, opts ...postgres.Option) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), testDSN(t), append([]postgres.Option{postgres.WithTable(table)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	testDSN(t) // skip (or fail in CI) once, not in every subtest
	journaltest.Run(t,
		func(t *testing.T) journal.Store { return open(t, newTable(t)) },
		journaltest.Replicas(func(t *testing.T, n int) []journal.Store {
			table := newTable(t)
			stores := make([]journal.Store, n)
			for i := range stores {
				stores[i] = open(t, table)
			}
			return stores
		}),
	)
}

// A replica that dies holding leases: once they expire, another replica takes its records
// over, and the dead one's writes (should it come back) are refused.
func TestTakeoverAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	table := newTable(t)
	a, b := open(t, table), open(t, table)
	for i := range 3 {
		if _, err := a.Create(ctx, journaltest.NewRecord(fmt.Sprintf("r%d", i), t0)); err != nil {
			t.Fatal(err)
		}
	}
	held, err := a.Lease(ctx, "replica-a", t0, time.Minute, 10)
	if err != nil || len(held) != 3 {
		t.Fatalf("a's Lease = %d, %v; want 3", len(held), err)
	}
	if got, err := b.Lease(ctx, "replica-b", t0.Add(time.Minute-time.Nanosecond), time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("b's Lease before expiry = %d, %v; want none", len(got), err)
	}
	if err := a.Close(); err != nil { // dies without releasing
		t.Fatal(err)
	}
	got, err := b.Lease(ctx, "replica-b", t0.Add(time.Minute), time.Minute, 10)
	if err != nil || len(got) != 3 {
		t.Fatalf("b's Lease after expiry = %d, %v; want 3", len(got), err)
	}
	a2 := open(t, table) // the dead replica restarts
	if err := a2.Update(ctx, "replica-a", held[0], t0.Add(time.Minute), time.Minute); !errors.Is(err, journal.ErrLeaseLost) {
		t.Fatalf("the old holder's Update: error = %v, want ErrLeaseLost", err)
	}
}

// A table made by an adapter from before lease tokens gets the column on the first Open, keeps
// its rows, and fences writes from then on; the identity column is added and filled too, so
// its certificates are found by IssuedTo.
func TestUpgradeAddsLeaseToken(t *testing.T) {
	ctx := context.Background()
	table := newTable(t)
	admin, err := pgx.Connect(ctx, testDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(ctx) })
	enc, err := journal.Encode(journaltest.FullRecord("old"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `CREATE TABLE `+table+` (name text PRIMARY KEY, state text NOT NULL, final boolean NOT NULL,
		next_due bigint NOT NULL, lease_owner text, lease_until bigint, finished_at bigint, data json NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `INSERT INTO `+table+` (name, state, final, next_due, data) VALUES ($1, $2, false, $3, $4)`,
		"old", string(enc.State), enc.NextDue, string(enc.Data)); err != nil {
		t.Fatal(err)
	}

	s := open(t, table)
	journaltest.AssertEqual(t, mustGet(t, s, "old"), journaltest.FullRecord("old"))
	if issued, err := s.IssuedTo(ctx, journaltest.FullRecord("old").IssuedIdentity()); err != nil || len(issued) != 1 || issued[0].Name != "old" {
		t.Fatalf("IssuedTo after the upgrade = %d records, %v; want the old record", len(issued), err)
	}
	got, err := s.Lease(ctx, "new", t0.Add(time.Minute), time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].LeaseToken == 0 {
		t.Fatalf("Lease after the upgrade = %v, %v; want the old record under a token", got, err)
	}
	stale := got[0].Clone()
	stale.LeaseToken = 0
	if err := s.Update(ctx, "new", stale, t0.Add(time.Minute), 0); !errors.Is(err, journal.ErrLeaseLost) {
		t.Fatalf("Update without the token: error = %v, want ErrLeaseLost", err)
	}
	if err := s.Update(ctx, "new", got[0], t0.Add(time.Minute), 0); err != nil {
		t.Fatalf("Update under the token: %v", err)
	}
	open(t, table) // a second Open finds the column and changes nothing
}

func mustGet(t testing.TB, s journal.Store, name string) *journal.Record {
	t.Helper()
	r, err := s.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return r
}

// Replicas starting together all create (or find) the schema.
func TestConcurrentOpen(t *testing.T) {
	table := newTable(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			s, err := postgres.Open(context.Background(), testDSN(t), postgres.WithTable(table), postgres.WithMaxConns(2))
			if err != nil {
				errs <- err
				return
			}
			errs <- s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Open: %v", err)
		}
	}
}

// A role that may use the table but not create in its schema can open an existing journal:
// Open creates only what is missing.
func TestOpenWithoutCreatePrivilege(t *testing.T) {
	ctx := context.Background()
	dsn := testDSN(t)
	table := newTable(t)
	open(t, table).Close()

	b := make([]byte, 6)
	_, _ = rand.Read(b)
	role := "certprov_test_role_" + hex.EncodeToString(b)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(ctx) })
	for _, stmt := range []string{
		"CREATE ROLE " + role + " LOGIN",
		"GRANT USAGE ON SCHEMA public TO " + role,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON " + table + " TO " + role,
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(ctx, "DROP OWNED BY "+role); err != nil {
			t.Errorf("drop owned by %s: %v", role, err)
		}
		if _, err := admin.Exec(ctx, "DROP ROLE "+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Skipf("the test DSN is not a URL: %v", err)
	}
	u.User = url.User(role)
	if s, err := postgres.Open(ctx, u.String(), postgres.WithTable(newTable(t))); err == nil {
		_ = s.Close()
		t.Skip("the test role may create tables in schema public (PostgreSQL before 15, or a changed default), so this test would prove nothing")
	}
	s, err := postgres.Open(ctx, u.String(), postgres.WithTable(table))
	if err != nil {
		t.Fatalf("Open as a role without CREATE: %v", err)
	}
	defer s.Close()
	if _, err := s.Create(ctx, journaltest.NewRecord("r", t0)); err != nil {
		t.Fatalf("Create as that role: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name, dsn string
		opts      []postgres.Option
		want      string
	}{
		{"bad table name", "postgres://127.0.0.1:1/x", []postgres.Option{postgres.WithTable("x; DROP TABLE y")}, "table name"},
		{"table name too long", "postgres://127.0.0.1:1/x", []postgres.Option{postgres.WithTable(strings.Repeat("t", 49))}, "table name"},
		{"bad dsn", "postgres://user:s3cret-pw@127.0.0.1:notaport/x", nil, "open journal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := postgres.Open(context.Background(), tt.dsn, tt.opts...)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Errorf("error = %v reveals the password", err)
			}
		})
	}
}

func BenchmarkJournal(b *testing.B) {
	w, dsn := newWire(b, testDSN(b))
	journaltest.Bench(b, func(b *testing.B) journal.Store {
		s, err := postgres.Open(context.Background(), dsn, postgres.WithTable(newTable(b)))
		if err != nil {
			b.Fatalf("Open: %v", err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	}, w.counts)
}
