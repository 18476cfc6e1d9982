package reference

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/emulator"
)

// TestProvisions: the reference driver takes RSA and P-256 processes of device and user scope
// to certificates that chain to its CA and carry each device's key, with exactly the five
// calls a process needs when the device signs at once.
func TestProvisions(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	emu, err := emulator.New(ctx, emulator.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(srv.Close)

	d, err := New(ctx, Options{
		APIEndpoint: srv.URL + "/", PubSubAddr: emu.PubSubAddr(), Project: emu.Project(),
		Subscription: emulator.DefaultSubscription, InstanceID: "reference-1", Streams: 2,
		PollInterval: 50 * time.Millisecond, MaxPollInterval: 200 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	var names []string
	for _, spec := range []emulator.ProcessSpec{
		{KeyType: emulator.KeyRSA},
		{KeyType: emulator.KeyECDSA},
		{KeyType: emulator.KeyRSA, Scope: emulator.ScopeUser},
		{KeyType: emulator.KeyECDSA, Scope: emulator.ScopeUser, Encoding: emulator.EncodingProto},
		{KeyType: emulator.KeyRSA, Duplicates: 3}, // Pub/Sub delivers at least once
		{KeyType: emulator.KeyECDSA, SignDelay: 300 * time.Millisecond},
	} {
		name, err := emu.StartProcess(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	deadline := time.Now().Add(time.Minute)
	for d.Stats().Issued+d.Stats().Failed < int64(len(names)) {
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: %+v", d.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	roots, _, err := emulator.CertPoolFromPEM(d.CACertificatePEM())
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		s, _ := emu.Process(name)
		if _, err := emulator.VerifyIssued(s, roots, nil); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if s.SignDataCount != 1 {
			t.Errorf("%s: signData reached the device %d times", name, s.SignDataCount)
		}
		if i >= len(names)-2 {
			continue // the duplicates may be read and claimed again; the slow device is polled more than once
		}
		for _, m := range []string{emulator.MethodGet, emulator.MethodClaim, emulator.MethodSignData, emulator.MethodOperationsGet, emulator.MethodUploadCertificate} {
			if s.Calls[m] != 1 {
				t.Errorf("%s: %d %s calls, want 1 (calls %v)", name, s.Calls[m], m, s.Calls)
			}
		}
	}
	if st := d.Stats(); st.Issued != int64(len(names)) || st.Failed != 0 || st.InFlight != 0 || st.Admitted != int64(len(names)) {
		t.Errorf("stats %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
