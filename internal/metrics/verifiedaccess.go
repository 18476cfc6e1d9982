package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a Verified Access request, as values of the outcome label.
const (
	VAIssued  = "issued"  // a certificate (or a challenge) was handed out
	VARefused = "refused" // the request or the device was refused (a 4xx code)
	VAFailed  = "failed"  // the adapter, Google or the CA failed (a 5xx code)
)

// VerifiedAccess is the metrics of the Verified Access enrollment server.
type VerifiedAccess struct {
	// Enrollments counts /enroll requests by profile (empty when the request named no
	// configured one), outcome and the API's code (OK when issued).
	Enrollments *prometheus.CounterVec
	// EnrollmentDuration is the time an /enroll request took, by outcome.
	EnrollmentDuration *prometheus.HistogramVec
	// Challenges counts /challenge requests by profile, outcome and code.
	Challenges *prometheus.CounterVec
	// Rejected counts requests the limits turned away, by endpoint and reason.
	Rejected *prometheus.CounterVec
	// BucketsEvicted counts per-client token buckets dropped before they were full, because
	// more clients than verifiedAccess' bucket table holds asked within a few seconds.
	BucketsEvicted prometheus.Counter
	// CertificatesRejected counts certificates a CA issued for an enrollment that the adapter
	// withheld, by CA connection and leafcheck rule (the engine's series).
	CertificatesRejected *prometheus.CounterVec
}

// NewVerifiedAccess returns the enrollment server's metrics, registered on reg.
func NewVerifiedAccess(reg prometheus.Registerer) *VerifiedAccess {
	return &VerifiedAccess{
		Enrollments: counterVec(reg, "verifiedaccess_enrollments_total",
			"Verified Access /enroll requests, by profile, outcome (issued, refused, failed) and code.", "profile", "outcome", "code"),
		EnrollmentDuration: histogramVec(reg, "verifiedaccess_enrollment_duration_seconds",
			"Time a Verified Access /enroll request took, by outcome.", callBuckets, "outcome"),
		Challenges: counterVec(reg, "verifiedaccess_challenges_total",
			"Verified Access /challenge requests, by profile, outcome (issued, refused, failed) and code.", "profile", "outcome", "code"),
		Rejected: counterVec(reg, "verifiedaccess_requests_rejected_total",
			"Verified Access requests turned away by the limits, by endpoint and reason.", "endpoint", "reason"),
		BucketsEvicted: counter(reg, "verifiedaccess_client_buckets_evicted_total",
			"Per-client token buckets dropped before they were full because the table was full."),
		CertificatesRejected: certificatesRejected(reg),
	}
}

// Enrolled records an /enroll request for profile that ended with code after d.
func (m *VerifiedAccess) Enrolled(profile, outcome, code string, d time.Duration) {
	m.Enrollments.WithLabelValues(profile, outcome, code).Inc()
	m.EnrollmentDuration.WithLabelValues(outcome).Observe(max(d, 0).Seconds())
}
