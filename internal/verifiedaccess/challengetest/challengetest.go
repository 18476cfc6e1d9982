// Package challengetest is the conformance suite of verifiedaccess.ChallengeStore: every
// implementation (the memory store, the PostgreSQL journal's) must pass it, under -race.
package challengetest

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/verifiedaccess"
)

// Open returns a function that opens stores sharing one backend: each call is another replica
// on the same data (for the memory store, the same store again).
type Open func(t *testing.T) func() verifiedaccess.ChallengeStore

// Run runs the suite. Every time is explicit, so nothing waits on a clock.
func Run(t *testing.T, open Open) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	lifetime := time.Minute

	t.Run("unknown", func(t *testing.T) {
		s := open(t)()
		issued, first, err := s.Use(ctx, id(t), t0)
		if err != nil || !issued.IsZero() || first {
			t.Fatalf("Use of an unknown id: %v %v %v", issued, first, err)
		}
		if err := s.Release(ctx, id(t)); err != nil {
			t.Fatalf("Release of an unknown id: %v", err)
		}
	})
	t.Run("used once", func(t *testing.T) {
		s := open(t)()
		c := id(t)
		mustIssue(t, s, c, t0, t0.Add(lifetime))
		issued, first, err := s.Use(ctx, c, t0.Add(time.Second))
		if err != nil || !issued.Equal(t0) || !first {
			t.Fatalf("first Use: %v %v %v", issued, first, err)
		}
		issued, first, err = s.Use(ctx, c, t0.Add(2*time.Second))
		if err != nil || !issued.Equal(t0) || first {
			t.Fatalf("second Use: %v %v %v; want the issue time and not first", issued, first, err)
		}
		if _, first, _ := s.Use(ctx, id(t), t0); first {
			t.Error("another id is known")
		}
	})
	t.Run("issued twice keeps the first record", func(t *testing.T) {
		s := open(t)()
		c := id(t)
		mustIssue(t, s, c, t0, t0.Add(lifetime))
		if _, _, err := s.Use(ctx, c, t0); err != nil {
			t.Fatal(err)
		}
		mustIssue(t, s, c, t0.Add(time.Second), t0.Add(lifetime))
		if issued, first, err := s.Use(ctx, c, t0.Add(2*time.Second)); err != nil || !issued.Equal(t0) || first {
			t.Fatalf("Use after a second Issue: %v %v %v", issued, first, err)
		}
	})
	t.Run("release makes it usable again", func(t *testing.T) {
		s := open(t)()
		c := id(t)
		mustIssue(t, s, c, t0, t0.Add(lifetime))
		if _, first, err := s.Use(ctx, c, t0); err != nil || !first {
			t.Fatal(first, err)
		}
		if err := s.Release(ctx, c); err != nil {
			t.Fatal(err)
		}
		if issued, first, err := s.Use(ctx, c, t0.Add(time.Second)); err != nil || !first || !issued.Equal(t0) {
			t.Fatalf("Use after Release: %v %v %v", issued, first, err)
		}
	})
	t.Run("forgotten once until passed", func(t *testing.T) {
		s := open(t)()
		c := id(t)
		mustIssue(t, s, c, t0, t0.Add(lifetime))
		if issued, _, err := s.Use(ctx, c, t0.Add(lifetime)); err != nil || !issued.IsZero() {
			t.Fatalf("Use at until: %v %v", issued, err)
		}
		mustIssue(t, s, c, t0.Add(lifetime), t0.Add(2*lifetime))
		if issued, first, err := s.Use(ctx, c, t0.Add(lifetime)); err != nil || !first || !issued.Equal(t0.Add(lifetime)) {
			t.Fatalf("an id issued again after it was forgotten: %v %v %v", issued, first, err)
		}
	})
	t.Run("purge", func(t *testing.T) {
		s := open(t)()
		old, live := id(t), id(t)
		mustIssue(t, s, old, t0, t0.Add(lifetime))
		mustIssue(t, s, live, t0, t0.Add(3*lifetime))
		n, err := s.Purge(ctx, t0.Add(2*lifetime))
		if err != nil || n != 1 {
			t.Fatalf("Purge: %d %v; want 1", n, err)
		}
		if issued, first, err := s.Use(ctx, live, t0.Add(2*lifetime)); err != nil || !first || !issued.Equal(t0) {
			t.Fatalf("a live challenge after Purge: %v %v %v", issued, first, err)
		}
		if n, err := s.Purge(ctx, t0.Add(2*lifetime)); err != nil || n != 0 {
			t.Fatalf("second Purge: %d %v", n, err)
		}
	})
	t.Run("replicas share it: concurrent uses, one wins", func(t *testing.T) {
		replica := open(t)
		stores := []verifiedaccess.ChallengeStore{replica(), replica(), replica()}
		c := id(t)
		mustIssue(t, stores[0], c, t0, t0.Add(lifetime))
		const n = 24
		var wg sync.WaitGroup
		wins := make(chan bool, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				issued, first, err := stores[i%len(stores)].Use(ctx, c, t0.Add(time.Second))
				if err != nil || !issued.Equal(t0) {
					t.Errorf("Use: %v %v", issued, err)
				}
				wins <- first
			}()
		}
		wg.Wait()
		close(wins)
		won := 0
		for w := range wins {
			if w {
				won++
			}
		}
		if won != 1 {
			t.Fatalf("%d of %d concurrent Uses across replicas were first; want exactly 1", won, n)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		s := open(t)()
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Issue(cctx, id(t), t0, t0.Add(lifetime)); err == nil {
			t.Error("Issue with a cancelled context succeeded")
		}
		if _, _, err := s.Use(cctx, id(t), t0); err == nil {
			t.Error("Use with a cancelled context succeeded")
		}
	})
}

func id(t *testing.T) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustIssue(t *testing.T, s verifiedaccess.ChallengeStore, id []byte, issued, until time.Time) {
	t.Helper()
	if err := s.Issue(context.Background(), id, issued, until); err != nil {
		t.Fatalf("Issue: %v", err)
	}
}

// Benchmark measures one enrollment's use of the store: the Issue of /challenge and the Use of
// /enroll, on ids that are all different, as they are in service.
func Benchmark(b *testing.B, s verifiedaccess.ChallengeStore) {
	ctx := context.Background()
	now := time.Now()
	id := make([]byte, 32)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		binaryID(id, i)
		if err := s.Issue(ctx, id, now, now.Add(6*time.Minute)); err != nil {
			b.Fatal(err)
		}
		if _, first, err := s.Use(ctx, id, now.Add(time.Second)); err != nil || !first {
			b.Fatal(first, err)
		}
	}
}

func binaryID(id []byte, i int) {
	for j := range 8 {
		id[j] = byte(i >> (8 * j))
	}
}
