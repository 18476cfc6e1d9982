// Package postgres is the shared journal: one PostgreSQL table that several replicas lease
// records from, so they can share one logical callerInstanceId.
//
// Each record is a row; Lease takes due rows with FOR UPDATE SKIP LOCKED, so concurrent leases
// from any number of replicas never hand out the same record, and a replica that dies leaves
// leases that expire, after which the others take its records over. Update writes only while
// the caller still holds the lease, so a replica that lost its lease cannot overwrite the new
// holder's work.
//
// Every time comes from the caller (the engine's clock), never from the database's, and is
// stored as Unix nanoseconds. The record itself is a json column, readable with psql.
//
// Create, Update and Renew are group-committed: the calls of every worker waiting while a batch
// is on its way to the server go together in the next one, a pgx batch that is one round trip
// and one implicit transaction, so one commit (one WAL flush) for all of them; each caller
// returns once the server committed. Each call is one statement, fenced in itself, and the
// statements are prepared once per connection (pgx's statement cache). Sessions run with
// synchronous_commit on, so that a commit is on the server's disk before the call returns.
package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/groupcommit"
)

// DefaultTable is the table Open uses unless WithTable names another.
const DefaultTable = "certprov_journal"

// Option configures Open.
type Option func(*options)

type options struct {
	table          string
	maxConns       int32
	allowCleartext bool
	log            *zap.Logger
}

// WithTable stores records in the named table (in the connection's search_path) instead of
// DefaultTable, so several journals, or several tests, can share one database. The name must be
// a plain identifier: a letter or underscore, then letters, digits or underscores, at most 48
// characters, so the indexes named after it fit PostgreSQL's limit.
func WithTable(name string) Option { return func(o *options) { o.table = name } }

// WithMaxConns bounds the connection pool (default: pool_max_conns in the DSN, else
// DefaultMaxConns).
func WithMaxConns(n int32) Option { return func(o *options) { o.maxConns = n } }

// DefaultMaxConns is the pool's size when neither WithMaxConns nor the DSN's pool_max_conns sets
// one. pgxpool's own default, 4 connections on a 2-core machine, held a burst to a third of the
// reference driver's rate: the admissions' reads queued for a connection behind the engine's
// workers (docs/performance.md). 16 serves engine.workers' default and the admissions' reads
// beside them; three replicas still stay well under PostgreSQL's default max_connections (100).
const DefaultMaxConns = 16

// WithInsecureAllowCleartext(true) accepts a DSN that reaches a host other than this machine
// without TLS that verifies the server (journal.insecureAllowCleartext); Open logs a warning then.
// Without it Open refuses such a DSN: the password and every journal record would travel in
// clear, or to whoever answers for the host.
func WithInsecureAllowCleartext(allowed bool) Option {
	return func(o *options) { o.allowCleartext = allowed }
}

