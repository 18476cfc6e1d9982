package metrics

import "github.com/prometheus/client_golang/prometheus"

// Journal is the metrics of the journal.
type Journal struct {
	// Records is the number of records in the journal by state, as last sampled; records in a
	// final state are kept for journal.retention. A journal shared by replicas counts theirs too.
	Records *prometheus.GaugeVec
}

// NewJournal returns the journal's metrics, registered on reg.
func NewJournal(reg prometheus.Registerer) *Journal {
	return &Journal{
		Records: gaugeVec(reg, "journal_records",
			"Records in the journal by state, as last sampled (final states: kept for journal.retention).", "state"),
	}
}

// Observe sets the record counts: every state in states is set, to 0 when counts lacks it, so
// that a state that emptied does not keep its last value.
func (m *Journal) Observe(states []string, counts map[string]int) {
	for _, s := range states {
		m.Records.WithLabelValues(s).Set(float64(counts[s]))
	}
}
