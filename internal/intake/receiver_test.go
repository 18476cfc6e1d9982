package intake

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/certprov/certprov-adapter/internal/metrics"
)

// recordingAdmitter stands for the engine: it records names and fails on demand.
type recordingAdmitter struct {
	mu    sync.Mutex
	names []string
	err   error
}

func (a *recordingAdmitter) Admit(_ context.Context, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.names = append(a.names, name)
	return a.err
}

func TestHandle(t *testing.T) {
	const pid = "0123456789ABCDEF0123456789ABCDEF"
	msg := func(customer string) []byte {
		return []byte(`{"certificateProvisioningProcessId":"` + pid + `","customerId":"` + customer + `"}`)
	}
	tests := []struct {
		name      string
		customers []string
		data      []byte
		admitErr  error
		wantAck   bool
		wantAdmit string
		counter   string
	}{
		{"served customer", []string{"C0a"}, msg("C0a"), nil, true, "customers/C0a/certificateProvisioningProcesses/" + pid, "admitted"},
		{"foreign customer acked, not admitted", []string{"C0a"}, msg("C0b"), nil, true, "", "foreign_customer"},
		{"my_customer serves any", []string{"my_customer"}, msg("C0b"), nil, true, "customers/C0b/certificateProvisioningProcesses/" + pid, "admitted"},
		{"malformed acked", []string{"C0a"}, []byte("garbage"), nil, true, "", "malformed"},
		{"admit failure redelivered", []string{"C0a"}, msg("C0a"), errors.New("journal down"), false, "customers/C0a/certificateProvisioningProcesses/" + pid, "admit_error"},
		{"shutdown redelivered", []string{"C0a"}, msg("C0a"), context.Canceled, false, "customers/C0a/certificateProvisioningProcesses/" + pid, "deferred"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := &recordingAdmitter{err: tc.admitErr}
			reg := prometheus.NewRegistry()
			r := NewReceiver(ReceiverOptions{Admitter: a, Customers: tc.customers, Registerer: reg})
			if ack := r.Handle(context.Background(), "m1", tc.data); ack != tc.wantAck {
				t.Fatalf("ack = %v, want %v", ack, tc.wantAck)
			}
			switch {
			case tc.wantAdmit == "" && len(a.names) != 0:
				t.Fatalf("admitted %v", a.names)
			case tc.wantAdmit != "" && (len(a.names) != 1 || a.names[0] != tc.wantAdmit):
				t.Fatalf("admitted %v, want %s", a.names, tc.wantAdmit)
			}
			// Every message is counted once, under its result.
			m := metrics.NewIntake(reg)
			if got := testutil.ToFloat64(m.Messages.WithLabelValues(tc.counter)); got != 1 {
				t.Fatalf("certprov_pubsub_messages_total{result=%q} = %v, want 1", tc.counter, got)
			}
			if n := testutil.CollectAndCount(m.Messages); n != 1 {
				t.Fatalf("%d result series, want 1", n)
			}
		})
	}
}

// hintedError is a failed admission that says when to try again, as the engine's does.
type hintedError struct{ after time.Duration }

func (e hintedError) Error() string             { return "record claim: no space left on device" }
func (e hintedError) RetryAfter() time.Duration { return e.after }

// cancellingAdmitter fails, asking for a long wait, and the adapter stops meanwhile.
type cancellingAdmitter struct{ cancel context.CancelFunc }

func (a cancellingAdmitter) Admit(context.Context, string) error {
	a.cancel()
	return fmt.Errorf("admit: %w", hintedError{time.Hour})
}

var servedMessage = []byte(`{"certificateProvisioningProcessId":"0123456789ABCDEF0123456789ABCDEF","customerId":"C0a"}`)

// A failed admission whose error says when to try again holds its message at least that long
// before the nack: Pub/Sub would redeliver it at once, and the admission would fail again at
// once, tens of times a second.
func TestHandleHoldsMessageAfterFailure(t *testing.T) {
	const hold = 150 * time.Millisecond
	a := &recordingAdmitter{err: fmt.Errorf("admit: %w", hintedError{hold})}
	reg := prometheus.NewRegistry()
	r := NewReceiver(ReceiverOptions{Admitter: a, Customers: []string{"C0a"}, Registerer: reg})
	start := time.Now()
	if r.Handle(context.Background(), "m1", servedMessage) {
		t.Fatal("a failed admission was acked")
	}
	// A timer never fires early: this bound cannot fail by a slow machine.
	if waited := time.Since(start); waited < hold {
		t.Fatalf("nacked after %s, want a hold of at least %s", waited, hold)
	}
	if got := testutil.ToFloat64(metrics.NewIntake(reg).Messages.WithLabelValues(metrics.MessageAdmitError)); len(a.names) != 1 || got != 1 {
		t.Fatalf("admitted %v, certprov_pubsub_messages_total{result=admit_error} = %v, want 1", a.names, got)
	}
}

// A stop ends the hold at once: the message is nacked, to come again to whoever runs next.
func TestHandleHoldEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := NewReceiver(ReceiverOptions{Admitter: cancellingAdmitter{cancel}, Customers: []string{"C0a"}})
	done := make(chan bool, 1)
	go func() { done <- r.Handle(ctx, "m1", servedMessage) }()
	select {
	case ack := <-done:
		if ack {
			t.Fatal("a failed admission was acked")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Handle held the message for the hour the admitter asked, past the end of its context")
	}
}
