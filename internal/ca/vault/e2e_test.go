package vault

import (
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
)

// TestEndToEnd runs devices and user sessions through emulator → Pub/Sub → engine → vault
// connector → the fake Vault, and checks both ends: every certificate the device gets chains to
// the fake's root and carries the device key, Vault signed once per process, and the processes a
// Vault refuses, or whose answer is lost, fail with the reason and at most one certificate.
func TestEndToEnd(t *testing.T) {
	good := newFakeVault(t)
	// Device certificates carry the serial as the common name: no host name, so the role skips
	// the common name check, as docs/ca-vault.md advises.
	good.mounts["pki"].roles["devices"].cnValidationsOff = true
	good.mounts["pki"].roles["devices"].serverFlag = false // client certificates only, as docs/ca-vault.md sets up
	flaky := newFakeVault(t)
	flaky.mounts["pki"].roles["devices"].cnValidationsOff = true
	refusing := newFakeVault(t) // common names are checked: a serial number is refused
	lossy := newFakeVault(t)
	lossy.mounts["pki"].roles["devices"].cnValidationsOff = true
	h := e2etest.New(t, e2etest.Options{
		RetryFor: 20 * time.Second,
		CAs: func(*e2etest.Harness) map[string]ca.Connector {
			c, _ := good.newConnector(t, nil)
			fc, _ := flaky.newConnector(t, nil)
			rc, _ := refusing.newConnector(t, nil)
			lc, _ := lossy.newConnector(t, nil)
			return map[string]ca.Connector{"vault": c, "vault-flaky": fc, "vault-refusing": rc, "vault-lossy": lc}
		},
	})
	flaky.mu.Lock()
	flaky.failSign = []fakeFailure{
		{503, "", []string{"Vault is sealed"}},
		{429, "1", []string{`request path "pki/sign/devices": rate limit quota exceeded`}},
	}
	flaky.mu.Unlock()
	lossy.mu.Lock()
	lossy.loseSign = 1
	lossy.mu.Unlock()

	var names []string
	for i := range 8 {
		names = append(names, h.Start(emulator.ProcessSpec{CARef: "vault",
			Scope: []string{"device", "user"}[i%2], KeyType: []string{"rsa", "rsa", "ecdsa", "ecdsa"}[i%4]}))
	}
	flakyName := h.Start(emulator.ProcessSpec{CARef: "vault-flaky", KeyType: "ecdsa"})
	refused := h.Start(emulator.ProcessSpec{CARef: "vault-refusing"})
	lost := h.Start(emulator.ProcessSpec{CARef: "vault-lossy", KeyType: "ecdsa"})
	snaps := h.WaitFinished(append(names, flakyName, refused, lost), 3*time.Minute)

	for _, name := range names {
		leaf := h.MustIssue(snaps[name], good.leafPool())
		if leaf.Issuer.CommonName != "Fake Vault Intermediate" {
			t.Errorf("%s: issued by %s", name, leaf.Issuer)
		}
	}
	if n := good.issuedCount(); n != len(names) {
		t.Errorf("Vault signed %d certificates for %d processes", n, len(names))
	}
	h.MustIssue(snaps[flakyName], flaky.leafPool())
	if n, signs := flaky.issuedCount(), flaky.count("PUT", "pki/sign/devices"); n != 1 || signs != 3 {
		t.Errorf("flaky Vault: %d certificates after %d sign requests; want 1 after 3 (sealed, rate limited, signed)", n, signs)
	}
	for _, f := range []struct {
		name, want string
		fake       *fakeVault
		signed     int
	}{
		{refused, "not allowed by this role", refusing, 0},
		{lost, "not asking again", lossy, 1},
	} {
		s := snaps[f.name]
		if s.State != emulator.StateFailed || s.CertificatePEM != "" || !strings.Contains(s.FailureMessage, f.want) {
			t.Errorf("%s: state %s, failure %q; want failed with %q", f.name, s.State, s.FailureMessage, f.want)
		}
		if n, signs := f.fake.issuedCount(), f.fake.count("PUT", "pki/sign/devices"); n != f.signed || signs != 1 {
			t.Errorf("%s: Vault signed %d after %d sign requests; want %d after 1", f.name, n, signs, f.signed)
		}
	}
	h.WaitJournalIdle(10 * time.Second)
}
