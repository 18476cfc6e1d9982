package intake

import (
	"context"
	"errors"
	"sync"
	"testing"

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
