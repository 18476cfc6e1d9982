package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/groupcommit"
)

// committer owns the writer connection and the leases. Only the commit loop's goroutine uses
// it, so neither needs a lock, and every call it runs sees the effects of the calls before it,
// as if they had run one at a time.
type committer struct {
	conn   *sql.Conn
	stmt   statements
	leases map[string]*lease

	commits, writes atomic.Uint64 // transactions committed, and the write calls they carried
}

// lease is a grant of a record's lease. Granted and renewed in memory, it is gone when the
// process is, as it must be: no other process may write the file meanwhile.
type lease struct {
	owner string
	until int64 // Unix nanoseconds, the caller's clock
	token int64
}

// grants numbers every lease granted in this process, so that a token is never handed out
// twice, not even by two Stores opened one after the other on the same file.
var grants atomic.Int64

// statements are prepared once on the writer connection: SQLite parses each of them once.
type statements struct {
	begin, commit, rollback *sql.Stmt

	create, update, exists, compact, ping *sql.Stmt
	due, data, nextDue                    *sql.Stmt
}

func newCommitter(ctx context.Context, w *sql.DB) (*committer, error) {
	conn, err := w.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("writer connection: %w", err)
	}
	c := &committer{conn: conn, leases: map[string]*lease{}}
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&c.stmt.begin, `BEGIN IMMEDIATE`},
		{&c.stmt.commit, `COMMIT`},
		{&c.stmt.rollback, `ROLLBACK`},
		{&c.stmt.create, `INSERT INTO records (name, state, final, next_due, finished_at, identity, data)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`},
		{&c.stmt.update, `UPDATE records SET state = ?, final = ?, next_due = ?, finished_at = ?, identity = ?, data = ? WHERE name = ?`},
		{&c.stmt.exists, `SELECT 1 FROM records WHERE name = ?`},
		{&c.stmt.compact, `DELETE FROM records WHERE final = 1 AND finished_at < ?`},
		{&c.stmt.ping, `INSERT INTO probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at`},
		// Due records, oldest first; those leased are skipped in Go, so the limit leaves room
		// for them.
		{&c.stmt.due, `SELECT rowid, name FROM records WHERE final = 0 AND next_due <= ? ORDER BY next_due, name LIMIT ?`},
		{&c.stmt.data, `SELECT data FROM records WHERE rowid = ?`},
		{&c.stmt.nextDue, `SELECT rowid, name, next_due FROM records WHERE final = 0 ORDER BY next_due, name LIMIT ?`},
	} {
		if *p.stmt, err = conn.PrepareContext(ctx, p.query); err != nil {
			_ = c.close()
			return nil, fmt.Errorf("prepare %q: %w", p.query, err)
		}
	}
	return c, nil
}

// close closes the statements and gives the connection back to its pool, which Store.Close
// closes.
func (c *committer) close() error {
	var errs []error
	for _, s := range []*sql.Stmt{c.stmt.begin, c.stmt.commit, c.stmt.rollback, c.stmt.create, c.stmt.update,
		c.stmt.exists, c.stmt.compact, c.stmt.ping, c.stmt.due, c.stmt.data, c.stmt.nextDue} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	errs = append(errs, c.conn.Close())
	return errors.Join(errs...)
}

type opKind int

const (
	opCreate opKind = iota
	opUpdate
	opRenew
	opLease
	opNextDue
	opCompact
	opPing
)

// writes reports whether k writes to the file.
func (k opKind) writes() bool { return k == opCreate || k == opUpdate || k == opCompact || k == opPing }

// op is one call of a Store method, run by the committer. Records come encoded and leave
// undecoded, so that JSON is the callers' work, not the loop's.
type op struct {
	kind  opKind
	name  string
	cols  columns
	owner string
	token int64
	now   int64 // the caller's now; Compact: its finishedBefore; Ping: the probe's value
	until int64 // the lease's new end; 0 releases it (Update)
	limit int

	created bool
	leased  []leased
	due     time.Time
	found   bool
	deleted int
}

