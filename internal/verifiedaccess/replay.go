package verifiedaccess

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ChallengeStore remembers the challenges the enrollment server handed out, so that an answer
// is accepted only for a challenge issued here, within the adapter's lifetime, and once — in
// every replica that shares the store. Ids are opaque bytes (challengeID: a SHA-256 of the
// challenge's data, never the challenge itself); every time comes from the caller's clock.
// Implementations are safe for concurrent use by any number of servers, and honour ctx.
//
// The PostgreSQL journal provides one shared by the replicas on one database
// (postgres.Store.Challenges); MemoryChallenges serves a single replica.
type ChallengeStore interface {
	// Issue records that challenge id was handed out at issued, to be forgotten once until has
	// passed. An id recorded already, and not forgotten yet, keeps its first record. An error means the challenge must
	// not be handed out: its answer could not be recognised.
	Issue(ctx context.Context, id []byte, issued, until time.Time) error
	// Use marks challenge id used at now, unless it was used before, and returns when it was
	// issued. A zero issued means the store does not know the id: never issued, or forgotten
	// because until passed. first reports whether this call marked it: of any number of
	// concurrent Uses of one id, in any replica sharing the store, exactly one gets true.
	Use(ctx context.Context, id []byte, now time.Time) (issued time.Time, first bool, err error)
	// Release undoes a Use whose enrollment never reached a decision (Google could not be
	// asked), so that the same answer may be sent again. Releasing an unknown id does nothing.
	Release(ctx context.Context, id []byte) error
	// Purge forgets the challenges whose until is not after now and returns how many it forgot.
	Purge(ctx context.Context, now time.Time) (int, error)
}

// challengeID is the store's id of a challenge: a hash of its SignedData's data (what the device
// echoes in field 1 of its answer), so that the store holds nothing an attacker could answer.
func challengeID(data []byte) []byte {
	d := digest("challenge", data)
	return d[:]
}

// digest hashes a domain label and values, so that ids of different kinds never collide.
func digest(label string, parts ...[]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(label))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// ErrChallengesFull is returned by MemoryChallenges.Issue when it holds its maximum of
// unexpired challenges.
var ErrChallengesFull = errors.New("too many unexpired challenges remembered")

// MemoryChallenges is a ChallengeStore in this process's memory, for a single replica (a SQLite or
// memory journal): another replica, or this one after a restart, does not know its challenges.
// It is bounded: full of unexpired challenges, it refuses to issue more (ErrChallengesFull)
// rather than forget one whose answer could then be replayed.
type MemoryChallenges struct {
	mu      sync.Mutex
	entries map[string]*memoryChallenge
	max     int
}

type memoryChallenge struct {
	issued, until time.Time
	used          bool
}

var _ ChallengeStore = (*MemoryChallenges)(nil)

// NewMemoryChallenges remembers at most max challenges (DefaultMaxTracked when max ≤ 0).
func NewMemoryChallenges(max int) *MemoryChallenges {
	if max <= 0 {
		max = DefaultMaxTracked
	}
	return &MemoryChallenges{entries: map[string]*memoryChallenge{}, max: max}
}

// Issue implements ChallengeStore.
func (m *MemoryChallenges) Issue(ctx context.Context, id []byte, issued, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[string(id)]; ok && e.until.After(issued) {
		return nil
	}
	if len(m.entries) >= m.max {
		m.purgeLocked(issued)
		if len(m.entries) >= m.max {
			return fmt.Errorf("issue challenge: %w (%d)", ErrChallengesFull, m.max)
		}
	}
	m.entries[string(id)] = &memoryChallenge{issued: issued, until: until}
	return nil
}

// Use implements ChallengeStore.
func (m *MemoryChallenges) Use(ctx context.Context, id []byte, now time.Time) (time.Time, bool, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[string(id)]
	if !ok || !e.until.After(now) {
		return time.Time{}, false, nil
	}
	first := !e.used
	e.used = true
	return e.issued, first, nil
}

// Release implements ChallengeStore.
func (m *MemoryChallenges) Release(ctx context.Context, id []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[string(id)]; ok {
		e.used = false
	}
	return nil
}

// Purge implements ChallengeStore.
func (m *MemoryChallenges) Purge(ctx context.Context, now time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.purgeLocked(now), nil
}

// Len reports the number of challenges held, expired ones included until the next purge.
func (m *MemoryChallenges) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

func (m *MemoryChallenges) purgeLocked(now time.Time) int {
	n := 0
	for k, e := range m.entries {
		if !e.until.After(now) {
			delete(m.entries, k)
			n++
		}
	}
	return n
}
