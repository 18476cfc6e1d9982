package sqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
	"github.com/certprov/certprov-adapter/internal/journal/sqlite"
)

var t0 = journaltest.T0

func TestConformance(t *testing.T) {
	journaltest.Run(t, func(t *testing.T) journal.Store {
		return open(t, filepath.Join(t.TempDir(), "journal.db"))
	})
}

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openReadOnly(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.OpenReadOnly(context.Background(), path)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func create(t testing.TB, s journal.Store, rec *journal.Record) {
	t.Helper()
	if created, err := s.Create(context.Background(), rec); err != nil || !created {
		t.Fatalf("Create(%s) = %v, %v", rec.Name, created, err)
	}
}

func lease(t testing.TB, s journal.Store, owner string, now time.Time, limit int) []*journal.Record {
	t.Helper()
	got, err := s.Lease(context.Background(), owner, now, time.Hour, limit)
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	return got
}

// A restart clears the dead run's leases, so its records are due again at once.
func TestReopenClearsLeases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	s := open(t, path)
	create(t, s, journaltest.FullRecord("a"))
	create(t, s, journaltest.NewRecord("b", t0))
	if got := lease(t, s, "old-run", t0.Add(time.Minute), 10); len(got) != 2 {
		t.Fatalf("Lease = %d records, want 2", len(got))
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, path)
	journaltest.AssertEqual(t, mustGet(t, s, "a"), journaltest.FullRecord("a"))
	if got := lease(t, s, "new-run", t0.Add(time.Minute), 10); len(got) != 2 {
		t.Fatalf("Lease after reopen = %d records, want 2: the old run's leases were not cleared", len(got))
	}
	if err := s.Update(context.Background(), "old-run", journaltest.NewRecord("b", t0), t0, 0); !errors.Is(err, journal.ErrLeaseLost) {
		t.Fatalf("Update by the old run: error = %v, want ErrLeaseLost", err)
	}
}

func mustGet(t testing.TB, s journal.Store, name string) *journal.Record {
	t.Helper()
	r, err := s.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return r
}

// Only one process (one Store) may write a journal file: a second would clear the first's
// leases and work its records twice.
func TestOneWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	s := open(t, path)
	if s2, err := sqlite.Open(context.Background(), path); err == nil {
		_ = s2.Close()
		t.Fatal("a second Open of a journal in use succeeded")
	} else if !strings.Contains(err.Error(), "another adapter process") {
		t.Errorf("second Open error = %v, want it to say another process has the journal", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	open(t, path) // the lock went with Close
}

// The daemon writes while `inspect` reads the same file through a second Store.
func TestReadOnlyAlongsideWriter(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal.db")
	w := open(t, path)
	create(t, w, journaltest.FullRecord("a"))
	r := openReadOnly(t, path)

	journaltest.AssertEqual(t, mustGet(t, r, "a"), journaltest.FullRecord("a"))

	// The reader sees each write once it returns, including while it holds a read open.
	rows, err := r.Unfinished(ctx)
	if err != nil || len(rows) != 1 {
		t.Fatalf("Unfinished = %d, %v; want 1", len(rows), err)
	}
	for i := range 20 {
		create(t, w, journaltest.NewRecord(fmt.Sprintf("r%02d", i), t0.Add(time.Duration(i)*time.Second)))
		got, err := r.Unfinished(ctx)
		if err != nil || len(got) != i+2 {
			t.Fatalf("Unfinished after %d creates = %d, %v", i+1, len(got), err)
		}
	}
	leased := lease(t, w, "daemon", t0, 1)
	if len(leased) != 1 || leased[0].Name != "r00" {
		t.Fatalf("Lease = %v, want r00", leased)
	}
	// Leases live in the writing process: the writer skips r00, which it leased; the reader,
	// which cannot know, does not.
	if next, ok, err := w.NextDue(ctx); err != nil || !ok || !next.Equal(t0.Add(time.Nanosecond)) {
		t.Fatalf("writer's NextDue = %v, %v, %v; want %v (a)", next, ok, err, t0.Add(time.Nanosecond))
	}
	if next, ok, err := r.NextDue(ctx); err != nil || !ok || !next.Equal(t0) {
		t.Fatalf("reader's NextDue = %v, %v, %v; want %v (r00)", next, ok, err, t0)
	}

	writes := []struct {
		name string
		call func() error
	}{
		{"Create", func() error { _, err := r.Create(ctx, journaltest.NewRecord("x", t0)); return err }},
		{"Lease", func() error { _, err := r.Lease(ctx, "inspect", t0.Add(time.Hour), time.Hour, 10); return err }},
		{"Update", func() error { return r.Update(ctx, "daemon", leased[0], t0, 0) }},
		{"Renew", func() error { return r.Renew(ctx, "daemon", leased[0].Name, leased[0].LeaseToken, t0, time.Hour) }},
		{"Compact", func() error { _, err := r.Compact(ctx, t0.Add(time.Hour)); return err }},
	}
	for _, tt := range writes {
		if err := tt.call(); !errors.Is(err, sqlite.ErrReadOnly) {
			t.Errorf("%s on a read-only store: error = %v, want ErrReadOnly", tt.name, err)
		}
	}
	if err := w.Update(ctx, "daemon", leased[0], t0, 0); err != nil {
		t.Fatalf("the writer's Update after the reader's attempts: %v", err)
	}

	// The reader outlives the writer, and another writer may open while it reads.
	if err := w.Close(); err != nil {
		t.Fatalf("Close writer: %v", err)
	}
	if got, err := r.Unfinished(ctx); err != nil || len(got) != 21 {
		t.Fatalf("Unfinished after the writer closed = %d, %v; want 21", len(got), err)
	}
	w2 := open(t, path)
	create(t, w2, journaltest.NewRecord("after", t0))
	mustGet(t, r, "after")
}

// inspect can read a journal whose daemon is not running (its WAL checkpointed and removed).
func TestReadOnlyWithoutWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	w := open(t, path)
	create(t, w, journaltest.FullRecord("a"))
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	journaltest.AssertEqual(t, mustGet(t, openReadOnly(t, path), "a"), journaltest.FullRecord("a"))
}

