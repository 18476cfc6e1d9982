package metrics

import "github.com/prometheus/client_golang/prometheus"

// Results of a Pub/Sub message, as values of certprov_pubsub_messages_total{result}.
const (
	MessageAdmitted        = "admitted"         // the process is recorded, or needs no work here
	MessageMalformed       = "malformed"        // not a notification; acked and dropped
	MessageForeignCustomer = "foreign_customer" // for a customer not served here; acked and ignored
	MessageAdmitError      = "admit_error"      // could not be admitted; redelivered
	MessageDeferred        = "deferred"         // the adapter is stopping; redelivered
)

// Intake is the metrics of the Pub/Sub intake.
type Intake struct {
	// Messages counts every message received, by what became of it.
	Messages *prometheus.CounterVec
	// StreamOpens and StreamOpenFailures count attempts to open a StreamingPull stream.
	StreamOpens        prometheus.Counter
	StreamOpenFailures prometheus.Counter
	// StreamsOpen is the number of StreamingPull streams open now: 0 means no notification
	// can arrive.
	StreamsOpen prometheus.Gauge
	// StopTimeouts counts stops for which the Pub/Sub client did not stop in time.
	StopTimeouts prometheus.Counter
}

// NewIntake returns the intake's metrics, registered on reg.
func NewIntake(reg prometheus.Registerer) *Intake {
	return &Intake{
		Messages: counterVec(reg, "pubsub_messages_total",
			"Pub/Sub messages received, by result (admitted, malformed, foreign_customer, admit_error, deferred).", "result"),
		StreamOpens: counter(reg, "pubsub_stream_opens_total",
			"StreamingPull streams opened."),
		StreamOpenFailures: counter(reg, "pubsub_stream_open_failures_total",
			"Attempts to open a StreamingPull stream that failed."),
		StreamsOpen: gauge(reg, "pubsub_streams_open",
			"StreamingPull streams open now; 0 means no notification can arrive."),
		StopTimeouts: counter(reg, "pubsub_receive_stop_timeouts_total",
			"Stops for which the Pub/Sub client did not stop within the stop timeout."),
	}
}
