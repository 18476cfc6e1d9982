package metrics

import "github.com/prometheus/client_golang/prometheus"

// Readiness is the metrics of the readiness checks (/readyz).
type Readiness struct {
	// Check is 1 while the named check passes and 0 while it fails, as last run.
	Check *prometheus.GaugeVec
	// Ready is 1 while every check passes.
	Ready prometheus.Gauge
}

// NewReadiness returns the readiness metrics, registered on reg.
func NewReadiness(reg prometheus.Registerer) *Readiness {
	return &Readiness{
		Check: gaugeVec(reg, "readiness_check",
			"1 while the readiness check passes, 0 while it fails, as last run; by check.", "check"),
		Ready: gauge(reg, "ready",
			"1 while every readiness check passes (/readyz answers 200), else 0."),
	}
}