type leased struct {
	name  string
	token int64
	data  []byte
}

// undo remembers the leases a batch changed, as they were before it, so that a batch whose
// transaction fails leaves none of its calls' effects.
type undo map[string]*lease

func (c *committer) setLease(u undo, name string, l *lease) {
	if _, ok := u[name]; !ok {
		u[name] = c.leases[name]
	}
	if l == nil {
		delete(c.leases, name)
	} else {
		c.leases[name] = l
	}
}

func (c *committer) restore(u undo) {
	for name, l := range u {
		if l == nil {
			delete(c.leases, name)
		} else {
			c.leases[name] = l
		}
	}
}

// commit runs one batch: every write of it in one transaction, so one fsync for all of them,
// and every caller answered once it committed. Should the transaction fail, nothing of the
// batch stays (leases included) and each call is run again in a transaction of its own, so
// that one call's failure (a full disk) is its own, not its neighbours'.
func (c *committer) commit(batch []*groupcommit.Call[*op]) {
	ctx := context.Background() // a statement cut short would make the connection unusable
	u := undo{}
	tx := false
	for _, call := range batch {
		if call.Op.kind.writes() {
			tx = true
			break
		}
	}
	if tx {
		if _, err := c.stmt.begin.ExecContext(ctx); err != nil {
			c.fail(batch, u, false, err)
			return
		}
	}
	for _, call := range batch {
		if err := call.Ctx.Err(); err != nil {
			call.Err = err // the caller gave up before the call ran: it runs not at all
			continue
		}
		answer, err := c.run(ctx, call.Op, u)
		if err != nil {
			c.fail(batch, u, tx, err)
			return
		}
		call.Err = answer
	}
	if tx {
		if _, err := c.stmt.commit.ExecContext(ctx); err != nil {
			c.fail(batch, u, true, err)
			return
		}
		c.commits.Add(1)
		for _, call := range batch {
			if call.Op.kind.writes() {
				c.writes.Add(1)
			}
		}
	}
}

// fail undoes a batch that err broke, and answers its calls.
func (c *committer) fail(batch []*groupcommit.Call[*op], u undo, inTx bool, err error) {
	if inTx {
		// A failed COMMIT may have rolled back already; then this fails too, harmlessly.
		_, _ = c.stmt.rollback.ExecContext(context.Background())
	}
	c.restore(u)
	if len(batch) == 1 {
		batch[0].Op.reset()
		batch[0].Err = err
		return
	}
	for _, call := range batch {
		call.Op.reset()
		call.Err = nil
		c.commit([]*groupcommit.Call[*op]{call})
	}
}

// reset clears the results of a run that is to be redone.
func (o *op) reset() {
	o.created, o.leased, o.due, o.found, o.deleted = false, nil, time.Time{}, false, 0
}

// abandoned gives back the leases of a Lease call whose caller stopped waiting: nobody has
// their tokens, so nobody would write or release them before they expired.
func (c *committer) abandoned(call *groupcommit.Call[*op]) {
	if call.Op.kind != opLease {
		return
	}
	for _, l := range call.Op.leased {
		if cur := c.leases[l.name]; cur != nil && cur.token == l.token {
			delete(c.leases, l.name)
		}
	}
}

