package config

import (
	"net"
	"strconv"
	"time"

	"github.com/certprov/certprov-adapter/internal/cleartext"
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

const (
	keyOpsListen = "ops.listen"
	keyOpsPprof  = "ops.pprof"
)

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
		return
	}
	// Caught here rather than as "address already in use" at start-up.
	if c.VerifiedAccess.Enabled && sameSocket(c.Ops.Listen, c.VerifiedAccess.Listen) {
		ps.add(keyOpsListen, "%q is also verifiedAccess.listen (%q): the two listeners need different ports", c.Ops.Listen, c.VerifiedAccess.Listen)
	}
}

// warnOps warns of a profiler that anyone reaching the ops port can read: stacks, heap and
// command line show what the adapter holds.
func (c *Config) warnOps(ps *problems) {
	if !c.Ops.Pprof {
		return
	}
	if host, _, err := net.SplitHostPort(c.Ops.Listen); err == nil && !cleartext.LoopbackHost(host) {
		ps.add(keyOpsPprof, "the Go profiler (stacks, heap, command line) is served on %q, beyond this machine: "+
			"enable it only while diagnosing, or set ops.listen to a loopback address", c.Ops.Listen)
	}
}

// sameSocket reports whether listening on a and on b would collide: the same port, on the same
// host or with either on every interface. Port 0 picks a free port and never collides.
func sameSocket(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	return ha == hb || anyHost(ha) || anyHost(hb)
}

func anyHost(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
