package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Steps of a process, as values of certprov_step_duration_seconds{step}.
const (
	// StepClaim: reading the notified process, claiming it and journaling the claim.
	StepClaim = "claim"
	// StepSignRequest: rendering the request and sending signData.
	StepSignRequest = "sign_request"
	// StepSignWait: from signData sent to the device's signature in hand.
	StepSignWait = "sign_wait"
	// StepCAIssue: from the signature (or the CA's pending answer) to the certificate in hand.
	StepCAIssue = "ca_issue"
	// StepUpload: uploading the certificate, retries included.
	StepUpload = "upload"
	// StepReportFailure: setFailure, retries included.
	StepReportFailure = "report_failure"
)

// Engine is the metrics of the provisioning engine.
type Engine struct {
	// ProcessesFinished counts processes that reached a final state, by how
	// (issued, issued_before, failed, failed_by_google, failure_unreported), adapter profile and
	// CA connection (empty when the process never resolved to one, or carries a SCEP profile).
	ProcessesFinished *prometheus.CounterVec
	// ProcessDuration is the time from the claim to the final state, by outcome.
	ProcessDuration *prometheus.HistogramVec
	// StepDuration is the time a step took, from entering the state it runs in to the state it
	// leads to on success, retries and waits included.
	StepDuration *prometheus.HistogramVec
	// Admissions counts notified processes by what Admit made of them.
	Admissions *prometheus.CounterVec
	// AdmissionFailures counts admissions that failed and are tried again after a backoff (the
	// notification is held, then redelivered).
	AdmissionFailures prometheus.Counter
	// AdmissionClaimsReused counts claims recorded without a new get and claim: an earlier
	// admission claimed the process and only its record failed.
	AdmissionClaimsReused prometheus.Counter
	// Transitions counts journaled state changes.
	Transitions *prometheus.CounterVec
	// InFlight is the number of records this replica's workers are running a step for, by the
	// state the step started in.
	InFlight *prometheus.GaugeVec

	SignRequests         prometheus.Counter
	SignDeadlineExceeded prometheus.Counter
	BadSignatures        prometheus.Counter
	Retries              *prometheus.CounterVec
	RetriesExhausted     *prometheus.CounterVec
	LeasesLost           *prometheus.CounterVec
	LeaseRenewalErrors   prometheus.Counter
	StepsAbandoned       *prometheus.CounterVec
	StepsInterrupted     prometheus.Counter
	ShutdownStepsCut     prometheus.Counter
	// JournalWriteRetries counts journal writes of a step's outcome that failed and were tried
	// again under the same lease; JournalWritesRecovered those that landed after retries,
	// JournalWritesDropped those given up (the lease ran out or the step was cut): the record
	// resumes from its last journaled state once the lease lapses.
	JournalWriteRetries    prometheus.Counter
	JournalWritesRecovered prometheus.Counter
	JournalWritesDropped   prometheus.Counter
	// CertificatesRejected counts certificates a CA returned that the adapter refused, by the
	// rule they broke (package leafcheck).
	CertificatesRejected *prometheus.CounterVec
	// CertificateMismatches counts accepted certificates whose names or usages differ from the
	// request, by field.
	CertificateMismatches *prometheus.CounterVec
}

// NewEngine returns the engine's metrics, registered on reg.
func NewEngine(reg prometheus.Registerer) *Engine {
	return &Engine{
		ProcessesFinished: counterVec(reg, "processes_finished_total",
			"Processes that reached a final state, by outcome, adapter profile and CA connection.", "outcome", "profile", "ca_connection"),
		ProcessDuration: histogramVec(reg, "process_duration_seconds",
			"Time from the claim of a process to its final state, by outcome.", stepBuckets, "outcome"),
		StepDuration: histogramVec(reg, "step_duration_seconds",
			"Time a step of a process took until it succeeded, waits and retries included, by step.", stepBuckets, "step"),
		Admissions: counterVec(reg, "admissions_total",
			"Notified processes by what the adapter made of them.", "result"),
		AdmissionFailures: counter(reg, "admission_failures_total",
			"Admissions that failed and are tried again after a backoff (the notification held, then redelivered)."),
		AdmissionClaimsReused: counter(reg, "admission_claims_reused_total",
			"Claims recorded without a new get and claim, after only the record of an earlier claim failed."),
		Transitions: counterVec(reg, "transitions_total",
			"Journaled state changes of processes, by state before and after.", "from", "to"),
		InFlight: gaugeVec(reg, "processes_in_flight",
			"Processes this replica is running a step for now, by the state the step started in.", "state"),
		SignRequests: counter(reg, "sign_requests_total",
			"signData requests sent to Google."),
		SignDeadlineExceeded: counter(reg, "sign_deadline_exceeded_total",
			"Processes failed because the device did not sign within the profile's signDeadline."),
		BadSignatures: counter(reg, "bad_signatures_total",
			"Device signatures that did not complete a CSR verifying against the device key."),
		Retries: counterVec(reg, "retries_total",
			"Steps scheduled for another try after a transient error, by state.", "state"),
		RetriesExhausted: counterVec(reg, "retries_exhausted_total",
			"Steps that kept failing for engine.retry.maxDuration, by state.", "state"),
		LeasesLost: counterVec(reg, "leases_lost_total",
			"Journal leases lost while a step ran, by reason (refused, expired).", "reason"),
		LeaseRenewalErrors: counter(reg, "lease_renewal_errors_total",
			"Journal lease renewals that failed and were retried."),
		StepsAbandoned: counterVec(reg, "steps_abandoned_total",
			"Step outcomes dropped because the journal refused to record them, by reason.", "reason"),
		StepsInterrupted: counter(reg, "steps_interrupted_total",
			"Steps cut short (stop, lost lease) whose record stays as last journaled."),
		ShutdownStepsCut: counter(reg, "shutdown_steps_cut_total",
			"Stops whose grace period ended with steps still running."),
		JournalWriteRetries: counter(reg, "journal_write_retries_total",
			"Journal writes of a step's outcome that failed and were tried again under the same lease."),
		JournalWritesRecovered: counter(reg, "journal_writes_recovered_total",
			"Journal writes of a step's outcome that landed after retries."),
		JournalWritesDropped: counter(reg, "journal_writes_dropped_total",
			"Journal writes of a step's outcome given up (the lease ran out or the step was cut); the record resumes from its last journaled state."),
		CertificatesRejected: certificatesRejected(reg),
		CertificateMismatches: counterVec(reg, "ca_certificate_mismatches_total",
			"Accepted certificates whose names or usages differ from the request, by CA connection and field.", "ca_connection", "field"),
	}
}

// Finished records a process that reached a final state after age (once journaled).
func (m *Engine) Finished(outcome, profile, caConnection string, age time.Duration) {
	m.ProcessesFinished.WithLabelValues(outcome, profile, caConnection).Inc()
	m.ProcessDuration.WithLabelValues(outcome).Observe(age.Seconds())
}

// Step records that step succeeded after d.
func (m *Engine) Step(step string, d time.Duration) {
	m.StepDuration.WithLabelValues(step).Observe(max(d, 0).Seconds())
}
