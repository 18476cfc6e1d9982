// Package sqlite is the embedded journal: one SQLite file, written by one adapter process.
//
// It uses modernc.org/sqlite (pure Go, no cgo). The file is in WAL mode with synchronous=FULL,
// so a record survives SIGKILL and power loss once Create or Update returns, and other processes
// may read it while the daemon writes (OpenReadOnly, as `certprov-adapter inspect` does).
//
// Writes go through one connection and one goroutine, which commits them in groups: the writes
// of every worker waiting while a commit is under way go into the next transaction together,
// so many workers' steps share one fsync, and each caller returns only once its transaction is
// on disk. The statements are prepared once.
//
// One process owns the file: Open takes an exclusive lock on a sidecar file (path + ".lock")
// and fails if another process holds it. A lease therefore never outlives the process that
// granted it, and leases are kept in memory, not in the file: granting and renewing one costs
// no write. Writes are fenced by lease tokens, as the journal.Store contract says, so a worker
// of this process that outlived its lease cannot write past the one that took the record next.
// Open clears the lease columns that an adapter before this one left in the file.
//
// The file and its sidecars are created private (0600, directory 0700) whatever the umask.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/groupcommit"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// ErrReadOnly is returned by the write methods of a store opened with OpenReadOnly.
var ErrReadOnly = errors.New("journal: store is read-only")

// schemaVersion is stored in PRAGMA user_version; a file with a higher one was written by a
// newer adapter and is refused rather than misread. Version 2 added lease_token (fencing),
// version 3 identity (IssuedTo, renewal hygiene).
const schemaVersion = 3

