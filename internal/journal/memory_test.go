package journal_test

import (
	"testing"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
)

func TestMemoryConformance(t *testing.T) {
	journaltest.Run(t,
		func(t *testing.T) journal.Store {
			s := journal.NewMemory()
			t.Cleanup(func() { _ = s.Close() })
			return s
		},
	)
}

func BenchmarkMemoryLeaseUpdate(b *testing.B) {
	journaltest.BenchmarkLeaseUpdate(b, journal.NewMemory())
}

func BenchmarkMemoryRenew(b *testing.B) {
	journaltest.BenchmarkRenew(b, journal.NewMemory())
}
