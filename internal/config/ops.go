package config

import (
	"net"
	"strconv"
	"time"
)

// Ops configures the operations listener: /metrics, /healthz, /readyz and, when enabled,
// /debug/pprof/ (docs/metrics.md).
type Ops struct {
	// Listen is the listener's host:port. Port 0 picks a free port (tests); the address is
	// logged at start-up.
	Listen string `mapstructure:"listen"`
	// Pprof serves the Go profiler under /debug/pprof/. It shows stacks and memory, so it is
	// off unless asked for.
	Pprof bool `mapstructure:"pprof"`
	// CheckInterval is how often each readiness check runs in the background; /readyz answers
	// from the latest results.
	CheckInterval time.Duration `mapstructure:"checkInterval"`
	// CheckTimeout bounds one run of a readiness check (a CA ping, a Google token, a journal
	// write); a check that takes longer fails.
	CheckTimeout time.Duration `mapstructure:"checkTimeout"`
}

// DefaultOpsListen keeps the ops listener on loopback unless an address is chosen; the
// container image sets CERTPROV_OPS_LISTEN=:9090 so that probes and scrapes reach it. The port
// is ops.DefaultPort, which the deployment manifests probe (a test in package ops checks).
const DefaultOpsListen = "127.0.0.1:9090"

// Defaults of the readiness checks: a change shows on /readyz within a check interval.
const (
	DefaultOpsCheckInterval = 15 * time.Second
	DefaultOpsCheckTimeout  = 5 * time.Second
)

const keyOpsListen = "ops.listen"

func (c *Config) validateOps(ps *problems) {
	positive(ps, "ops.checkInterval", c.Ops.CheckInterval)
	positive(ps, "ops.checkTimeout", c.Ops.CheckTimeout)
	_, port, err := net.SplitHostPort(c.Ops.Listen)
	if err != nil || port == "" {
		ps.add(keyOpsListen, "%q must be host:port, e.g. 127.0.0.1:9090 or :9090", c.Ops.Listen)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		ps.add(keyOpsListen, "%q: port %q is not a port number", c.Ops.Listen, port)
	}
}
