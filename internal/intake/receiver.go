package intake

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Admitter takes responsibility for a process: it returns nil once the process is recorded for
// work or known to need none (finished, owned by another instance, already recorded). A
// returned error means nothing durable happened and the notification should come again; if the
// error (or one it wraps) has a method RetryAfter() time.Duration, not before that long.
type Admitter interface {
	Admit(ctx context.Context, name string) error
}

// retryHint is an Admitter's error that says when to try again.
type retryHint interface {
	error
	RetryAfter() time.Duration
}

// Receiver turns notifications into admitted processes.
type Receiver struct {
	admit     Admitter
	customers atomic.Pointer[[]string] // empty serves every customer; SetCustomers replaces it
	log       *zap.Logger
	m         *metrics.Intake
	stop      time.Duration
	connect   time.Duration
	streams   *streamWatch

	numStreams, outstanding int
}

// ReceiverOptions configure a Receiver.
type ReceiverOptions struct {
	Admitter Admitter
	// Customers are the customers served; empty serves every customer.
	Customers []string
	Logger    *zap.Logger
	// Registerer receives the intake's metrics (metrics.Intake); nil exports none.
	Registerer prometheus.Registerer
	// StopTimeout bounds how long Run waits, once its context ended, for the Pub/Sub client to
	// stop; default DefaultStopTimeout.
	StopTimeout time.Duration
	// WarnInterval is the least time between two warnings about a stream that cannot open;
	// default DefaultWarnInterval.
	WarnInterval time.Duration
	// ConnectTimeout bounds one connection attempt to Pub/Sub, TLS and HTTP/2 handshakes
	// included; zero keeps gRPC's (20 s).
	ConnectTimeout time.Duration
	// Now replaces the clock of the warning rate limit (tests).
	Now func() time.Time

	// Streams is how many StreamingPull streams to hold open (pubsub.streams); 0 keeps the
	// client's default of one. Pub/Sub serves each stream on its own, so more streams raise
	// the rate at which notifications can arrive.
	Streams int
	// MaxOutstandingMessages bounds the messages in hand at once, across every stream
	// (pubsub.maxOutstandingMessages): the admissions in progress, and the notifications held
	// back after a failed one. 0 keeps the client's default.
	MaxOutstandingMessages int
}

// DefaultStopTimeout is ReceiverOptions.StopTimeout when unset.
const DefaultStopTimeout = 10 * time.Second

// NewReceiver returns a Receiver. The Pub/Sub client it receives through must be built with
// ClientOptions.
func NewReceiver(o ReceiverOptions) *Receiver {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.WarnInterval <= 0 {
		o.WarnInterval = DefaultWarnInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := metrics.NewIntake(o.Registerer)
	r := &Receiver{
		admit: o.Admitter, log: o.Logger, m: m,
		stop: o.StopTimeout, connect: o.ConnectTimeout,
		streams:    newStreamWatch(o.Logger, m, o.WarnInterval, o.Now),
		numStreams: o.Streams, outstanding: o.MaxOutstandingMessages,
	}
	r.SetCustomers(o.Customers)
	return r
}

// SetCustomers replaces the customers served (a configuration reload), for the notifications
// that arrive from now on.
func (r *Receiver) SetCustomers(customers []string) {
	c := slices.Clone(customers)
	r.customers.Store(&c)
}

// ClientOptions are the options the Pub/Sub client must be built with, so that the receiver
// sees its streams open and fail. They act on the connections the client dials, so they do
// nothing for a client given a ready connection (option.WithGRPCConn).
func (r *Receiver) ClientOptions() []option.ClientOption {
	opts := []option.ClientOption{option.WithGRPCDialOption(grpc.WithChainStreamInterceptor(r.streams.intercept))}
	if r.connect > 0 {
		opts = append(opts, option.WithGRPCDialOption(grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.DefaultConfig, MinConnectTimeout: r.connect,
		})))
	}
	return opts
}

// StreamOpen reports whether a stream to Pub/Sub is open now, i.e. whether notifications can
// arrive. When none is, lastErr says why the latest attempt to open one failed; it is nil
// before the first attempt ended and between a stream closing cleanly and the next opening.
func (r *Receiver) StreamOpen() (open bool, lastErr error) {
	return r.streams.state()
}

