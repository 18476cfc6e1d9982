package intake

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certprov/certprov-adapter/internal/metrics"
)

// streamingPullMethod is the gRPC method the Pub/Sub client holds open to receive messages.
const streamingPullMethod = "/google.pubsub.v1.Subscriber/StreamingPull"

// DefaultWarnInterval is the least time between two warnings about a stream that cannot open.
const DefaultWarnInterval = 30 * time.Second

// streamWatch follows the Pub/Sub client's StreamingPull streams through a gRPC stream
// interceptor. The client retries opening a stream by itself, without a word and for as long
// as Receive runs; the watch makes that visible: failures are counted and logged at warn (the
// first at once, then at most once per interval, with the count so far), and StreamOpen says
// whether a stream is open now.
type streamWatch struct {
	log      *zap.Logger
	m        *metrics.Intake
	interval time.Duration
	now      func() time.Time

	mu       sync.Mutex
	open     int       // streams open now
	opened   int       // streams opened since the start
	lastErr  error     // why the latest attempt failed; nil once a stream opened after it
	failures int       // failed attempts since a stream was last open
	failing  time.Time // the first of those failures
	lastWarn time.Time // kept across outages, so that a flapping stream stays rate-limited
	warned   bool      // this outage was reported, so its end is reported too
}

func newStreamWatch(log *zap.Logger, m *metrics.Intake, interval time.Duration, now func() time.Time) *streamWatch {
	return &streamWatch{log: log, m: m, interval: interval, now: now}
}

// intercept is a grpc.StreamClientInterceptor that watches StreamingPull and passes every
// other stream through.
func (w *streamWatch) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if method != streamingPullMethod {
		return streamer(ctx, desc, cc, method, opts...)
	}
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		// A cancelled attempt is the client stopping, not Pub/Sub failing.
		if ctx.Err() == nil {
			w.failed(cc.Target(), err)
		}
		return nil, err
	}
	w.streamOpened()
	ws := &watchedStream{ClientStream: s, w: w}
	// The client cancels a stream's context when it replaces or stops it, whether or not a
	// receive is waiting on it then.
	context.AfterFunc(ctx, func() { ws.end(nil) })
	return ws, nil
}

// failed records an attempt to open a stream that failed with err.
func (w *streamWatch) failed(endpoint string, err error) {
	now := w.now()
	w.m.StreamOpenFailures.Inc()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastErr = err
	if w.failures == 0 {
		w.failing = now
	}
	w.failures++
	if !w.lastWarn.IsZero() && now.Sub(w.lastWarn) < w.interval {
		return
	}
	w.lastWarn, w.warned = now, true
	w.log.Warn("cannot open a Pub/Sub stream; no notification is received until one opens",
		zap.String("endpoint", endpoint), zap.Int("failed_attempts", w.failures),
		zap.Duration("failing_for", now.Sub(w.failing)), zap.Error(err))
}

func (w *streamWatch) streamOpened() {
	now := w.now()
	w.m.StreamOpens.Inc()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.open++
	w.opened++
	w.m.StreamsOpen.Set(float64(w.open))
	switch {
	case w.warned:
		w.log.Info("Pub/Sub stream open again", zap.Int("failed_attempts", w.failures),
			zap.Duration("after", now.Sub(w.failing)))
	case w.opened == 1:
		w.log.Info("Pub/Sub stream open; receiving notifications")
	default:
		w.log.Debug("Pub/Sub stream reopened")
	}
	w.lastErr, w.failures, w.failing, w.warned = nil, 0, time.Time{}, false
}

func (w *streamWatch) streamEnded(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.open--
	w.m.StreamsOpen.Set(float64(w.open))
	if err != nil {
		w.lastErr = err
	}
	// The client reopens at once, and a stream that cannot reopen is reported by failed.
	w.log.Debug("Pub/Sub stream ended", zap.Error(err))
}

// state returns whether a stream is open and, when none is, why the latest attempt failed.
func (w *streamWatch) state() (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.open > 0 {
		return true, nil
	}
	return false, w.lastErr
}

// watchedStream reports its end to the watch once: the first receive error, or its context's
// end, whichever comes first.
type watchedStream struct {
	grpc.ClientStream
	w    *streamWatch
	once sync.Once
}

func (s *watchedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.end(err)
	}
	return err
}

func (s *watchedStream) end(err error) {
	s.once.Do(func() {
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || s.Context().Err() != nil {
			err = nil // closed, not failed
		}
		s.w.streamEnded(err)
	})
}
