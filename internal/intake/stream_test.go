package intake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

const warnCannotOpen = "cannot open a Pub/Sub stream; no notification is received until one opens"

// TestStreamWatchRateLimit drives the watch through an outage, a recovery and a flapping stream
// on a hand-moved clock: the first failure is reported at once, later ones at most once per
// interval with the count so far, the recovery once, and StreamOpen follows every step.
func TestStreamWatchRateLimit(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := metrics.NewIntake(nil)
	w := newStreamWatch(zap.New(core), m, 30*time.Second, clock.Now)
	refused := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")

	warnings := func() []observer.LoggedEntry { return logs.FilterMessage(warnCannotOpen).AllUntimed() }
	if open, err := w.state(); open || err != nil {
		t.Fatalf("before any attempt: open %v, err %v", open, err)
	}

	w.failed("pubsub:443", refused)
	if n := len(warnings()); n != 1 {
		t.Fatalf("first failure: %d warnings, want 1", n)
	}
	for range 20 { // a client retrying every second for 20 s
		clock.Advance(time.Second)
		w.failed("pubsub:443", refused)
	}
	if n := len(warnings()); n != 1 {
		t.Fatalf("21 failures within 20s: %d warnings, want 1", n)
	}
	if open, err := w.state(); open || err != refused {
		t.Fatalf("during the outage: open %v, err %v; want false and the dial error", open, err)
	}
	clock.Advance(10 * time.Second)
	w.failed("pubsub:443", refused)
	ws := warnings()
	if len(ws) != 2 {
		t.Fatalf("failure 30s after the first warning: %d warnings, want 2", len(ws))
	}
	fields := ws[1].ContextMap()
	if fields["failed_attempts"] != int64(22) || fields["failing_for"] != 30*time.Second || fields["endpoint"] != "pubsub:443" ||
		!strings.Contains(fields["error"].(string), "connection refused") {
		t.Fatalf("second warning fields %v", fields)
	}

	clock.Advance(time.Second)
	w.streamOpened()
	if open, err := w.state(); !open || err != nil {
		t.Fatalf("after opening: open %v, err %v", open, err)
	}
	back := logs.FilterMessage("Pub/Sub stream open again").AllUntimed()
	if len(back) != 1 || back[0].ContextMap()["failed_attempts"] != int64(22) {
		t.Fatalf("recovery lines %v", back)
	}

	// Flapping: the stream ends and fails to reopen within the interval of the last warning,
	// so nothing more is logged, and the quick reopen is not announced either.
	w.streamEnded(nil)
	if open, err := w.state(); open || err != nil {
		t.Fatalf("after a clean end: open %v, err %v", open, err)
	}
	w.failed("pubsub:443", refused)
	w.streamOpened()
	if n := len(warnings()); n != 2 {
		t.Fatalf("failure within the interval after a recovery: %d warnings, want still 2", n)
	}
	if n := logs.FilterMessage("Pub/Sub stream open again").Len(); n != 1 {
		t.Fatalf("unannounced outage announced as over: %d recovery lines", n)
	}
	if got := testutil.ToFloat64(m.StreamOpenFailures); got != 23 {
		t.Errorf("failures counted %v, want 23", got)
	}
	if got := testutil.ToFloat64(m.StreamOpens); got != 2 {
		t.Errorf("opens counted %v, want 2", got)
	}
}

// silentListener accepts TCP connections and never says a word: a port that is open but is not
// a gRPC server (a wrong port, a stuck proxy).
func silentListener(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

// newClient builds a Pub/Sub client for endpoint the way the adapter does for an emulator.
func newClient(t *testing.T, r *Receiver, endpoint string) *pubsub.Client {
	t.Helper()
	c, err := pubsub.NewClient(context.Background(), "p", append(r.ClientOptions(), option.WithEndpoint(endpoint),
		option.WithoutAuthentication(), option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it holds or a minute passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	clocktest.WaitFor(t, what, time.Minute, cond)
}

// TestReceiveUnreachable runs the receiver against a Pub/Sub that cannot be reached. The
// client retries opening its stream forever without a word; the receiver warns with the
// reason, not once per attempt, and stops within its bound when asked to.
func TestReceiveUnreachable(t *testing.T) {
	tests := []struct {
		name     string
		endpoint func(t testing.TB) string
		reason   string
	}{
		{"closed port", testservers.FreeAddr, "connection refused"},
		{"silent port", silentListener, "server preface"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zapcore.InfoLevel)
			reg := prometheus.NewRegistry()
			m := metrics.NewIntake(reg)
			const stop = 2 * time.Second
			r := NewReceiver(ReceiverOptions{
				Admitter: &recordingAdmitter{}, Logger: zap.New(core), Registerer: reg,
				StopTimeout: stop, ConnectTimeout: 500 * time.Millisecond,
			})
			client := newClient(t, r, tt.endpoint(t))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			started := time.Now()
			go func() { done <- r.Run(ctx, client.Subscriber("s")) }()

			waitFor(t, "three failed attempts", func() bool { return testutil.ToFloat64(m.StreamOpenFailures) >= 3 })
			elapsed := time.Since(started)
			ws := logs.FilterMessage(warnCannotOpen).AllUntimed()
			if len(ws) == 0 {
				t.Fatal("no warning about the stream")
			}
			if max := 1 + int(elapsed/DefaultWarnInterval); len(ws) > max {
				t.Fatalf("%d warnings in %s (%v failures); want at most %d", len(ws), elapsed, testutil.ToFloat64(m.StreamOpenFailures), max)
			}
			if msg := ws[0].ContextMap()["error"].(string); !strings.Contains(msg, tt.reason) {
				t.Fatalf("warning reason %q does not contain %q", msg, tt.reason)
			}
			if open, err := r.StreamOpen(); open || err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("StreamOpen = %v, %v; want false and the reason", open, err)
			}

			cancel()
			stopped := time.Now()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(stop + 5*time.Second):
				t.Fatalf("Run did not return within %s of the cancellation", stop+5*time.Second)
			}
			if n := testutil.ToFloat64(m.StopTimeouts); n != 0 {
				t.Fatal("Run gave up waiting for the client instead of the client stopping")
			}
			closed := make(chan error, 1)
			go func() { closed <- client.Close() }()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("Client.Close hangs")
			}
			t.Logf("%v failed attempts, %d warnings; stopped in %s", testutil.ToFloat64(m.StreamOpenFailures),
				len(ws), time.Since(stopped).Round(time.Millisecond))
		})
	}
}

