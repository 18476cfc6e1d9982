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

func BenchmarkMemory(b *testing.B) {
	journaltest.Bench(b, func(*testing.B) journal.Store { return journal.NewMemory() }, nil)
}