// The columns other than data exist for the queries; data is the record as JSON and is the
// only thing read back. Times are Unix nanoseconds, compared exactly as the engine's clock gave
// them. The lease columns are what adapters before this one kept there; leases now live in the
// writing process (Store), and the columns stay empty.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS records (
		name        TEXT    NOT NULL PRIMARY KEY,
		state       TEXT    NOT NULL,
		final       INTEGER NOT NULL,
		next_due    INTEGER NOT NULL,
		lease_owner TEXT,
		lease_until INTEGER,
		lease_token INTEGER NOT NULL DEFAULT 0,
		finished_at INTEGER,
		identity    TEXT,
		data        BLOB    NOT NULL
	) STRICT`,
	`CREATE INDEX IF NOT EXISTS records_due ON records (next_due) WHERE final = 0`,
	`CREATE INDEX IF NOT EXISTS records_identity ON records (identity) WHERE identity IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS records_finished ON records (finished_at) WHERE final = 1`,
	// probe holds one row that Ping rewrites: a real write, committed like a record's.
	`CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL) STRICT`,
}

// upgrades[v] turns a version v file into version v+1.
var upgrades = map[int][]string{
	1: {`ALTER TABLE records ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0`},
	2: {`ALTER TABLE records ADD COLUMN identity TEXT`},
}

// Store is a journal.Store in one SQLite file. It is safe for concurrent use.
type Store struct {
	path string
	w    *sql.DB // one connection, the committer's
	r    *sql.DB // readers, concurrent with the writer thanks to WAL
	// get is Get's statement, prepared on the readers once the table exists, so that the
	// admissions' reads (one per notification) are not parsed every time.
	get      *sql.Stmt
	readOnly bool
	unlock   func() error
	log      *zap.Logger

	c    *committer // nil for a read-only store
	loop *groupcommit.Loop[*op]

	closeOnce sync.Once
	closeErr  error
}

var (
	_ journal.Store   = (*Store)(nil)
	_ journal.Pinger  = (*Store)(nil)
	_ journal.Counter = (*Store)(nil)
)

// busyTimeout is how long a statement waits for another connection's lock (a checkpoint, a
// reader recovering the WAL) before failing.
const busyTimeout = 10 * time.Second

// Option configures Open.
type Option func(*options)

type options struct {
	log *zap.Logger
}

// WithLogger is where Open reports a journal that others may read (at warn); the default
// discards.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// Open opens (creating if needed) the journal at path for writing by this process, and clears
// every lease a previous run left. It fails if another process has the journal open for
// writing.
//
// The journal holds e-mail addresses, serial numbers, CSRs and certificates, so what Open
// creates is private whatever the umask: the directory 0700, the file and its -wal, -shm and
// .lock sidecars 0600. What exists already is left as it is, and logged at warn when group or
// others have any access.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{log: zap.NewNop()}
	for _, opt := range opts {
		opt(&o)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	if err := preparePrivate(abs); err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	unlock, err := lockFile(abs + ".lock")
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	s, err := open(ctx, abs, false)
	if err != nil {
		_ = unlock()
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	s.unlock, s.log = unlock, o.log
	if err := s.migrate(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	if err := s.prepareReads(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	// Leases written by an adapter before this one: their holder is dead (we hold the lock).
	if _, err := s.w.ExecContext(ctx, `UPDATE records SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL`); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open journal %s: clear leases: %w", path, err)
	}
	if s.c, err = newCommitter(ctx, s.w); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	s.loop = groupcommit.Start(groupcommit.Options[*op]{Commit: s.c.commit, Abandoned: s.c.abandoned})
	// The writes above created the sidecars, so every file can be checked now.
	warnIfShared(abs, s.log)
	return s, nil
}

// OpenReadOnly opens an existing journal for reading, alongside the process that writes it.
// Its write methods (Create, Lease, Update, Compact) return ErrReadOnly.
func OpenReadOnly(ctx context.Context, path string) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open journal %s read-only: %w", path, err)
	}
	s, err := open(ctx, abs, true)
	if err != nil {
		return nil, fmt.Errorf("open journal %s read-only: %w", path, err)
	}
	var version int
	if err := s.r.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open journal %s read-only: %w", path, err)
	}
	if version == 0 || version > schemaVersion {
		_ = s.Close()
		return nil, fmt.Errorf("open journal %s read-only: schema version %d, want 1 to %d (not a journal, or written by a newer adapter)", path, version, schemaVersion)
	}
	if err := s.prepareReads(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open journal %s read-only: %w", path, err)
	}
	return s, nil
}

// prepareReads prepares the readers' hot statement; the table must exist.
func (s *Store) prepareReads(ctx context.Context) error {
	var err error
	if s.get, err = s.r.PrepareContext(ctx, `SELECT data FROM records WHERE name = ?`); err != nil {
		return fmt.Errorf("prepare reads: %w", err)
	}
	return nil
}

func open(ctx context.Context, abs string, readOnly bool) (*Store, error) {
	s := &Store{path: abs, readOnly: readOnly}
	base := "file:" + (&url.URL{Path: abs}).EscapedPath()
	common := url.Values{}
	common.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	common.Add("_pragma", "synchronous(FULL)")

	var err error
	if !readOnly {
		q := url.Values{"_pragma": slices.Clone(common["_pragma"])}
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
		if s.w, err = sql.Open("sqlite", base+"?"+q.Encode()); err != nil {
			return nil, err
		}
		s.w.SetMaxOpenConns(1)
		s.w.SetConnMaxIdleTime(0)
		s.w.SetConnMaxLifetime(0)
		// The writer connection is made first: it creates the file and switches it to WAL.
		if err := s.w.PingContext(ctx); err != nil {
			_ = s.w.Close()
			return nil, err
		}
	}
	q := url.Values{"_pragma": slices.Clone(common["_pragma"])}
	q.Add("_pragma", "query_only(1)")
	if readOnly {
		q.Set("mode", "ro") // never create the file
	}
	if s.r, err = sql.Open("sqlite", base+"?"+q.Encode()); err != nil {
		if s.w != nil {
			_ = s.w.Close()
		}
		return nil, err
	}
	s.r.SetMaxOpenConns(4)
	if err := s.r.PingContext(ctx); err != nil {
		_ = s.r.Close()
		if s.w != nil {
			_ = s.w.Close()
		}
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	var version int
	if err := s.w.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this adapter's %d", version, schemaVersion)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	stmts := schema
	if version > 0 {
		// An existing file: bring it up to date first (CREATE … IF NOT EXISTS then no-ops).
		stmts = nil
		for v := version; v < schemaVersion; v++ {
			stmts = append(stmts, upgrades[v]...)
		}
		stmts = append(stmts, schema...)
	}
	stmts = append(stmts, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion))
	for _, stmt := range stmts {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("migrate schema from version %d: %w", version, err)
		}
	}
	if version > 0 && version < 3 {
		if err := backfillIdentity(ctx, tx); err != nil {
			return fmt.Errorf("migrate schema from version %d: %w", version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate schema from version %d: %w", version, err)
	}
	return nil
}

// backfillIdentity fills the identity column of the records a version before 3 wrote, once, so
// that the certificates issued before the upgrade are found by IssuedTo too.
func backfillIdentity(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT name, data FROM records`)
	if err != nil {
		return fmt.Errorf("backfill identity: %w", err)
	}
	found := map[string]string{}
	for rows.Next() {
		var name string
		var data []byte
		if err := rows.Scan(&name, &data); err != nil {
			_ = rows.Close()
			return fmt.Errorf("backfill identity: %w", err)
		}
		rec, err := journal.Decode(data)
		if err != nil {
			_ = rows.Close()
			return fmt.Errorf("backfill identity of %s: %w", name, err)
		}
		if id := rec.IssuedIdentity(); id != "" {
			found[name] = id
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("backfill identity: %w", err)
	}
	for name, id := range found {
		if _, err := tx.ExecContext(ctx, `UPDATE records SET identity = ? WHERE name = ?`, id, name); err != nil {
			return fmt.Errorf("backfill identity of %s: %w", name, err)
		}
	}
	return nil
}