func TestOpenReadOnlyErrors(t *testing.T) {
	dir := t.TempDir()
	notJournal := filepath.Join(dir, "other.db")
	db, err := sql.Open("sqlite", notJournal)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE t (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	newer := filepath.Join(dir, "newer.db")
	open(t, newer).Close()
	db, err = sql.Open("sqlite", newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	tests := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "missing.db"), "missing.db"},
		{"not a journal", notJournal, "not a journal"},
		{"newer schema", newer, "newer adapter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sqlite.OpenReadOnly(context.Background(), tt.path)
			if err == nil {
				_ = s.Close()
				t.Fatal("OpenReadOnly succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenReadOnly created the missing file: %v", err)
	}
	if s, err := sqlite.Open(context.Background(), newer); err == nil {
		_ = s.Close()
		t.Error("Open of a journal with a newer schema succeeded")
	}
}

// A journal written by an adapter from before lease tokens (schema version 1) is upgraded in
// place: its records are kept, its leases fenced from then on, and its certificates found by
// identity (the column version 3 added is filled from the records).
func TestUpgradeFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := journal.Encode(journaltest.FullRecord("old"))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE TABLE records (name TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL, final INTEGER NOT NULL,
			next_due INTEGER NOT NULL, lease_owner TEXT, lease_until INTEGER, finished_at INTEGER, data BLOB NOT NULL) STRICT`,
		`PRAGMA user_version = 1`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if _, err := db.Exec(`INSERT INTO records (name, state, final, next_due, lease_owner, lease_until, data) VALUES (?, ?, 0, ?, 'old-run', ?, ?)`,
		"old", string(enc.State), enc.NextDue, journal.UnixNanos(t0.Add(time.Hour)), enc.Data); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	s := open(t, path)
	journaltest.AssertEqual(t, mustGet(t, s, "old"), journaltest.FullRecord("old"))
	if id := journaltest.FullRecord("old").IssuedIdentity(); id == "" {
		t.Fatal("FullRecord has no identity")
	} else if issued, err := s.IssuedTo(ctx, id); err != nil || len(issued) != 1 || issued[0].Name != "old" {
		t.Fatalf("IssuedTo after the upgrade = %d records, %v; want the old record", len(issued), err)
	}
	got := lease(t, s, "new-run", t0.Add(time.Minute), 10)
	if len(got) != 1 || got[0].LeaseToken == 0 {
		t.Fatalf("Lease after the upgrade = %v; want the old record under a token", got)
	}
	stale := got[0].Clone()
	stale.LeaseToken = 0 // what the old run's lease amounted to
	if err := s.Update(ctx, "new-run", stale, t0.Add(time.Minute), 0); !errors.Is(err, journal.ErrLeaseLost) {
		t.Fatalf("Update without the token after the upgrade: error = %v, want ErrLeaseLost", err)
	}
	if err := s.Update(ctx, "new-run", got[0], t0.Add(time.Minute), 0); err != nil {
		t.Fatalf("Update under the token: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := openReadOnly(t, path) // reads the version it was upgraded to
	mustGet(t, r, "old")
}

// Paths that need escaping in a SQLite URI still name the file they say.
func TestPathEscaping(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%chars&x=1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "journal.db")
	s := open(t, path)
	create(t, s, journaltest.NewRecord("a", t0))
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("journal not at %s: %v", path, err)
	}
	mustGet(t, openReadOnly(t, path), "a")
}

// A record is on disk once Update returns: a writer killed with SIGKILL right after loses
// nothing, and its lock and leases do not outlive it.
func TestSurvivesSIGKILL(t *testing.T) {
	if path := os.Getenv("CERTPROV_SQLITE_CHILD"); path != "" {
		childWrites(path)
		return
	}
	path := filepath.Join(t.TempDir(), "journal.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSurvivesSIGKILL$")
	cmd.Env = append(os.Environ(), "CERTPROV_SQLITE_CHILD="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const want = 25
	sc := bufio.NewScanner(out)
	written := 0
	for written < want && sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "written "); ok {
			written, _ = strconv.Atoi(n)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if written < want {
		t.Fatalf("child wrote %d records before it ended, want %d", written, want)
	}

	s := open(t, path)
	for i := 1; i <= written; i++ {
		rec := mustGet(t, s, fmt.Sprintf("r%03d", i))
		if rec.State != journal.StateSignRequested || rec.Operation == "" {
			t.Errorf("%s: state %s, operation %q; want the child's update", rec.Name, rec.State, rec.Operation)
		}
	}
	// Every record is due and unleased again, the one the child held included.
	got := lease(t, s, "next-run", t0.Add(time.Hour), 1000)
	if len(got) < written {
		t.Fatalf("Lease after the kill = %d records, want at least %d", len(got), written)
	}
}

// childWrites creates, leases and updates records one by one, printing "written N" after each
// Update returns, until it is killed (or, should the parent die first, a write to the closed
// pipe kills it).
func childWrites(path string) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := 1; i <= 100000; i++ {
		rec := journaltest.NewRecord(fmt.Sprintf("r%03d", i), t0)
		if _, err := s.Create(ctx, rec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		got, err := s.Lease(ctx, "child", t0, time.Hour, 1)
		if err != nil || len(got) != 1 {
			fmt.Fprintln(os.Stderr, "lease:", len(got), err)
			os.Exit(2)
		}
		rec = got[0]
		rec.State, rec.Operation = journal.StateSignRequested, fmt.Sprintf("operations/%d", i)
		rec.NextDue = t0.Add(time.Minute)
		if err := s.Update(ctx, "child", rec, t0, time.Hour); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Printf("written %d\n", i)
	}
	os.Exit(3)
}

func BenchmarkJournal(b *testing.B) {
	journaltest.Bench(b, func(b *testing.B) journal.Store {
		return open(b, filepath.Join(b.TempDir(), "journal.db"))
	}, diskCounts)
}

// A power loss keeps every write that was answered, however many writers shared its commit:
// a caller returns only once the WAL that holds its write is synced. The disk is the shim's
// (disk_test.go), which keeps of each file what a power loss would: the writes up to its last
// sync.
func TestPowerLossKeepsEveryAnsweredWrite(t *testing.T) {
	ctx := context.Background()
	dir, lostDir := t.TempDir(), t.TempDir()
	disk := watchPowerLoss(t, dir)
	s := open(t, filepath.Join(dir, "journal.db"))
	const workers, records = 16, 64
	for i := range records {
		create(t, s, journaltest.CertificateRecord(fmt.Sprintf("r%02d", i), t0))
	}
	held := lease(t, s, "daemon", t0, records)
	if len(held) != records {
		t.Fatalf("Lease = %d records, want %d", len(held), records)
	}

	var (
		mu      sync.Mutex
		acked   = map[string]int{} // record → the latest Attempts written, as its Update answered
		answers int
		stop    = make(chan struct{})
		enough  = make(chan struct{})
		wg      sync.WaitGroup
	)
	answered := func(name string, attempts int) {
		mu.Lock()
		defer mu.Unlock()
		acked[name] = attempts
		if answers++; answers == 600 {
			close(enough)
		}
	}
	for w := range workers {
		wg.Go(func() { // workers advancing their records
			for i := w; ; i += workers {
				select {
				case <-stop:
					return
				default:
				}
				rec := held[i%records]
				rec.Attempts++
				if err := s.Update(ctx, "daemon", rec, t0, time.Hour); err != nil {
					t.Errorf("Update %s: %v", rec.Name, err)
					return
				}
				answered(rec.Name, rec.Attempts)
			}
		})
	}
	wg.Go(func() { // admissions beside them
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("new%04d", i)
			if _, err := s.Create(ctx, journaltest.CertificateRecord(name, t0)); err != nil {
				t.Errorf("Create %s: %v", name, err)
				return
			}
			answered(name, 0)
		}
	})
	<-enough
	mu.Lock()
	answeredBefore := maps.Clone(acked)
	mu.Unlock()
	disk.cut(t, lostDir) // the power goes, with writes in flight
	close(stop)
	wg.Wait()

	after := open(t, filepath.Join(lostDir, "journal.db"))
	for name, attempts := range answeredBefore {
		rec, err := after.Get(ctx, name)
		if err != nil {
			t.Errorf("%s, answered before the power loss: %v", name, err)
			continue
		}
		if rec.Attempts < attempts {
			t.Errorf("%s: Attempts %d after the power loss, but the write of %d was answered before it", name, rec.Attempts, attempts)
		}
	}
}

// BenchmarkGet reads one record by name from a journal of 1,000: what an admission's read of a
// notification's process costs the readers (the statement prepared once, sqlite.go).
func BenchmarkGet(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "journal.db"))
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("customers/C0bench/certificateProvisioningProcesses/P%04d", i)
		create(b, s, journaltest.CertificateRecord(names[i], t0))
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Get(ctx, names[i%len(names)]); err != nil {
			b.Fatal(err)
		}
	}
}