// WithLogger receives Open's start-up warnings (default: none are logged).
func WithLogger(log *zap.Logger) Option { return func(o *options) { o.log = log } }

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,47}$`)

// Store is a journal.Store in a PostgreSQL table. It is safe for concurrent use, and any number
// of Stores, in any number of processes, may share one table.
type Store struct {
	pool   *pgxpool.Pool
	table  string
	closed atomic.Bool
	q      queries
	loop   *groupcommit.Loop[*op]

	commits, writes atomic.Uint64 // see CommitStats
}

var (
	_ journal.Store   = (*Store)(nil)
	_ journal.Pinger  = (*Store)(nil)
	_ journal.Counter = (*Store)(nil)
)

// queries are the statements, with the table name filled in.
type queries struct {
	create, get, lease, update, renew, nextDue, unfinished, finished, issuedTo, compact, ping, count string
}

// Open connects to the database named by dsn (a postgres:// URL or key=value string, as pgx
// reads them) and creates the journal table and its indexes if they are missing. Replicas may
// call Open at the same time: a transaction-scoped advisory lock serializes the creation.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	o := options{table: DefaultTable, log: zap.NewNop()}
	for _, opt := range opts {
		opt(&o)
	}
	if !identifier.MatchString(o.table) {
		return nil, fmt.Errorf("open journal: table name %q: want a letter or underscore, then letters, digits or underscores, at most 48 characters", o.table)
	}
	// The same rule as the configuration's validation, for a DSN that reaches Open another way.
	warning, err := config.DSNCleartext(dsn, o.allowCleartext)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	warning.Warn(o.log)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err) // pgx redacts the password
	}
	switch {
	case o.maxConns > 0:
		cfg.MaxConns = o.maxConns
	case !strings.Contains(dsn, "pool_max_conns"):
		cfg.MaxConns = DefaultMaxConns
	}
	cfg.AfterConnect = durableCommits
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	s := &Store{pool: pool, table: o.table, q: newQueries(pgx.Identifier{o.table}.Sanitize())}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open journal table %s: %w", o.table, err)
	}
	if err := s.checkDurability(ctx, o.log); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open journal: %w", err)
	}
	s.loop = groupcommit.Start(groupcommit.Options[*op]{Commit: s.commit})
	return s, nil
}

// durableCommits makes a session wait for its commits to reach the server's disk: a journal
// write is an intent that must be there before its side effect, across a power loss too. A
// stronger setting (remote_write, remote_apply: a synchronous standby as well) is kept; only
// off, which would return before the WAL flush, is raised to on.
func durableCommits(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, `SELECT set_config('synchronous_commit', 'on', false)
		WHERE current_setting('synchronous_commit') = 'off'`); err != nil {
		return fmt.Errorf("set synchronous_commit: %w", err)
	}
	return nil
}

// checkDurability warns about what a session cannot change: a server that does not sync its
// WAL loses the last commits in a power loss or an OS crash, whatever its clients set.
func (s *Store) checkDurability(ctx context.Context, log *zap.Logger) error {
	var fsync, reset string
	if err := s.pool.QueryRow(ctx, `SELECT current_setting('fsync'),
		(SELECT reset_val FROM pg_settings WHERE name = 'synchronous_commit')`).Scan(&fsync, &reset); err != nil {
		return fmt.Errorf("read the durability settings: %w", err)
	}
	if fsync != "on" {
		log.Warn("the PostgreSQL server runs with fsync off: journal writes do not survive a power loss or an OS crash there; turn it on for production",
			zap.String("table", s.table))
	}
	if reset == "off" {
		log.Info("synchronous_commit is off for this role or database; the journal's sessions turn it on, so that each write is on disk before its side effect",
			zap.String("table", s.table))
	}
	return nil
}

// Table is the name of the table the store uses.
func (s *Store) Table() string { return s.table }

func newQueries(t string) queries {
	r := strings.NewReplacer("$TABLE", t)
	return queries{
		create: r.Replace(`INSERT INTO $TABLE (name, state, final, next_due, finished_at, data, identity)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING`),
		get: r.Replace(`SELECT data FROM $TABLE WHERE name = $1`),
		// RETURNING yields rows in no particular order; Lease sorts them.
		lease: r.Replace(`UPDATE $TABLE SET lease_owner = $1, lease_until = $2, lease_token = lease_token + 1
			WHERE name IN (
				SELECT name FROM $TABLE
				WHERE NOT final AND next_due <= $3 AND (lease_owner IS NULL OR lease_until <= $3)
				ORDER BY next_due, name COLLATE "C"
				LIMIT $4
				FOR UPDATE SKIP LOCKED)
			RETURNING next_due, name, lease_token, data`),
		// Update and renew are compare-and-set on the caller's grant: the owner check alone
		// also keeps a replica of an adapter from before lease tokens from writing past a new one.
		// Each says in the same statement whether it wrote and, if not, whether the record
		// exists (which tells ErrNotFound from ErrLeaseLost): one round trip, whatever happens.
		update: r.Replace(`WITH w AS (UPDATE $TABLE
				SET state = $2, final = $3, next_due = $4, finished_at = $5, data = $6, lease_owner = $7, lease_until = $8, identity = $12
				WHERE name = $1 AND lease_owner = $9 AND lease_token = $10 AND lease_until > $11
				RETURNING 1)
			SELECT EXISTS (SELECT 1 FROM w), EXISTS (SELECT 1 FROM $TABLE WHERE name = $1)`),
		renew: r.Replace(`WITH w AS (UPDATE $TABLE SET lease_until = $5
				WHERE name = $1 AND lease_owner = $2 AND lease_token = $3 AND lease_until > $4
				RETURNING 1)
			SELECT EXISTS (SELECT 1 FROM w), EXISTS (SELECT 1 FROM $TABLE WHERE name = $1)`),
		nextDue:    r.Replace(`SELECT data FROM $TABLE WHERE NOT final AND lease_owner IS NULL ORDER BY next_due LIMIT 1`),
		unfinished: r.Replace(`SELECT data FROM $TABLE WHERE NOT final ORDER BY name COLLATE "C"`),
		// The partial index on finished_at (WHERE final) serves it.
		finished: r.Replace(`SELECT data FROM $TABLE WHERE final AND ($1 = '' OR state = $1)
			ORDER BY finished_at DESC, name COLLATE "C" LIMIT $2`),
		// The partial index on identity serves it.
		issuedTo: r.Replace(`SELECT data FROM $TABLE WHERE identity = $1 ORDER BY name COLLATE "C"`),
		compact:  r.Replace(`DELETE FROM $TABLE WHERE final AND finished_at < $1`),
		// An UPDATE that matches nothing still needs the privilege and a server that accepts
		// writes (a standby refuses it), and needs no table of its own that a role limited to
		// this one could not create.
		ping:  r.Replace(`UPDATE $TABLE SET name = name WHERE false`),
		count: r.Replace(`SELECT state, count(*) FROM $TABLE GROUP BY state`),
	}
}

// migrate creates what is missing, and nothing else (createMissing), and adds the columns later
// versions need to a table an earlier one created.
func (s *Store) migrate(ctx context.Context) error {
	t := pgx.Identifier{s.table}.Sanitize()
	objects := []schemaObject{
		{s.table, `CREATE TABLE IF NOT EXISTS ` + t + ` (
			name        text    PRIMARY KEY,
			state       text    NOT NULL,
			final       boolean NOT NULL,
			next_due    bigint  NOT NULL,
			lease_owner text,
			lease_until bigint,
			lease_token bigint  NOT NULL DEFAULT 0,
			finished_at bigint,
			data        json    NOT NULL,
			identity    text
		)`},
		// Lease and NextDue scan unfinished records by due time.
		{s.table + "_due", `CREATE INDEX IF NOT EXISTS ` + pgx.Identifier{s.table + "_due"}.Sanitize() +
			` ON ` + t + ` (next_due) WHERE NOT final`},
		// Compact scans finished records by finish time.
		{s.table + "_finished", `CREATE INDEX IF NOT EXISTS ` + pgx.Identifier{s.table + "_finished"}.Sanitize() +
			` ON ` + t + ` (finished_at) WHERE final`},
	}
	lock := "certprov-adapter journal schema " + s.table
	err := createMissing(ctx, s.pool, lock, objects, func(tx pgx.Tx) error {
		// A table created before lease tokens lacks the column; adding it takes the table's
		// owner, once (a constant default rewrites nothing).
		var hasToken bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
			WHERE attrelid = to_regclass($1) AND attname = 'lease_token' AND NOT attisdropped)`, t).Scan(&hasToken); err != nil {
			return fmt.Errorf("look up %s.lease_token: %w", s.table, err)
		}
		if !hasToken {
			if _, err := tx.Exec(ctx, `ALTER TABLE `+t+` ADD COLUMN IF NOT EXISTS lease_token bigint NOT NULL DEFAULT 0`); err != nil {
				return fmt.Errorf("add %s.lease_token (run the adapter once as the table's owner): %w", s.table, err)
			}
		}
		return s.addIdentity(ctx, tx, t)
	})
	if err != nil {
		return err
	}
	// IssuedTo looks certificates up by identity; created once the column exists.
	return createMissing(ctx, s.pool, lock, []schemaObject{
		{s.table + "_identity", `CREATE INDEX IF NOT EXISTS ` + pgx.Identifier{s.table + "_identity"}.Sanitize() +
			` ON ` + t + ` (identity) WHERE identity IS NOT NULL`},
	}, nil)
}