// Path is the journal file's absolute path.
func (s *Store) Path() string { return s.path }

// do runs o in the commit loop, which owns the writer connection and the leases.
func (s *Store) do(ctx context.Context, o *op) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if s.loop == nil {
		return journal.ErrClosed
	}
	err := s.loop.Do(ctx, o)
	if errors.Is(err, groupcommit.ErrClosed) {
		return journal.ErrClosed
	}
	return err
}

// Create inserts rec unless a record with its name exists.
func (s *Store) Create(ctx context.Context, rec *journal.Record) (bool, error) {
	cols, err := columnsOf(rec)
	if err != nil {
		return false, fmt.Errorf("create %s: %w", rec.Name, err)
	}
	o := &op{kind: opCreate, name: rec.Name, cols: cols}
	if err := s.do(ctx, o); err != nil {
		return false, fmt.Errorf("create %s: %w", rec.Name, err)
	}
	return o.created, nil
}

// Get returns the record named name, or journal.ErrNotFound.
func (s *Store) Get(ctx context.Context, name string) (*journal.Record, error) {
	var data []byte
	err := s.get.QueryRowContext(ctx, name).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get %s: %w", name, journal.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	rec, err := journal.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	return rec, nil
}

// Lease leases up to limit due, unfinished records that no unexpired lease holds to owner
// until now+d, oldest NextDue first. It writes nothing: leases live in this process.
func (s *Store) Lease(ctx context.Context, owner string, now time.Time, d time.Duration, limit int) ([]*journal.Record, error) {
	if owner == "" {
		return nil, errors.New("lease records: empty owner")
	}
	o := &op{kind: opLease, owner: owner, now: journal.UnixNanos(now), until: journal.UnixNanos(now.Add(d)), limit: limit}
	if err := s.do(ctx, o); err != nil {
		return nil, fmt.Errorf("lease records: %w", err)
	}
	out := make([]*journal.Record, len(o.leased))
	for i, l := range o.leased {
		rec, err := journal.Decode(l.data)
		if err != nil {
			// The leases stay granted, and expire unused.
			return nil, fmt.Errorf("lease records: %w", err)
		}
		rec.LeaseToken = l.token
		out[i] = rec
	}
	return out, nil
}

// Update writes rec if owner holds its lease under rec.LeaseToken, unexpired at now, then
// renews the lease to now+renew or, with renew == 0, releases it. It returns once the write is
// on disk.
func (s *Store) Update(ctx context.Context, owner string, rec *journal.Record, now time.Time, renew time.Duration) error {
	cols, err := columnsOf(rec)
	if err != nil {
		return fmt.Errorf("update %s: %w", rec.Name, err)
	}
	o := &op{kind: opUpdate, name: rec.Name, cols: cols, owner: owner, token: rec.LeaseToken, now: journal.UnixNanos(now)}
	if renew > 0 {
		o.until = journal.UnixNanos(now.Add(renew))
	}
	if err := s.do(ctx, o); err != nil {
		return fenceError("update", rec.Name, owner, err)
	}
	return nil
}

// Renew extends owner's lease on the record named name to now+d, if owner holds it under token,
// unexpired at now. It writes nothing.
func (s *Store) Renew(ctx context.Context, owner, name string, token int64, now time.Time, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("renew %s: duration %s is not positive", name, d)
	}
	o := &op{kind: opRenew, name: name, owner: owner, token: token, now: journal.UnixNanos(now), until: journal.UnixNanos(now.Add(d))}
	if err := s.do(ctx, o); err != nil {
		return fenceError("renew", name, owner, err)
	}
	return nil
}

// fenceError wraps the error of a fenced call, naming the owner whose lease was refused.
func fenceError(what, name, owner string, err error) error {
	if errors.Is(err, journal.ErrLeaseLost) {
		return fmt.Errorf("%s %s by %s: %w", what, name, owner, err)
	}
	return fmt.Errorf("%s %s: %w", what, name, err)
}

// NextDue returns the earliest NextDue among unfinished records that no lease holds.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	if s.readOnly {
		// Another process's leases are its own: every unfinished record counts.
		var data []byte
		err := s.r.QueryRowContext(ctx, `SELECT data FROM records WHERE final = 0 ORDER BY next_due LIMIT 1`).Scan(&data)
		if errors.Is(err, sql.ErrNoRows) {
			return time.Time{}, false, nil
		}
		if err != nil {
			return time.Time{}, false, fmt.Errorf("next due: %w", err)
		}
		rec, err := journal.Decode(data)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("next due: %w", err)
		}
		return rec.NextDue, true, nil
	}
	o := &op{kind: opNextDue}
	if err := s.do(ctx, o); err != nil {
		return time.Time{}, false, fmt.Errorf("next due: %w", err)
	}
	return o.due, o.found, nil
}

