package metrics

import "github.com/prometheus/client_golang/prometheus"

// Kinds of audit events, as values of the event label.
const (
	AuditProvisioning = "provisioning" // a process that reached a final state; retried until written
	AuditEnrollment   = "enrollment"   // a Verified Access enrollment; the enrollment is refused without it
	AuditRevocation   = "revocation"   // a superseded certificate's revocation; retried until written
)

// Audit is the metrics of the audit trail (docs/audit.md).
type Audit struct {
	// WriteErrors counts audit events that could not be written, by kind.
	WriteErrors *prometheus.CounterVec
}

// NewAudit returns the audit trail's metrics, registered on reg.
func NewAudit(reg prometheus.Registerer) *Audit {
	return &Audit{WriteErrors: counterVec(reg, "audit_write_errors_total",
		"Audit events that could not be written, by event kind (provisioning: retried until written; enrollment: the enrollment is refused).", "event")}
}
