package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal/postgres"
	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/challengetest"
)

// TestChallengesConformance runs the challenge store suite on PostgreSQL, each replica a Store of
// its own (its own connection pool) on one schema, as replicas of one Deployment are.
func TestChallengesConformance(t *testing.T) {
	dsn := pgtest.DSN(t)
	challengetest.Run(t, func(t *testing.T) func() verifiedaccess.ChallengeStore {
		schemaDSN := pgtest.Schema(t, dsn, "certprov_challenges")
		return func() verifiedaccess.ChallengeStore { return openChallenges(t, schemaDSN) }
	})
}

func openChallenges(t *testing.T, dsn string) *postgres.Challenges {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c, err := s.Challenges(context.Background())
	if err != nil {
		t.Fatalf("Challenges: %v", err)
	}
	return c
}

// TestChallengesTableAndClose: the table is named after the journal's, replicas opening it at
// once do not race on its creation, and a closed store refuses calls with an error.
func TestChallengesTableAndClose(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.DSN(t), "certprov_challenges")
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			s, err := postgres.Open(context.Background(), dsn, postgres.WithTable("va_journal"))
			if err == nil {
				defer s.Close()
				var c *postgres.Challenges
				if c, err = s.Challenges(context.Background()); err == nil && c.Table() != "va_journal_challenges" {
					t.Errorf("table %q", c.Table())
				}
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent open: %v", err)
		}
	}
	s, err := postgres.Open(context.Background(), dsn, postgres.WithTable("va_journal"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Challenges(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if err := c.Issue(context.Background(), []byte("x"), time.Now(), time.Now().Add(time.Minute)); err == nil {
		t.Error("Issue on a closed store succeeded")
	}
	if _, _, err := c.Use(context.Background(), []byte("x"), time.Now()); err == nil {
		t.Error("Use on a closed store succeeded")
	}
}

// BenchmarkChallenges: the two round trips an enrollment adds in the shared mode.
func BenchmarkChallenges(b *testing.B) {
	dsn := pgtest.Schema(b, pgtest.DSN(b), "certprov_challenges_bench")
	s, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c, err := s.Challenges(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	challengetest.Benchmark(b, c)
}
