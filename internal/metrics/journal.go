package metrics

import "github.com/prometheus/client_golang/prometheus"

// Journal is the metrics of the journal.
type Journal struct {
	// Records is the number of records in the journal by state, as last sampled; records in a
	// final state are kept for journal.retention. A journal shared by replicas counts theirs too.
	Records *prometheus.GaugeVec
	// RevocationsPending is the number of superseded certificates whose revocation is journaled
	// and not yet done (waiting for their grace period, or retried), as last sampled.
	RevocationsPending prometheus.Gauge
}

// NewJournal returns the journal's metrics, registered on reg.
func NewJournal(reg prometheus.Registerer) *Journal {
	return &Journal{
		Records: gaugeVec(reg, "journal_records",
			"Records in the journal by state, as last sampled (final states: kept for journal.retention).", "state"),
		RevocationsPending: gauge(reg, "revocations_pending",
			"Superseded certificates whose revocation is journaled and not yet done, as last sampled."),
	}
}

// Observe sets the record counts: every state in states is set, to 0 when counts lacks it, so
// that a state that emptied does not keep its last value.
func (m *Journal) Observe(states []string, counts map[string]int) {
	for _, s := range states {
		m.Records.WithLabelValues(s).Set(float64(counts[s]))
	}
}

// RegisterJournalCommits exports the group commit of a durable journal: stats returns the
// transactions it committed (on SQLite each one fsync of the WAL, on PostgreSQL one commit, one
// WAL flush, on the server) and the writes they carried, both since the journal was opened.
func RegisterJournalCommits(reg prometheus.Registerer, stats func() (commits, writes uint64)) {
	register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "journal_commits_total",
		Help: "Transactions the journal committed: each one fsync (SQLite) or one commit on the server (PostgreSQL)."},
		func() float64 { c, _ := stats(); return float64(c) }))
	register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "journal_committed_writes_total",
		Help: "Journal writes those transactions carried; divided by journal_commits_total, how many writes shared a commit."},
		func() float64 { _, w := stats(); return float64(w) }))
}
