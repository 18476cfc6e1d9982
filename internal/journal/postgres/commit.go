package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/certprov/certprov-adapter/internal/journal/groupcommit"
)

// op is one write (Create, Update, Renew): one statement, which reports whether it wrote and,
// for a fenced one, whether the record exists.
type op struct {
	query string
	args  []any
	exec  bool // the statement returns no row: it wrote if it affected one

	wrote, exists bool
}

// do runs o in the next batch.
func (s *Store) do(ctx context.Context, o *op) error {
	err := s.loop.Do(ctx, o)
	if errors.Is(err, groupcommit.ErrClosed) {
		return errClosed
	}
	return err
}

// commit sends a batch's statements to the server at once: one round trip, one implicit
// transaction, one commit. The statements of one batch touch distinct rows or follow one
// another on one row as their calls came, so the batch is what running them one by one would
// have done. Should a statement fail, the server rolled the whole batch back: each call is
// then sent again on its own, so that its answer is its own. A connection that fails answers
// every call with its error (they may or may not have committed, as any call cut off).
func (s *Store) commit(batch []*groupcommit.Call[*op]) {
	live := batch[:0:0]
	for _, call := range batch {
		if err := call.Ctx.Err(); err != nil {
			call.Err = err // the caller gave up before the call was sent: it is not sent
			continue
		}
		live = append(live, call)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := batchContext(live)
	defer cancel()
	if len(live) == 1 { // the same round trip, without a batch's pipeline
		o := live[0].Op
		if live[0].Err = o.alone(ctx, s.pool); live[0].Err != nil {
			o.wrote, o.exists = false, false
			return
		}
		s.commits.Add(1)
		s.writes.Add(1)
		return
	}
	b := &pgx.Batch{}
	for _, call := range live {
		b.Queue(call.Op.query, call.Op.args...)
	}
	results := s.pool.SendBatch(ctx, b)
	var failed error
	for _, call := range live {
		if failed = call.Op.read(results); failed != nil {
			break
		}
	}
	if err := results.Close(); failed == nil {
		failed = err
	}
	if failed == nil {
		s.commits.Add(1)
		s.writes.Add(uint64(len(live)))
		return
	}
	var pgErr *pgconn.PgError
	if !errors.As(failed, &pgErr) {
		for _, call := range live {
			call.Op.wrote, call.Op.exists = false, false
			call.Err = failed
		}
		return
	}
	for _, call := range live {
		call.Op.wrote, call.Op.exists = false, false
		s.commit([]*groupcommit.Call[*op]{call})
	}
}

// alone runs o on its own.
func (o *op) alone(ctx context.Context, pool *pgxpool.Pool) error {
	if o.exec {
		tag, err := pool.Exec(ctx, o.query, o.args...)
		o.wrote = tag.RowsAffected() == 1
		return err
	}
	return pool.QueryRow(ctx, o.query, o.args...).Scan(&o.wrote, &o.exists)
}

// CommitStats reports the transactions the store's writes were committed in so far, each one
// commit (one WAL flush) on the server, and the writes they carried: writes ÷ commits is how
// many writes shared a commit. Leases are not among them.
func (s *Store) CommitStats() (commits, writes uint64) { return s.commits.Load(), s.writes.Load() }

// read takes o's result from the batch.
func (o *op) read(r pgx.BatchResults) error {
	if o.exec {
		tag, err := r.Exec()
		o.wrote = tag.RowsAffected() == 1
		return err
	}
	return r.QueryRow().Scan(&o.wrote, &o.exists)
}

// batchContext bounds a batch by the latest deadline of its callers: none of them waits for
// it any longer. When one of them has no deadline, neither has the batch, as that call made
// on its own would not.
func batchContext(batch []*groupcommit.Call[*op]) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, call := range batch {
		d, ok := call.Ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.Background(), latest)
}
