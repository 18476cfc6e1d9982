package journaltest

import (
	"context"
	"io/fs"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
)

// The writes of a Store, as Faulty names them.
const (
	OpCreate  = "Create"
	OpLease   = "Lease"
	OpUpdate  = "Update"
	OpCompact = "Compact"
)

// writeOps are every write Faulty can fail.
var writeOps = []string{OpCreate, OpLease, OpUpdate, OpCompact}

// ErrDiskFull is the error of a write to a full disk, as SQLite's file layer sees it.
var ErrDiskFull error = &fs.PathError{Op: "write", Path: "journal.db-wal", Err: syscall.ENOSPC}

// Faulty wraps a Store and makes its writes fail on demand, as a full disk or a database that
// went away would: a failed write returns the error and writes nothing. Reads always pass
// through. It is safe for concurrent use; faults are counted so that a test can wait until they
// were hit instead of sleeping.
type Faulty struct {
	journal.Store

	mu      sync.Mutex
	left    int      // writes still to fail; < 0: until Heal
	err     error    // what they fail with
	ops     []string // which writes fail
	refused map[string]int
}

var _ journal.Store = (*Faulty)(nil)

// NewFaulty wraps s; nothing fails until FailWrites.
func NewFaulty(s journal.Store) *Faulty {
	return &Faulty{Store: s, refused: map[string]int{}}
}

// FailWrites makes the next n writes among ops (OpCreate, OpLease, OpUpdate, OpCompact; none
// means all of them) fail with err, or every such write until Heal when n < 0. It replaces the
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

// Refused reports how many writes failed so far, by op.
func (f *Faulty) Refused() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.refused))
	for k, v := range f.refused {
		out[k] = v
	}
	return out
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

func (f *Faulty) Create(ctx context.Context, rec *journal.Record) (bool, error) {
	if err := f.fault(OpCreate); err != nil {
		return false, err
	}
	return f.Store.Create(ctx, rec)
}

func (f *Faulty) Lease(ctx context.Context, owner string, now time.Time, d time.Duration, limit int) ([]*journal.Record, error) {
	if err := f.fault(OpLease); err != nil {
		return nil, err
	}
	return f.Store.Lease(ctx, owner, now, d, limit)
}

func (f *Faulty) Update(ctx context.Context, owner string, rec *journal.Record, now time.Time, renew time.Duration) error {
	if err := f.fault(OpUpdate); err != nil {
		return err
	}
	return f.Store.Update(ctx, owner, rec, now, renew)
}

func (f *Faulty) Compact(ctx context.Context, finishedBefore time.Time) (int, error) {
	if err := f.fault(OpCompact); err != nil {
		return 0, err
	}
	return f.Store.Compact(ctx, finishedBefore)
}
