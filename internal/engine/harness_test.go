package engine_test

import (
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

const (
	testCustomer = e2etest.Customer
	instanceID   = e2etest.InstanceID
)

// harness gives the engine's tests short names for the shared end-to-end harness.
type harness struct {
	*e2etest.Harness
	t     *testing.T
	emu   *emulator.Emulator
	local *local.Connector
	// metrics, intake and cam read what the adapter under test counted (h.Registry).
	metrics *metrics.Engine
	intake  *metrics.Intake
	cam     *metrics.CA
	store   journal.Store
	api     *chromeapi.Client
}

type harnessOptions struct {
	signDeadline time.Duration
	retryFor     time.Duration
	// extraCAs are added next to the built-in local CA, which they may wrap.
	extraCAs func(builtin *local.Connector) map[string]ca.Connector
	lease    time.Duration // journal lease (default: the engine's)
	grace    time.Duration // shutdown grace period (default: the engine's)
	// store wraps the journal, to inject journal faults.
	store func(journal.Store) journal.Store
	// rest wraps the emulator's REST API, to inject faults.
	rest func(http.Handler) http.Handler
	// Audit wraps the audit log, to inject audit faults.
	Audit func(*audit.Log) engine.Auditor
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	opts := e2etest.Options{SignDeadline: o.signDeadline, RetryFor: o.retryFor,
		LeaseDuration: o.lease, ShutdownGracePeriod: o.grace, Store: o.store, REST: o.rest, Audit: o.Audit}
	if o.extraCAs != nil {
		opts.CAs = func(h *e2etest.Harness) map[string]ca.Connector { return o.extraCAs(h.Local) }
	}
	h := e2etest.New(t, opts)
	return &harness{Harness: h, t: t, emu: h.Emu, local: h.Local, metrics: metrics.NewEngine(h.Registry),
		intake: metrics.NewIntake(h.Registry), cam: metrics.NewCA(h.Registry), store: h.Store, api: h.API}
}

func (h *harness) start(spec emulator.ProcessSpec) string { return h.Start(spec) }

func (h *harness) waitFinished(names []string, timeout time.Duration) map[string]emulator.Snapshot {
	h.t.Helper()
	return h.WaitFinished(names, timeout)
}

func (h *harness) waitJournalIdle(timeout time.Duration) {
	h.t.Helper()
	h.WaitJournalIdle(timeout)
}

// mustIssue asserts an issued, verified certificate from the built-in CA, one signData and one
// issuance.
func (h *harness) mustIssue(s emulator.Snapshot) *x509.Certificate {
	h.t.Helper()
	return h.MustIssue(s, nil)
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	e2etest.WaitFor(t, timeout, cond)
}

var (
	testProfile = e2etest.Profile
	pemCert     = pemutil.Encode
)

// count is the value of a counter or gauge, as an integer.
func count(c prometheus.Collector) int { return int(testutil.ToFloat64(c)) }

// failuresDecided is how many processes the engine decided to fail (transitions to failing).
func failuresDecided(h *harness) int {
	return int(h.Metric("certprov_transitions_total", "to", string(journal.StateFailing)))
}
