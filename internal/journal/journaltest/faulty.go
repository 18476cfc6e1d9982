package journaltest

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
)

// The writes of a Store, as Faulty names them.
const (
	OpCreate     = "Create"
	OpGet        = "Get"
	OpLease      = "Lease"
	OpUpdate     = "Update"
	OpRenew      = "Renew"
	OpNextDue    = "NextDue"
	OpUnfinished = "Unfinished"
	OpCompact    = "Compact"
)

// writeOps are every write Faulty can fail.
var writeOps = []string{OpCreate, OpLease, OpUpdate, OpRenew, OpCompact}

// ErrDiskFull is the error of a write to a full disk, as SQLite's file layer sees it.
var ErrDiskFull error = &fs.PathError{Op: "write", Path: "journal.db-wal", Err: syscall.ENOSPC}

// Faulty wraps a Store and makes its writes fail on demand, as a full disk or a database that
// went away would: a failed write returns the error and writes nothing. Reads always pass
// through. It is safe for concurrent use. Injected faults are counted, and so are the errors of
// the wrapped store itself (a database restarted under it), so that a test can wait until a
// fault was hit instead of sleeping, and prove that it was.
type Faulty struct {
	journal.Store

	mu      sync.Mutex
	left    int      // writes still to fail; < 0: until Heal
	err     error    // what they fail with
	ops     []string // which writes fail
	refused map[string]int
	failed  map[string]int // errors of the wrapped store
	// unwritten counts, by record name and state, the writes (Create, Update) that returned an
	// error, whatever its cause: what the adapter did without managing to record it.
	unwritten map[string]map[journal.State]int
}

var _ journal.Store = (*Faulty)(nil)

// NewFaulty wraps s; nothing fails until FailWrites.
func NewFaulty(s journal.Store) *Faulty {
	return &Faulty{Store: s, refused: map[string]int{}, failed: map[string]int{},
		unwritten: map[string]map[journal.State]int{}}
}

// FailWrites makes the next n writes among ops (OpCreate, OpLease, OpUpdate, OpRenew,
// OpCompact; none means all of them) fail with err, or every such write until Heal when n < 0. It replaces the
// fault set before.
func (f *Faulty) FailWrites(n int, err error, ops ...string) {
	if len(ops) == 0 {
		ops = writeOps
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left, f.err, f.ops = n, err, slices.Clone(ops)
}

// Heal ends the fault: every write passes from now on.
func (f *Faulty) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left, f.err, f.ops = 0, nil, nil
}

// Refused reports how many writes failed so far by injection, by op.
func (f *Faulty) Refused() map[string]int { return f.copyCounts(f.refused) }

// StoreErrors reports how many calls the wrapped store itself failed, by op. ErrNotFound and
// ErrLeaseLost are answers, not failures, and are not counted.
func (f *Faulty) StoreErrors() map[string]int { return f.copyCounts(f.failed) }

func (f *Faulty) copyCounts(m map[string]int) map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Unwritten reports how many writes of the record name in state returned an error (injected,
// from the store, or a lost lease): for instance an upload that happened but whose "uploaded"
// could not be journaled, so that the adapter may rightly make it again.
func (f *Faulty) Unwritten(name string, state journal.State) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unwritten[name][state]
}

// written records the outcome of a write of rec.
func (f *Faulty) written(rec *journal.Record, err error) {
	if err == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.unwritten[rec.Name]
	if m == nil {
		m = map[journal.State]int{}
		f.unwritten[rec.Name] = m
	}
	m[rec.State]++
}

// fault returns the error op must fail with, or nil.
func (f *Faulty) fault(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.left == 0 || !slices.Contains(f.ops, op) {
		return nil
	}
	if f.left > 0 {
		f.left--
	}
	f.refused[op]++
	return f.err
}

// seen counts err if the wrapped store failed op, and returns it.
func (f *Faulty) seen(op string, err error) error {
	if err != nil && !errors.Is(err, journal.ErrNotFound) && !errors.Is(err, journal.ErrLeaseLost) {
		f.mu.Lock()
		f.failed[op]++
		f.mu.Unlock()
	}
	return err
}

func (f *Faulty) Create(ctx context.Context, rec *journal.Record) (bool, error) {
	if err := f.fault(OpCreate); err != nil {
		f.written(rec, err)
		return false, err
	}
	created, err := f.Store.Create(ctx, rec)
	f.written(rec, err)
	return created, f.seen(OpCreate, err)
}

func (f *Faulty) Get(ctx context.Context, name string) (*journal.Record, error) {
	rec, err := f.Store.Get(ctx, name)
	return rec, f.seen(OpGet, err)
}

func (f *Faulty) Lease(ctx context.Context, owner string, now time.Time, d time.Duration, limit int) ([]*journal.Record, error) {
	if err := f.fault(OpLease); err != nil {
		return nil, err
	}
	recs, err := f.Store.Lease(ctx, owner, now, d, limit)
	return recs, f.seen(OpLease, err)
}

func (f *Faulty) Update(ctx context.Context, owner string, rec *journal.Record, now time.Time, renew time.Duration) error {
	if err := f.fault(OpUpdate); err != nil {
		f.written(rec, err)
		return err
	}
	err := f.Store.Update(ctx, owner, rec, now, renew)
	f.written(rec, err)
	return f.seen(OpUpdate, err)
}

func (f *Faulty) Renew(ctx context.Context, owner, name string, token int64, now time.Time, d time.Duration) error {
	if err := f.fault(OpRenew); err != nil {
		return err
	}
	return f.seen(OpRenew, f.Store.Renew(ctx, owner, name, token, now, d))
}

func (f *Faulty) NextDue(ctx context.Context) (time.Time, bool, error) {
	t, ok, err := f.Store.NextDue(ctx)
	return t, ok, f.seen(OpNextDue, err)
}

func (f *Faulty) Unfinished(ctx context.Context) ([]*journal.Record, error) {
	recs, err := f.Store.Unfinished(ctx)
	return recs, f.seen(OpUnfinished, err)
}

func (f *Faulty) Compact(ctx context.Context, finishedBefore time.Time) (int, error) {
	if err := f.fault(OpCompact); err != nil {
		return 0, err
	}
	n, err := f.Store.Compact(ctx, finishedBefore)
	return n, f.seen(OpCompact, err)
}
