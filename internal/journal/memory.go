package journal

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"
)

// Memory is a Store that lives in the process. It loses everything on exit: use it for tests and
// demos, never where a restart must not lose claimed processes.
type Memory struct {
	mu      sync.Mutex
	closed  bool
	records map[string]*memRecord
}

type memRecord struct {
	rec        *Record
	owner      string
	leaseUntil time.Time
	token      int64 // the latest grant; kept across releases so that tokens only grow
}

var (
	_ Store   = (*Memory)(nil)
	_ Pinger  = (*Memory)(nil)
	_ Counter = (*Memory)(nil)
)

// errNoOwner keeps Memory as strict as the durable stores: a lease needs an owner.
var errNoOwner = errors.New("journal: lease owner is empty")

// errNoRenewal is Renew's answer to a duration that would not extend anything.
var errNoRenewal = errors.New("journal: renew needs a positive duration")

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{records: map[string]*memRecord{}} }

// lock takes the mutex and reports ErrClosed on a closed store (the mutex is then released).
func (m *Memory) lock() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	return nil
}

func (m *Memory) Create(_ context.Context, rec *Record) (bool, error) {
	if err := m.lock(); err != nil {
		return false, err
	}
	defer m.mu.Unlock()
	if _, ok := m.records[rec.Name]; ok {
		return false, nil
	}
	c := rec.Clone()
	c.LeaseToken = 0
	m.records[rec.Name] = &memRecord{rec: c}
	return true, nil
}

func (m *Memory) Get(_ context.Context, name string) (*Record, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	r, ok := m.records[name]
	if !ok {
		return nil, ErrNotFound
	}
	return r.rec.Clone(), nil
}

func (m *Memory) Lease(_ context.Context, owner string, now time.Time, d time.Duration, limit int) ([]*Record, error) {
	if owner == "" {
		return nil, errNoOwner
	}
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	if limit <= 0 {
		return nil, nil
	}
	var due []*memRecord
	for _, r := range m.records {
		if r.rec.Done() || r.rec.NextDue.After(now) {
			continue
		}
		if r.owner != "" && r.leaseUntil.After(now) {
			continue
		}
		due = append(due, r)
	}
	// Oldest due first, so a backlog drains in order and nothing starves.
	sort.Slice(due, func(i, j int) bool { return due[i].rec.NextDue.Before(due[j].rec.NextDue) })
	if len(due) > limit {
		due = due[:limit]
	}
	out := make([]*Record, len(due))
	for i, r := range due {
		r.owner, r.leaseUntil = owner, now.Add(d)
		r.token++
		out[i] = r.rec.Clone()
		out[i].LeaseToken = r.token
	}
	return out, nil
}

// held reports whether owner holds r's lease under token, unexpired at now.
func (r *memRecord) held(owner string, token int64, now time.Time) bool {
	return r.owner != "" && r.owner == owner && r.token == token && r.leaseUntil.After(now)
}

func (m *Memory) Update(_ context.Context, owner string, rec *Record, now time.Time, renew time.Duration) error {
	if owner == "" {
		return errNoOwner
	}
	if err := m.lock(); err != nil {
		return err
	}
	defer m.mu.Unlock()
	r, ok := m.records[rec.Name]
	if !ok {
		return ErrNotFound
	}
	if !r.held(owner, rec.LeaseToken, now) {
		return ErrLeaseLost
	}
	r.rec = rec.Clone()
	r.rec.LeaseToken = 0
	if renew > 0 {
		r.leaseUntil = now.Add(renew)
	} else {
		r.owner, r.leaseUntil = "", time.Time{}
	}
	return nil
}

func (m *Memory) Renew(_ context.Context, owner, name string, token int64, now time.Time, d time.Duration) error {
	if owner == "" {
		return errNoOwner
	}
	if d <= 0 {
		return errNoRenewal
	}
	if err := m.lock(); err != nil {
		return err
	}
	defer m.mu.Unlock()
	r, ok := m.records[name]
	if !ok {
		return ErrNotFound
	}
	if !r.held(owner, token, now) {
		return ErrLeaseLost
	}
	r.leaseUntil = now.Add(d)
	return nil
}

func (m *Memory) NextDue(context.Context) (time.Time, bool, error) {
	if err := m.lock(); err != nil {
		return time.Time{}, false, err
	}
	defer m.mu.Unlock()
	var first time.Time
	found := false
	for _, r := range m.records {
		if r.rec.Done() || r.owner != "" {
			continue // a leased record is its holder's to schedule
		}
		if !found || r.rec.NextDue.Before(first) {
			first, found = r.rec.NextDue, true
		}
	}
	return first, found, nil
}

func (m *Memory) Unfinished(context.Context) ([]*Record, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	var out []*Record
	for _, r := range m.records {
		if !r.rec.Done() {
			out = append(out, r.rec.Clone())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *Memory) Finished(_ context.Context, state State, limit int) ([]*Record, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	if limit <= 0 {
		return nil, nil
	}
	var out []*Record
	for _, r := range m.records {
		if r.rec.Done() && (state == "" || r.rec.State == state) {
			out = append(out, r.rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return listedFirst(out[i], out[j]) })
	if len(out) > limit {
		out = out[:limit]
	}
	for i, r := range out {
		out[i] = r.Clone()
	}
	return out, nil
}

// listedFirst is Finished's order: the later FinishedAt first (compared as the durable stores
// compare it, in Unix nanoseconds), then by name in byte order.
func listedFirst(a, b *Record) bool {
	if x, y := UnixNanos(a.FinishedAt), UnixNanos(b.FinishedAt); x != y {
		return x > y
	}
	return a.Name < b.Name
}

func (m *Memory) IssuedTo(_ context.Context, identity string) ([]*Record, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	var out []*Record
	if identity == "" {
		return nil, nil
	}
	for _, r := range m.records {
		if r.rec.IssuedIdentity() == identity {
			out = append(out, r.rec.Clone())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *Memory) Compact(_ context.Context, finishedBefore time.Time) (int, error) {
	if err := m.lock(); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	n := 0
	for name, r := range m.records {
		if r.rec.Done() && r.rec.FinishedAt.Before(finishedBefore) {
			delete(m.records, name)
			n++
		}
	}
	return n, nil
}

// Ping reports ErrClosed once the store is closed.
func (m *Memory) Ping(context.Context) error {
	if err := m.lock(); err != nil {
		return err
	}
	m.mu.Unlock()
	return nil
}

// Count counts the records by state.
func (m *Memory) Count(context.Context) (map[State]int, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := map[State]int{}
	for _, r := range m.records {
		out[r.rec.State]++
	}
	return out, nil
}

// Close makes every later call fail with ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
