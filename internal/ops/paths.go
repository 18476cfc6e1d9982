// Package ops holds the addresses of the adapter's operations endpoints. The ops listener
// (issue 10 item 1) serves these paths on one port; deployment manifests point their probes
// and scrape configuration at them, and deploy/test checks that they do.
package ops

// The ops listener's default port and the paths it serves.
const (
	DefaultPort = 9090
	PathHealthz = "/healthz" // liveness: the process is up
	PathReadyz  = "/readyz"  // readiness: its dependencies answer
	PathMetrics = "/metrics" // Prometheus exposition
	PathStatus  = "/status"  // operator status page
)