// addIdentity adds the identity column to a table created before renewal hygiene, and fills it
// from the records there, once, so that the certificates issued before the upgrade are found
// by IssuedTo too.
func (s *Store) addIdentity(ctx context.Context, tx pgx.Tx, t string) error {
	var has bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
		WHERE attrelid = to_regclass($1) AND attname = 'identity' AND NOT attisdropped)`, t).Scan(&has); err != nil {
		return fmt.Errorf("look up %s.identity: %w", s.table, err)
	}
	if has {
		return nil
	}
	if _, err := tx.Exec(ctx, `ALTER TABLE `+t+` ADD COLUMN IF NOT EXISTS identity text`); err != nil {
		return fmt.Errorf("add %s.identity (run the adapter once as the table's owner): %w", s.table, err)
	}
	rows, err := tx.Query(ctx, `SELECT name, data FROM `+t+` WHERE strpos(data::text, '"certificatePem"') > 0`)
	if err != nil {
		return fmt.Errorf("backfill %s.identity: %w", s.table, err)
	}
	found := map[string]string{}
	var name string
	var data []byte
	if _, err := pgx.ForEachRow(rows, []any{&name, &data}, func() error {
		rec, err := journal.Decode(data)
		if err != nil {
			return fmt.Errorf("record %s: %w", name, err)
		}
		if id := rec.IssuedIdentity(); id != "" {
			found[name] = id
		}
		return nil
	}); err != nil {
		return fmt.Errorf("backfill %s.identity: %w", s.table, err)
	}
	for name, id := range found {
		if _, err := tx.Exec(ctx, `UPDATE `+t+` SET identity = $2 WHERE name = $1`, name, id); err != nil {
			return fmt.Errorf("backfill %s.identity of %s: %w", s.table, name, err)
		}
	}
	return nil
}

// schemaObject is a table or index migrate creates when it is missing.
type schemaObject struct{ name, ddl string }

// createMissing creates each of objects that does not exist yet, then runs then (nil: nothing
// more), in one transaction under an advisory lock named by lockName, so that replicas starting
// together do not race on the catalog, and a role that may not create in the schema can open
// objects that exist.
func createMissing(ctx context.Context, pool *pgxpool.Pool, lockName string, objects []schemaObject, then func(pgx.Tx) error) error {
	h := fnv.New64a()
	h.Write([]byte(lockName))
	key := int64(h.Sum64())
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, key); err != nil {
			return fmt.Errorf("lock schema: %w", err)
		}
		for _, obj := range objects {
			var exists bool
			// to_regclass resolves the name through search_path, as the DDL does.
			if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{obj.name}.Sanitize()).Scan(&exists); err != nil {
				return fmt.Errorf("look up %s: %w", obj.name, err)
			}
			if exists {
				continue
			}
			if _, err := tx.Exec(ctx, obj.ddl); err != nil {
				return fmt.Errorf("create %s: %w", obj.name, err)
			}
		}
		if then == nil {
			return nil
		}
		return then(tx)
	})
}

var errClosed = errors.New("journal store is closed")

// check fails once Close was called; pgxpool would too, but with a less telling message.
func (s *Store) check() error {
	if s.closed.Load() {
		return errClosed
	}
	return nil
}

// Create inserts rec unless a record with its name exists.
func (s *Store) Create(ctx context.Context, rec *journal.Record) (bool, error) {
	if err := s.check(); err != nil {
		return false, fmt.Errorf("create %s: %w", rec.Name, err)
	}
	c, err := columnsOf(rec)
	if err != nil {
		return false, fmt.Errorf("create %s: %w", rec.Name, err)
	}
	o := &op{query: s.q.create, args: []any{rec.Name, c.state, c.final, c.nextDue, c.finishedAt, c.data, c.identity}, exec: true}
	if err := s.do(ctx, o); err != nil {
		return false, fmt.Errorf("create %s: %w", rec.Name, err)
	}
	return o.wrote, nil
}

// Get returns the record named name, or journal.ErrNotFound.
func (s *Store) Get(ctx context.Context, name string) (*journal.Record, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	var data []byte
	err := s.pool.QueryRow(ctx, s.q.get, name).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
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

// Lease leases up to limit due, unfinished records that no unexpired lease holds to owner until
// now+d, oldest NextDue first. Rows another transaction is leasing at the same moment are
// skipped, not waited for.
func (s *Store) Lease(ctx context.Context, owner string, now time.Time, d time.Duration, limit int) ([]*journal.Record, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("lease records: %w", err)
	}
	if owner == "" {
		return nil, errors.New("lease records: empty owner")
	}
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.q.lease, owner, journal.UnixNanos(now.Add(d)), journal.UnixNanos(now), limit)
	if err != nil {
		return nil, fmt.Errorf("lease records: %w", err)
	}
	type due struct {
		at   int64
		name string
		rec  *journal.Record
	}
	var ds []due
	var data []byte
	var d0 due
	var token int64
	_, err = pgx.ForEachRow(rows, []any{&d0.at, &d0.name, &token, &data}, func() error {
		rec, err := journal.Decode(data)
		if err != nil {
			return err
		}
		rec.LeaseToken = token
		ds = append(ds, due{d0.at, d0.name, rec})
		return nil
	})
	if err != nil {
		// The statement either committed whole or not at all; a decoding error after it
		// committed leaves leases that expire by themselves.
		return nil, fmt.Errorf("lease records: %w", err)
	}
	slices.SortFunc(ds, func(a, b due) int { return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.name, b.name)) })
	out := make([]*journal.Record, len(ds))
	for i, d := range ds {
		out[i] = d.rec
	}
	return out, nil
}

// Update writes rec if owner holds its lease under rec.LeaseToken, unexpired at now, then
// renews the lease to now+renew or, with renew == 0, releases it. It returns once the server
// committed the write.
func (s *Store) Update(ctx context.Context, owner string, rec *journal.Record, now time.Time, renew time.Duration) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("update %s: %w", rec.Name, err)
	}
	c, err := columnsOf(rec)
	if err != nil {
		return fmt.Errorf("update %s: %w", rec.Name, err)
	}
	var (
		leaseOwner *string // nil releases the lease
		leaseUntil *int64
	)
	if renew > 0 {
		until := journal.UnixNanos(now.Add(renew))
		leaseOwner, leaseUntil = &owner, &until
	}
	o := &op{query: s.q.update, args: []any{rec.Name, c.state, c.final, c.nextDue, c.finishedAt, c.data, leaseOwner, leaseUntil,
		owner, rec.LeaseToken, journal.UnixNanos(now), c.identity}}
	return fenced("update", rec.Name, owner, s.do(ctx, o), o)
}

// Renew extends owner's lease on the record named name to now+d, if owner holds it under token,
// unexpired at now.
func (s *Store) Renew(ctx context.Context, owner, name string, token int64, now time.Time, d time.Duration) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("renew %s: %w", name, err)
	}
	if d <= 0 {
		return fmt.Errorf("renew %s: duration %s is not positive", name, d)
	}
	o := &op{query: s.q.renew, args: []any{name, owner, token, journal.UnixNanos(now), journal.UnixNanos(now.Add(d))}}
	return fenced("renew", name, owner, s.do(ctx, o), o)
}

// fenced turns the outcome of a compare-and-set on the caller's lease into its answer: nil,
// journal.ErrNotFound or journal.ErrLeaseLost.
func fenced(what, name, owner string, err error, o *op) error {
	switch {
	case err != nil:
		return fmt.Errorf("%s %s: %w", what, name, err)
	case o.wrote:
		return nil
	case !o.exists:
		return fmt.Errorf("%s %s: %w", what, name, journal.ErrNotFound)
	}
	return fmt.Errorf("%s %s by %s: %w", what, name, owner, journal.ErrLeaseLost)
}

// NextDue returns the earliest NextDue among unfinished records that no lease holds, expired or
// not: a replica learns of an expired lease by calling Lease, which it does at least every
// second.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	if err := s.check(); err != nil {
		return time.Time{}, false, fmt.Errorf("next due: %w", err)
	}
	var data []byte
	err := s.pool.QueryRow(ctx, s.q.nextDue).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
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

// Unfinished lists every record that is not done, leased or not, by name in byte order
// (whatever the database's collation).
func (s *Store) Unfinished(ctx context.Context) ([]*journal.Record, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("list unfinished: %w", err)
	}
	out, err := s.list(ctx, s.q.unfinished)
	if err != nil {
		return nil, fmt.Errorf("list unfinished: %w", err)
	}
	return out, nil
}

// Finished lists up to limit done records, in state unless it is empty, most recently finished
// first (then by name, byte order).
func (s *Store) Finished(ctx context.Context, state journal.State, limit int) ([]*journal.Record, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("list finished: %w", err)
	}
	if limit <= 0 {
		return nil, nil
	}
	out, err := s.list(ctx, s.q.finished, string(state), limit)
	if err != nil {
		return nil, fmt.Errorf("list finished: %w", err)
	}
	return out, nil
}

// IssuedTo lists the records holding a certificate issued to identity, by name in byte order.
func (s *Store) IssuedTo(ctx context.Context, identity string) ([]*journal.Record, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("list issued to an identity: %w", err)
	}
	if identity == "" {
		return nil, nil
	}
	out, err := s.list(ctx, s.q.issuedTo, identity)
	if err != nil {
		return nil, fmt.Errorf("list issued to an identity: %w", err)
	}
	return out, nil
}

// list runs a query whose rows are one data column and decodes them, in their order.
func (s *Store) list(ctx context.Context, query string, args ...any) ([]*journal.Record, error) {
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []*journal.Record
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&data}, func() error {
		rec, err := journal.Decode(data)
		if err != nil {
			return err
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Ping runs an update that changes nothing: it fails when the server cannot be reached, refuses
// writes (a read-only standby after a failover) or the role may no longer update the table.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if _, err := s.pool.Exec(ctx, s.q.ping); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Count counts the records by state.
func (s *Store) Count(ctx context.Context) (map[journal.State]int, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	rows, err := s.pool.Query(ctx, s.q.count)
	if err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	out := map[journal.State]int{}
	var state string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error {
		out[journal.State(state)] = n
		return nil
	}); err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	return out, nil
}

// Compact deletes the records that reached a final state before finishedBefore.
func (s *Store) Compact(ctx context.Context, finishedBefore time.Time) (int, error) {
	if err := s.check(); err != nil {
		return 0, fmt.Errorf("compact: %w", err)
	}
	tag, err := s.pool.Exec(ctx, s.q.compact, journal.UnixNanos(finishedBefore))
	if err != nil {
		return 0, fmt.Errorf("compact: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// Close commits the batch on its way, if any, and closes the pool, waiting for calls in
// progress. Leases this store granted stay until they expire. Calling Close again does nothing.
func (s *Store) Close() error {
	if s.closed.CompareAndSwap(false, true) {
		s.loop.Close()
		s.pool.Close()
	}
	return nil
}

// columns are a record's indexed values.
type columns struct {
	state      string
	final      bool
	nextDue    int64
	finishedAt *int64
	identity   *string // nil: no certificate, or no identity
	data       string
}

func columnsOf(rec *journal.Record) (columns, error) {
	e, err := journal.Encode(rec)
	if err != nil {
		return columns{}, err
	}
	c := columns{state: string(e.State), final: e.Final, nextDue: e.NextDue, data: string(e.Data)}
	if c.final {
		c.finishedAt = &e.FinishedAt
	}
	if e.Identity != "" {
		c.identity = &e.Identity
	}
	return c, nil
}