// forward accepts connections on addr and relays each to target, byte for byte.
func forward(t *testing.T, addr, target string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// TestStreamOpensWhenPubSubComesBack starts the receiver while nothing listens at the Pub/Sub
// address, then puts the emulator's Pub/Sub there: the stream opens by itself, StreamOpen says
// so, the recovery is logged, and a notification published then is admitted.
func TestStreamOpensWhenPubSubComesBack(t *testing.T) {
	emu, err := emulator.New(context.Background(), emulator.Options{Project: "p", Topic: "t", Subscription: "s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	addr := testservers.FreeAddr(t)

	core, logs := observer.New(zapcore.InfoLevel)
	admitted := &recordingAdmitter{}
	r := NewReceiver(ReceiverOptions{Admitter: admitted, Customers: []string{"C0a"}, Logger: zap.New(core)})
	client := newClient(t, r, addr)
	t.Cleanup(func() { _ = client.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, client.Subscriber("s")) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, "the first warning", func() bool { return logs.FilterMessage(warnCannotOpen).Len() > 0 })
	forward(t, addr, emu.PubSubAddr())
	waitFor(t, "an open stream", func() bool { open, _ := r.StreamOpen(); return open })
	if _, err := r.StreamOpen(); err != nil {
		t.Fatalf("StreamOpen error %v with a stream open", err)
	}
	back := logs.FilterMessage("Pub/Sub stream open again").AllUntimed()
	if len(back) != 1 || back[0].ContextMap()["failed_attempts"].(int64) < 1 {
		t.Fatalf("recovery lines %v", back)
	}

	const pid = "0123456789ABCDEF0123456789ABCDEF"
	data, err := emulator.EncodeNotification("camel", pid, "C0a")
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Publish(context.Background(), data); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the notification to be admitted", func() bool {
		admitted.mu.Lock()
		defer admitted.mu.Unlock()
		return len(admitted.names) == 1 && admitted.names[0] == "customers/C0a/certificateProvisioningProcesses/"+pid
	})
}

// blockingAdmitter holds every admission until released, and records how many were in
// progress at once.
type blockingAdmitter struct {
	release chan struct{}

	mu       sync.Mutex
	now, top int
	names    []string
}

func (a *blockingAdmitter) Admit(ctx context.Context, name string) error {
	a.mu.Lock()
	a.now++
	a.top = max(a.top, a.now)
	a.names = append(a.names, name)
	a.mu.Unlock()
	defer func() { a.mu.Lock(); a.now--; a.mu.Unlock() }()
	select {
	case <-a.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *blockingAdmitter) counts() (inProgress, top, admitted int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.now, a.top, len(a.names)
}

// TestStreamsAndFlowControl: the receiver holds pubsub.streams streams open on the emulator's
// Pub/Sub, and pubsub.maxOutstandingMessages bounds the admissions in progress across them;
// every notification is admitted once released.
func TestStreamsAndFlowControl(t *testing.T) {
	emu, err := emulator.New(context.Background(), emulator.Options{Project: "p", Topic: "t", Subscription: "s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	admitter := &blockingAdmitter{release: make(chan struct{})}
	r := NewReceiver(ReceiverOptions{Admitter: admitter, Customers: []string{"C0a"}, Streams: 3, MaxOutstandingMessages: 2})
	client := newClient(t, r, emu.PubSubAddr())
	t.Cleanup(func() { _ = client.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, client.Subscriber("s")) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, "three open streams", func() bool {
		r.streams.mu.Lock()
		defer r.streams.mu.Unlock()
		return r.streams.open == 3
	})
	const n = 6
	for i := range n {
		data, err := emulator.EncodeNotification("camel", fmt.Sprintf("%032X", i), "C0a")
		if err != nil {
			t.Fatal(err)
		}
		if err := emu.Publish(context.Background(), data); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "two admissions in progress", func() bool { now, _, _ := admitter.counts(); return now == 2 })
	// Give a third message the time to arrive, were flow control not applied.
	time.Sleep(300 * time.Millisecond)
	if _, top, _ := admitter.counts(); top != 2 {
		t.Fatalf("%d admissions in progress at once, want maxOutstandingMessages 2", top)
	}
	close(admitter.release)
	waitFor(t, "every notification admitted", func() bool { _, _, got := admitter.counts(); return got >= n })
	if _, top, got := admitter.counts(); top > 2 || got != n {
		t.Fatalf("%d admitted (want %d), %d at once (want at most 2)", got, n, top)
	}
}
