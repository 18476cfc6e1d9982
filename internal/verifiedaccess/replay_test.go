package verifiedaccess_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/verifiedaccess"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/challengetest"
)

func TestMemoryChallenges(t *testing.T) {
	challengetest.Run(t, func(t *testing.T) func() verifiedaccess.ChallengeStore {
		s := verifiedaccess.NewMemoryChallenges(0)
		return func() verifiedaccess.ChallengeStore { return s }
	})
}

// TestMemoryChallengesBounded: full of unexpired challenges, the store refuses a new one rather
// than forget one; an expired one makes room.
func TestMemoryChallengesBounded(t *testing.T) {
	ctx, t0 := context.Background(), time.Now()
	s := verifiedaccess.NewMemoryChallenges(2)
	for i, id := range []string{"a", "b"} {
		if err := s.Issue(ctx, []byte(id), t0, t0.Add(time.Duration(i+1)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Issue(ctx, []byte("c"), t0, t0.Add(time.Minute)); !errors.Is(err, verifiedaccess.ErrChallengesFull) {
		t.Fatalf("Issue into a full store: %v", err)
	}
	if err := s.Issue(ctx, []byte("c"), t0.Add(time.Minute), t0.Add(2*time.Minute)); err != nil {
		t.Fatalf("Issue once one expired: %v", err)
	}
	if issued, first, _ := s.Use(ctx, []byte("b"), t0.Add(time.Minute)); !first || !issued.Equal(t0) {
		t.Error("the live challenge was forgotten")
	}
}

func BenchmarkMemoryChallenges(b *testing.B) {
	challengetest.Benchmark(b, verifiedaccess.NewMemoryChallenges(1<<30))
}
