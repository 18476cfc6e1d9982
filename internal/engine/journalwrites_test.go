package engine_test

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
)

// TestJournalWritesPerCertificate pins what one certificate costs the journal: the writes the
// journal's benchmarks make per certificate (journaltest.CertificateSteps) are the engine's. A
// poll that finds the device not signed yet costs one more lease and one more write (the
// record released until the next poll), so each is counted from the emulator's calls.
func TestJournalWritesPerCertificate(t *testing.T) {
	var counted *countingStore
	h := newHarness(t, harnessOptions{store: func(s journal.Store) journal.Store {
		counted = &countingStore{Store: s, writes: map[string]map[string]int{}, leases: map[string]int{}}
		return counted
	}})
	var names []string
	for i := range 6 {
		names = append(names, h.start(emulator.ProcessSpec{Scope: []string{"device", "user"}[i%2], KeyType: []string{"rsa", "ecdsa"}[i/2%2]}))
	}
	snaps := h.waitFinished(names, 60*time.Second)
	h.waitJournalIdle(5 * time.Second)
	for _, name := range names {
		s := snaps[name]
		h.mustIssue(s)
		extraPolls := s.Calls[emulator.MethodOperationsGet] - 1
		want := maps.Clone(journaltest.CertificateWrites)
		want[journaltest.OpUpdate] += extraPolls
		if got := counted.writesOf(name); !maps.Equal(got, want) {
			t.Errorf("%s: journal writes %v, want %v (%d polls found the device not signed yet)", name, got, want, extraPolls)
		}
		if got, want := counted.leasesOf(name), 2+extraPolls; got != want {
			t.Errorf("%s: leased %d times, want %d", name, got, want)
		}
	}
}

// countingStore counts, per record, the writes that landed and the leases granted.
type countingStore struct {
	journal.Store
	mu     sync.Mutex
	writes map[string]map[string]int // record → op → count
	leases map[string]int
}

func (c *countingStore) wrote(name, op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writes[name] == nil {
		c.writes[name] = map[string]int{}
	}
	c.writes[name][op]++
}

func (c *countingStore) writesOf(name string) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.writes[name])
}

func (c *countingStore) leasesOf(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leases[name]
}

func (c *countingStore) Create(ctx context.Context, rec *journal.Record) (bool, error) {
	created, err := c.Store.Create(ctx, rec)
	if err == nil {
		c.wrote(rec.Name, journaltest.OpCreate)
	}
	return created, err
}

func (c *countingStore) Update(ctx context.Context, owner string, rec *journal.Record, now time.Time, renew time.Duration) error {
	err := c.Store.Update(ctx, owner, rec, now, renew)
	if err == nil {
		c.wrote(rec.Name, journaltest.OpUpdate)
	}
	return err
}

func (c *countingStore) Renew(ctx context.Context, owner, name string, token int64, now time.Time, d time.Duration) error {
	err := c.Store.Renew(ctx, owner, name, token, now, d)
	if err == nil {
		c.wrote(name, journaltest.OpRenew)
	}
	return err
}

func (c *countingStore) Lease(ctx context.Context, owner string, now time.Time, d time.Duration, limit int) ([]*journal.Record, error) {
	recs, err := c.Store.Lease(ctx, owner, now, d, limit)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		c.leases[r.Name]++
	}
	return recs, err
}
