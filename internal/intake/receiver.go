package intake

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"cloud.google.com/go/pubsub/v2"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/process"
	"github.com/certprov/certprov-adapter/internal/telemetry"
)

// Admitter takes responsibility for a process: it returns nil once the process is recorded for
// work or known to need none (finished, owned by another instance, already recorded). A
// returned error means nothing durable happened and the notification should come again.
type Admitter interface {
	Admit(ctx context.Context, name string) error
}

// Receiver turns notifications into admitted processes.
type Receiver struct {
	admit     Admitter
	customers []string // empty serves every customer
	log       *zap.Logger
	metrics   *telemetry.Counters
}

// NewReceiver returns a Receiver serving customers.
func NewReceiver(a Admitter, customers []string, log *zap.Logger, metrics *telemetry.Counters) *Receiver {
	if log == nil {
		log = zap.NewNop()
	}
	return &Receiver{admit: a, customers: customers, log: log, metrics: metrics}
}

// Handle processes one message and reports whether to ack it. Messages that can never succeed
// (malformed, foreign customer) are acked so they do not come back forever; a failure to admit
// is not, so Pub/Sub redelivers it.
func (r *Receiver) Handle(ctx context.Context, msgID string, data []byte) (ack bool) {
	n, err := Decode(data)
	if err != nil {
		r.metrics.Inc("notifications_total", "malformed")
		r.log.Warn("dropping malformed notification", zap.String("message_id", msgID),
			zap.Int("bytes", len(data)), zap.Error(err))
		return true
	}
	if !r.serves(n.CustomerID) {
		r.metrics.Inc("notifications_total", "foreign_customer")
		r.log.Info("ignoring notification for a customer not served here",
			zap.String("message_id", msgID), zap.String("customer", n.CustomerID))
		return true
	}
	name := process.Name(n.CustomerID, n.ProcessID)
	if err := r.admit.Admit(ctx, name); err != nil {
		if errors.Is(err, context.Canceled) {
			return false
		}
		r.metrics.Inc("notifications_total", "admit_error")
		r.log.Warn("could not admit process; the notification will be redelivered",
			zap.String("message_id", msgID), zap.String("process", name), zap.Error(err))
		return false
	}
	r.metrics.Inc("notifications_total", "admitted")
	return true
}

// serves reports whether notifications for customer are ours. "my_customer" is Google's alias
// for the customer the credentials belong to; notifications carry the real id, which the alias
// cannot be compared with, so it serves every customer the subscription delivers.
func (r *Receiver) serves(customer string) bool {
	return len(r.customers) == 0 || slices.Contains(r.customers, customer) || slices.Contains(r.customers, myCustomer)
}

const myCustomer = "my_customer"

// Run receives from sub until ctx ends. It returns nil on cancellation.
func (r *Receiver) Run(ctx context.Context, sub *pubsub.Subscriber) error {
	err := sub.Receive(ctx, func(ctx context.Context, m *pubsub.Message) {
		if r.Handle(ctx, m.ID, m.Data) {
			m.Ack()
		} else {
			m.Nack()
		}
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("receive from %s: %w", sub, err)
	}
	return nil
}
