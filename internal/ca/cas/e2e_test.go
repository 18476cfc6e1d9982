package cas_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
)

// TestEndToEnd runs devices and user sessions through emulator → Pub/Sub → engine → cas
// connector → the SDK → the in-process CAS, and checks both ends: every certificate uploaded
// (the leaf alone) is signed by the pool's CA and carries the device key, and CAS signed once per process, also when its
// answers were lost, and when it never answered before the connection's timeout (the engine
// then recovers the certificate by its certificate_id, or asks again with the same request_id).
func TestEndToEnd(t *testing.T) {
	good, lossy, hanging, refusing := newFakeCAS(t), newFakeCAS(t), newFakeCAS(t), newFakeCAS(t)
	lossy.loseFirstAnswers = true
	hanging.hangAfterIssue = true
	refusing.fail["CreateCertificate"] = status.Error(codes.PermissionDenied, "Permission 'privateca.certificates.create' denied on resource")
	h := e2etest.New(t, e2etest.Options{
		RetryFor:  20 * time.Second,
		CATimeout: 2 * time.Second,
		CAs: func(*e2etest.Harness) map[string]ca.Connector {
			return map[string]ca.Connector{
				"cas":          connector(t, good, nil),
				"cas-lossy":    connector(t, lossy, nil),
				"cas-hanging":  connector(t, hanging, nil),
				"cas-refusing": connector(t, refusing, nil),
			}
		},
	})
	byFake := map[*fakeCAS][]string{}
	for i := range 12 {
		spec := emulator.ProcessSpec{CARef: "cas", Scope: []string{"device", "user"}[i%2], KeyType: []string{"rsa", "ecdsa"}[i/2%2]}
		byFake[good] = append(byFake[good], h.Start(spec))
	}
	for i := range 3 {
		byFake[lossy] = append(byFake[lossy], h.Start(emulator.ProcessSpec{CARef: "cas-lossy", KeyType: []string{"rsa", "ecdsa"}[i%2]}))
		byFake[hanging] = append(byFake[hanging], h.Start(emulator.ProcessSpec{CARef: "cas-hanging", KeyType: []string{"rsa", "ecdsa"}[i%2]}))
	}
	refused := h.Start(emulator.ProcessSpec{CARef: "cas-refusing", KeyType: "ecdsa"})

	var names []string
	for _, ns := range byFake {
		names = append(names, ns...)
	}
	snaps := h.WaitFinished(append(names, refused), 3*time.Minute)
	for f, ns := range byFake {
		for _, name := range ns {
			h.MustIssue(snaps[name], f.issuers())
		}
		f.mu.Lock()
		if len(f.minted) != len(ns) {
			t.Errorf("%s: %d certificate IDs signed for %d processes", f, len(f.minted), len(ns))
		}
		for id, n := range f.minted {
			if n != 1 {
				t.Errorf("%s: %s signed %d times", f, id, n)
			}
		}
		f.mu.Unlock()
	}
	if s := snaps[refused]; s.State != emulator.StateFailed || !strings.Contains(s.FailureMessage, "PermissionDenied") ||
		!strings.Contains(s.FailureMessage, "privateca.certificates.create") {
		t.Errorf("refused: %s %q", s.State, s.FailureMessage)
	}
	// Each cut call ends in the certificate CAS signed for it: recovered with GetCertificate
	// when the client's deadline ended the call, or — when CAS's own end of the same deadline
	// answered DeadlineExceeded first, which the engine takes as an answer — created again with
	// the same request_id, which CAS answers with that certificate. Which side ends first is
	// the scheduler's choice; both end in one signature (minted above).
	recovered := h.Metric("certprov_ca_recovered_total", "ca_connection", "cas-hanging")
	if got := int(recovered) + hanging.replays(); got != 3 {
		t.Errorf("certprov_ca_recovered_total{cas-hanging} = %v plus %d creates answered by request_id, want 3 in all", recovered, hanging.replays())
	}
	if n := hanging.callCount("GetCertificate"); n < int(recovered) {
		t.Errorf("%v certificates recovered with %d GetCertificate calls", recovered, n)
	}
	h.WaitJournalIdle(10 * time.Second)
}
