package metrics

import "github.com/prometheus/client_golang/prometheus"

// Results of a configuration reload, as values of the result label.
const (
	ReloadApplied = "applied"
	ReloadRefused = "refused"
)

// Adapter is the metrics of the daemon as a whole.
type Adapter struct {
	// Reloads counts configuration reloads (SIGHUP) by result.
	Reloads *prometheus.CounterVec
}

// NewAdapter returns the daemon's metrics, registered on reg.
func NewAdapter(reg prometheus.Registerer) *Adapter {
	return &Adapter{Reloads: counterVec(reg, "config_reloads_total",
		"Configuration reloads (SIGHUP), by result (applied, refused: the running configuration stays).", "result")}
}