// run runs one call. answer is what its caller is told (ErrLeaseLost, ErrNotFound); err is a
// failure of the database, which fails the batch.
func (c *committer) run(ctx context.Context, o *op, u undo) (answer, err error) {
	switch o.kind {
	case opCreate:
		res, err := c.stmt.create.ExecContext(ctx, o.name, o.cols.state, o.cols.final, o.cols.nextDue, o.cols.finishedAt, o.cols.identity, o.cols.data)
		if err != nil {
			return nil, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, err
		}
		if o.created = n == 1; o.created && c.leases[o.name] != nil {
			c.setLease(u, o.name, nil) // a record of that name was compacted while leased
		}
		return nil, nil

	case opUpdate, opRenew:
		l := c.leases[o.name]
		if l == nil || l.owner != o.owner || l.token != o.token || l.until <= o.now {
			return c.refused(ctx, o.name)
		}
		if o.kind == opUpdate {
			res, err := c.stmt.update.ExecContext(ctx, o.cols.state, o.cols.final, o.cols.nextDue, o.cols.finishedAt, o.cols.identity, o.cols.data, o.name)
			if err != nil {
				return nil, err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return nil, err
			}
			if n == 0 { // compacted while leased
				c.setLease(u, o.name, nil)
				return journal.ErrNotFound, nil
			}
		}
		if o.until == 0 {
			c.setLease(u, o.name, nil)
		} else {
			c.setLease(u, o.name, &lease{owner: o.owner, until: o.until, token: l.token})
		}
		return nil, nil

	case opLease:
		return nil, c.lease(ctx, o, u)

	case opNextDue:
		return nil, c.nextDue(ctx, o)

	case opPing:
		_, err := c.stmt.ping.ExecContext(ctx, o.now)
		return nil, err

	case opCompact:
		res, err := c.stmt.compact.ExecContext(ctx, o.now)
		if err != nil {
			return nil, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, err
		}
		o.deleted = int(n)
		return nil, nil
	}
	return nil, fmt.Errorf("unknown journal call %d", o.kind)
}

// refused tells a missing record from a lease that is not the caller's.
func (c *committer) refused(ctx context.Context, name string) (answer, err error) {
	var one int
	switch err := c.stmt.exists.QueryRowContext(ctx, name).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return journal.ErrNotFound, nil
	case err != nil:
		return nil, err
	}
	return journal.ErrLeaseLost, nil
}

// lease grants o.owner the due records no unexpired lease holds, oldest due first.
func (c *committer) lease(ctx context.Context, o *op, u undo) error {
	if o.limit <= 0 {
		return nil
	}
	type due struct {
		rowid int64
		name  string
	}
	var picked []due
	rows, err := c.stmt.due.QueryContext(ctx, o.now, int64(o.limit)+int64(len(c.leases)))
	if err != nil {
		return err
	}
	for rows.Next() && len(picked) < o.limit {
		var d due
		if err := rows.Scan(&d.rowid, &d.name); err != nil {
			_ = rows.Close()
			return err
		}
		if l := c.leases[d.name]; l != nil && l.until > o.now {
			continue
		}
		picked = append(picked, d)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	for _, d := range picked {
		var data []byte
		if err := c.stmt.data.QueryRowContext(ctx, d.rowid).Scan(&data); err != nil {
			return err
		}
		l := &lease{owner: o.owner, until: o.until, token: grants.Add(1)}
		c.setLease(u, d.name, l)
		o.leased = append(o.leased, leased{name: d.name, token: l.token, data: data})
	}
	return nil
}

// nextDue finds the earliest NextDue of an unfinished record that no lease holds, expired or
// not: the holder of one schedules it.
func (c *committer) nextDue(ctx context.Context, o *op) error {
	rows, err := c.stmt.nextDue.QueryContext(ctx, int64(len(c.leases))+1)
	if err != nil {
		return err
	}
	var (
		rowid, at int64
		name      string
	)
	for rows.Next() {
		if err := rows.Scan(&rowid, &name, &at); err != nil {
			_ = rows.Close()
			return err
		}
		if c.leases[name] == nil {
			o.found = true
			break
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil || !o.found {
		return err
	}
	if at != math.MinInt64 && at != math.MaxInt64 {
		o.due = time.Unix(0, at)
		return nil
	}
	// Clamped by journal.UnixNanos (the zero time among others): the record knows the time.
	var data []byte
	if err := c.stmt.data.QueryRowContext(ctx, rowid).Scan(&data); err != nil {
		return err
	}
	rec, err := journal.Decode(data)
	if err != nil {
		return err
	}
	o.due = rec.NextDue
	return nil
}