// Handle processes one message and reports whether to ack it. Messages that can never succeed
// (malformed, foreign customer) are acked so they do not come back forever; a failure to admit
// is not, so Pub/Sub redelivers it. Pub/Sub redelivers a nacked message at once, so after a
// failure Handle first holds the message for as long as the Admitter asked (RetryAfter), or
// until ctx ends; Pub/Sub extends its ack deadline meanwhile.
func (r *Receiver) Handle(ctx context.Context, msgID string, data []byte) (ack bool) {
	n, err := Decode(data)
	if err != nil {
		r.m.Messages.WithLabelValues(metrics.MessageMalformed).Inc()
		r.log.Warn("dropping malformed notification", zap.String("message_id", msgID),
			zap.Int("bytes", len(data)), zap.Error(err))
		return true
	}
	if !r.serves(n.CustomerID) {
		r.m.Messages.WithLabelValues(metrics.MessageForeignCustomer).Inc()
		r.log.Info("ignoring notification for a customer not served here",
			zap.String("message_id", msgID), zap.String("customer", n.CustomerID))
		return true
	}
	name := process.Name(n.CustomerID, n.ProcessID)
	if ctx.Err() != nil {
		r.m.Messages.WithLabelValues(metrics.MessageDeferred).Inc()
		return false // stopping: no new work; Pub/Sub delivers the message again
	}
	if err := r.admit.Admit(ctx, name); err != nil {
		if errors.Is(err, context.Canceled) {
			r.m.Messages.WithLabelValues(metrics.MessageDeferred).Inc()
			return false
		}
		var wait time.Duration
		if h, ok := errors.AsType[retryHint](err); ok {
			wait = h.RetryAfter()
		}
		r.m.Messages.WithLabelValues(metrics.MessageAdmitError).Inc()
		r.log.Warn("could not admit process; the notification will be redelivered",
			zap.String("message_id", msgID), zap.String("process", name), zap.Duration("in", wait), zap.Error(err))
		if wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
		return false
	}
	r.m.Messages.WithLabelValues(metrics.MessageAdmitted).Inc()
	return true
}

// serves reports whether notifications for customer are ours. "my_customer" is Google's alias
// for the customer the credentials belong to; notifications carry the real id, which the alias
// cannot be compared with, so it serves every customer the subscription delivers.
func (r *Receiver) serves(customer string) bool {
	customers := *r.customers.Load()
	return len(customers) == 0 || slices.Contains(customers, customer) || slices.Contains(customers, myCustomer)
}

const myCustomer = "my_customer"

// Run receives from sub until ctx ends, and returns nil then; it returns an error when Pub/Sub
// refuses to serve the subscription. When ctx ends, receiving stops at once and admissions in
// progress are cancelled, so that their messages come again. Run waits at most StopTimeout for
// the Pub/Sub client to stop: it may not, while it is still trying to reach Pub/Sub. Run sets
// sub.ReceiveSettings: ShutdownOptions, and the streams and flow control of ReceiverOptions.
func (r *Receiver) Run(ctx context.Context, sub *pubsub.Subscriber) error {
	if r.numStreams > 0 {
		sub.ReceiveSettings.NumGoroutines = r.numStreams
	}
	if r.outstanding > 0 {
		sub.ReceiveSettings.MaxOutstandingMessages = r.outstanding
	}
	// The client's default, untimed stop waits for its stream, which cannot end while the
	// client is still trying to open it; a timed stop cancels the stream first.
	sub.ReceiveSettings.ShutdownOptions = &pubsub.ShutdownOptions{Behavior: pubsub.ShutdownBehaviorWaitForProcessing, Timeout: r.stop}
	done := make(chan error, 1)
	go func() {
		done <- sub.Receive(ctx, func(ctx context.Context, m *pubsub.Message) {
			if r.Handle(ctx, m.ID, m.Data) {
				m.Ack()
			} else {
				m.Nack()
			}
		})
	}()
	select {
	case err := <-done:
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("receive from %s: %w", sub, err)
		}
		return nil
	case <-ctx.Done():
	}
	t := time.NewTimer(r.stop)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		r.m.StopTimeouts.Inc()
		r.log.Warn("the Pub/Sub client did not stop in time; leaving it", zap.String("subscription", sub.String()),
			zap.Duration("waited", r.stop))
	}
	return nil
}