// Unfinished lists every record that is not done, leased or not, by name (byte order).
func (s *Store) Unfinished(ctx context.Context) ([]*journal.Record, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT data FROM records WHERE final = 0 ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list unfinished: %w", err)
	}
	out, err := scanData(rows)
	if err != nil {
		return nil, fmt.Errorf("list unfinished: %w", err)
	}
	return out, nil
}

// Finished lists up to limit done records, in state unless it is empty, most recently finished
// first (then by name, byte order). The records_finished index serves it.
func (s *Store) Finished(ctx context.Context, state journal.State, limit int) ([]*journal.Record, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT data FROM records
		WHERE final = 1 AND (? = '' OR state = ?) ORDER BY finished_at DESC, name LIMIT ?`, string(state), string(state), limit)
	if err != nil {
		return nil, fmt.Errorf("list finished: %w", err)
	}
	out, err := scanData(rows)
	if err != nil {
		return nil, fmt.Errorf("list finished: %w", err)
	}
	return out, nil
}

// IssuedTo lists the records holding a certificate issued to identity, by name (byte order).
// The records_identity index serves it.
func (s *Store) IssuedTo(ctx context.Context, identity string) ([]*journal.Record, error) {
	if identity == "" {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT data FROM records WHERE identity = ? ORDER BY name`, identity)
	if err != nil {
		return nil, fmt.Errorf("list issued to an identity: %w", err)
	}
	out, err := scanData(rows)
	if err != nil {
		return nil, fmt.Errorf("list issued to an identity: %w", err)
	}
	return out, nil
}

// scanData decodes rows of one data column, in their order.
func scanData(rows *sql.Rows) ([]*journal.Record, error) {
	defer rows.Close()
	var out []*journal.Record
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, err
		}
		rec, err := journal.Decode(data)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, rows.Err()
}

// Ping rewrites the probe row, so that it fails when the file cannot be written (a full or
// failing disk, a lock held elsewhere) as a record write would: it is committed as one, with
// the writes waiting beside it.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.do(ctx, &op{kind: opPing, now: time.Now().UnixNano()}); err != nil {
		return fmt.Errorf("ping: write %s: %w", s.path, err)
	}
	return nil
}

// CommitStats reports the transactions the store committed so far, each one fsync of the WAL,
// and the write calls they carried: writes ÷ commits is how many writes shared a commit.
func (s *Store) CommitStats() (commits, writes uint64) {
	if s.c == nil {
		return 0, 0
	}
	return s.c.commits.Load(), s.c.writes.Load()
}

// Count counts the records by state.
func (s *Store) Count(ctx context.Context) (map[journal.State]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT state, count(*) FROM records GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	defer rows.Close()
	out := map[journal.State]int{}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return nil, fmt.Errorf("count: %w", err)
		}
		out[journal.State(state)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	return out, nil
}

// Compact deletes the records that reached a final state before finishedBefore.
func (s *Store) Compact(ctx context.Context, finishedBefore time.Time) (int, error) {
	o := &op{kind: opCompact, now: journal.UnixNanos(finishedBefore)}
	if err := s.do(ctx, o); err != nil {
		return 0, fmt.Errorf("compact: %w", err)
	}
	return o.deleted, nil
}

// Close closes the file and, for a writing store, gives up ownership of it. Leases this store
// granted stay in the file; the next Open clears them. Later calls return the first's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.loop != nil {
			s.loop.Close() // after the batch in progress, if any
		}
		if s.c != nil {
			errs = append(errs, s.c.close())
		}
		if s.get != nil {
			errs = append(errs, s.get.Close())
		}
		if s.r != nil {
			errs = append(errs, s.r.Close())
		}
		if s.w != nil {
			errs = append(errs, s.w.Close())
		}
		if s.unlock != nil {
			errs = append(errs, s.unlock())
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("close journal %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// columns are a record's indexed values.
type columns struct {
	state      string
	final      bool
	nextDue    int64
	finishedAt sql.NullInt64
	identity   sql.NullString
	data       []byte
}

func columnsOf(rec *journal.Record) (columns, error) {
	e, err := journal.Encode(rec)
	if err != nil {
		return columns{}, err
	}
	c := columns{state: string(e.State), final: e.Final, nextDue: e.NextDue, data: e.Data}
	if c.final {
		c.finishedAt = sql.NullInt64{Int64: e.FinishedAt, Valid: true}
	}
	c.identity = sql.NullString{String: e.Identity, Valid: e.Identity != ""}
	return c, nil
}
