package metrics

import "github.com/prometheus/client_golang/prometheus"

// Results of a revocation of a superseded certificate, as values of
// certprov_revocations_total{result} (docs/renewal.md).
const (
	// RevocationRevoked: the CA confirmed it (an idempotent repeat included).
	RevocationRevoked = "revoked"
	// RevocationRetry: the CA could not be reached or answered with a transient error; tried again.
	RevocationRetry = "retry"
	// RevocationFailed: the CA refused it, cannot revoke, or the certificate expired while
	// the CA kept failing; not tried again.
	RevocationFailed = "failed"
)

// Revocations is the metrics of renewal hygiene: the revocation of certificates a newer one of
// the same identity and profile superseded.
type Revocations struct {
	// Decided counts certificates found superseded and journaled for revocation, by adapter
	// profile.
	Decided *prometheus.CounterVec
	// Attempts counts the calls to the CA's revocation, by CA connection and result.
	Attempts *prometheus.CounterVec
}

// NewRevocations returns renewal hygiene's metrics, registered on reg.
func NewRevocations(reg prometheus.Registerer) *Revocations {
	return &Revocations{
		Decided: counterVec(reg, "revocations_decided_total",
			"Superseded certificates journaled for revocation once their grace period ends, by adapter profile.", "profile"),
		Attempts: counterVec(reg, "revocations_total",
			"Revocations of superseded certificates asked of the CA, by CA connection and result (revoked, retry, failed).", "ca_connection", "result"),
	}
}
