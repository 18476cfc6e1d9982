package ejbca

import (
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
)

// TestEndToEnd runs devices and user sessions through emulator → Pub/Sub → engine → ejbca
// connector → the fake EJBCA, and checks both ends: every certificate the device gets chains to
// the fake's root and carries the device key, and EJBCA issued exactly one per process, also when
// an administrator had to approve (pending, then finalized), when the CA was offline for a while,
// when EJBCA's answer was lost (found by search, not issued again) and when the connection's
// timeout cut a call EJBCA had acted on (recovered by the engine through Recover's search); a
// request the end entity profile does not allow fails with EJBCA's reason.
func TestEndToEnd(t *testing.T) {
	good, held, flaky, lossy, refusing, hanging := newFakeEJBCA(t), newFakeEJBCA(t), newFakeEJBCA(t), newFakeEJBCA(t), newFakeEJBCA(t), newFakeEJBCA(t)
	hanging.hangEnroll = 1
	held.hold = true
	flaky.offline = 2
	lossy.loseEnroll = 1
	delete(refusing.eeProfiles[fakeEEP].dn, "O") // the profiles' subjects carry an organization
	h := e2etest.New(t, e2etest.Options{
		RetryFor:  20 * time.Second,
		CATimeout: 2 * time.Second,
		CAs: func(*e2etest.Harness) map[string]ca.Connector {
			c, _ := good.newConnector(t, nil)
			hc, _ := held.newConnector(t, ca.Settings{"enrollmentCodeSecretFile": secretFile(t)})
			fc, _ := flaky.newConnector(t, nil)
			lc, _ := lossy.newConnector(t, nil)
			rc, _ := refusing.newConnector(t, nil)
			gc, _ := hanging.newConnector(t, nil)
			return map[string]ca.Connector{"ejbca": c, "ejbca-held": hc, "ejbca-flaky": fc, "ejbca-lossy": lc, "ejbca-refusing": rc, "ejbca-hanging": gc}
		},
	})
	var names []string
	for i := range 8 {
		names = append(names, h.Start(emulator.ProcessSpec{CARef: "ejbca",
			Scope: []string{"device", "user"}[i%2], KeyType: []string{"rsa", "rsa", "ecdsa", "ecdsa"}[i%4]}))
	}
	heldNames := []string{h.Start(emulator.ProcessSpec{CARef: "ejbca-held", KeyType: "rsa"}),
		h.Start(emulator.ProcessSpec{CARef: "ejbca-held", Scope: "user", KeyType: "ecdsa"})}
	flakyName := h.Start(emulator.ProcessSpec{CARef: "ejbca-flaky", KeyType: "ecdsa"})
	lostName := h.Start(emulator.ProcessSpec{CARef: "ejbca-lossy", KeyType: "rsa"})
	refused := h.Start(emulator.ProcessSpec{CARef: "ejbca-refusing"})
	cut := h.Start(emulator.ProcessSpec{CARef: "ejbca-hanging", KeyType: "ecdsa"})

	// The administrator approves once both requests wait, and the engine has asked at least once.
	e2etest.WaitFor(t, time.Minute, func() bool {
		held.mu.Lock()
		defer held.mu.Unlock()
		return len(held.approvals) == 2 && held.calls["finalize"] >= 2
	})
	held.approve(t)
	snaps := h.WaitFinished(append(names, append(heldNames, flakyName, lostName, refused, cut)...), 3*time.Minute)

	for _, name := range names {
		leaf := h.MustIssue(snaps[name], good.leafPool())
		if leaf.Issuer.CommonName != "Fake EJBCA Issuing CA" {
			t.Errorf("%s: issued by %s", name, leaf.Issuer)
		}
	}
	if n := good.issuedCount(); n != len(names) {
		t.Errorf("EJBCA issued %d certificates for %d processes", n, len(names))
	}
	for _, name := range heldNames {
		h.MustIssue(snaps[name], held.leafPool())
	}
	if n, e := held.issuedCount(), held.count("enroll"); n != 2 || e != 2 {
		t.Errorf("held: %d certificates after %d enrollments; want 2 and 2", n, e)
	}
	h.MustIssue(snaps[flakyName], flaky.leafPool())
	if n, e := flaky.issuedCount(), flaky.count("enroll"); n != 1 || e != 3 {
		t.Errorf("flaky: %d certificates after %d enrollments; want 1 after 3 (offline, offline, issued)", n, e)
	}
	h.MustIssue(snaps[lostName], lossy.leafPool())
	if n, e := lossy.issuedCount(), lossy.count("enroll"); n != 1 || e != 1 {
		t.Errorf("lossy: %d certificates after %d enrollments; want 1 and 1 (the lost answer's certificate found by search)", n, e)
	}
	// The call the connection's timeout cut is recovered by search (the engine's Recover), not sent again.
	h.MustIssue(snaps[cut], hanging.leafPool())
	if n, e := hanging.issuedCount(), hanging.count("enroll"); n != 1 || e != 1 {
		t.Errorf("hanging: %d certificates after %d enrollments; want 1 and 1 (recovered)", n, e)
	}
	if n := h.Metric("certprov_ca_recovered_total", "ca_connection", "ejbca-hanging"); n != 1 {
		t.Errorf("recovered metric %v, want 1", n)
	}
	if s := snaps[refused]; s.State != emulator.StateFailed || s.CertificatePEM != "" || !strings.Contains(s.FailureMessage, "does not fulfil end entity profile") {
		t.Errorf("refused: state %s, failure %q", s.State, s.FailureMessage)
	}
	if n := refusing.issuedCount(); n != 0 {
		t.Errorf("refusing EJBCA issued %d", n)
	}
	h.WaitJournalIdle(10 * time.Second)
}
