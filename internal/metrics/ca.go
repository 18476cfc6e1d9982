package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certprov/certprov-adapter/internal/errclass"
)

// Calls to a CA connector, as values of the operation label.
const (
	CAIssue       = "issue"         // Connector.Issue: a CSR the device signed
	CARecover     = "recover"       // Recoverer.Recover: after a restart interrupted an Issue
	CAAttributes  = "attributes"    // AttributeContributor.CSRAttributes: e.g. a SCEP challenge
	CAIssueForKey = "issue_for_key" // PublicKeyIssuer.IssueForKey: Verified Access enrollment
	CAPing        = "ping"          // Pinger.Ping: the readiness check
	CARevoke      = "revoke"        // Revoker.Revoke: a certificate a newer one superseded
)

// Outcomes of a CA call, as values of the outcome label: ok, the error class (permanent,
// retryable, pending), timeout when the connection's timeout cut the call, or canceled when
// the caller gave up first (a stop, a lost lease).
const (
	CAOutcomeOK       = "ok"
	CAOutcomeTimeout  = "timeout"
	CAOutcomeCanceled = "canceled"
)

// CA is the metrics of the calls to CA connectors.
type CA struct {
	// Requests counts calls by CA connection, operation and outcome.
	Requests *prometheus.CounterVec
	// RequestDuration is the time a call took, by CA connection and operation.
	RequestDuration *prometheus.HistogramVec
	// Recovered counts certificates recovered from a CA after a restart interrupted the call
	// that issued them.
	Recovered *prometheus.CounterVec
}

// NewCA returns the CA call metrics, registered on reg.
func NewCA(reg prometheus.Registerer) *CA {
	return &CA{
		Requests: counterVec(reg, "ca_requests_total",
			"Calls to CA connectors, by CA connection, operation and outcome (ok, permanent, retryable, pending, timeout, canceled).",
			"ca_connection", "operation", "outcome"),
		RequestDuration: histogramVec(reg, "ca_request_duration_seconds",
			"Time a call to a CA connector took, by CA connection and operation.", callBuckets, "ca_connection", "operation"),
		Recovered: counterVec(reg, "ca_recovered_total",
			"Certificates recovered from a CA after a restart interrupted the call that issued them, by CA connection.", "ca_connection"),
	}
}

// certificatesRejected counts certificates a CA returned that the adapter withheld, by the
// leafcheck rule they broke: one series for the provisioning engine and the Verified Access
// server, which check alike.
func certificatesRejected(reg prometheus.Registerer) *prometheus.CounterVec {
	return counterVec(reg, "ca_certificates_rejected_total",
		"Certificates a CA returned that the adapter refused, by CA connection and rule.", "ca_connection", "rule")
}

// Observe records a call of operation on connection that took d and returned err. ctx is the
// caller's and call the call's own (ctx bounded by the connection's timeout), which tell a call
// given up or cut by its timeout from a CA that failed.
func (m *CA) Observe(ctx, call context.Context, connection, operation string, d time.Duration, err error) {
	m.Requests.WithLabelValues(connection, operation, CAOutcome(ctx, call, err)).Inc()
	m.RequestDuration.WithLabelValues(connection, operation).Observe(max(d, 0).Seconds())
}

// CAOutcome classifies a CA call's error as an outcome label value (see Observe).
func CAOutcome(ctx, call context.Context, err error) string {
	switch {
	case err == nil:
		return CAOutcomeOK
	case ctx.Err() != nil:
		return CAOutcomeCanceled
	case call.Err() != nil:
		return CAOutcomeTimeout
	}
	class, _ := errclass.Of(err)
	return class.String()
}
