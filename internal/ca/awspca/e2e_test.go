package awspca_test

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
)

// TestEndToEnd runs devices and user sessions through emulator → Pub/Sub → engine → awspca
// connector → the SDK → the SigV4-checking fake, and checks both ends: every certificate
// uploaded (the leaf alone) is signed by the CA and carries the device key, and PCA signed once
// per process, also when it kept a request in progress (pending, resumed by the ARN), when the
// SDK retried a lost answer, and when it never answered before the connection's timeout (the
// process then fails instead of asking again).
func TestEndToEnd(t *testing.T) {
	awsEnv(t)
	good, held, lossy, hanging, refusing := newFakePCA(t, "EC_prime256v1"), newFakePCA(t, "RSA_2048"),
		newFakePCA(t, "EC_prime256v1"), newFakePCA(t, "EC_prime256v1"), newFakePCA(t, "EC_prime256v1")
	held.holdCalls = 2
	lossy.loseFirstAnswers = true
	hanging.hangAfterIssue = true
	refusing.fail["IssueCertificate"] = fakeError{400, "AccessDeniedException", "User is not authorized to perform: acm-pca:IssueCertificate"}
	h := e2etest.New(t, e2etest.Options{
		RetryFor:  20 * time.Second,
		CATimeout: 2 * time.Second,
		CAs: func(*e2etest.Harness) map[string]ca.Connector {
			return map[string]ca.Connector{
				"pca":          connector(t, good, nil, false),
				"pca-held":     connector(t, held, nil, false),
				"pca-lossy":    connector(t, lossy, nil, true),
				"pca-hanging":  connector(t, hanging, nil, false),
				"pca-refusing": connector(t, refusing, nil, false),
			}
		},
	})
	issuedBy := map[*fakePCA][]string{}
	for i := range 12 {
		spec := emulator.ProcessSpec{CARef: "pca", Scope: []string{"device", "user"}[i%2], KeyType: []string{"rsa", "ecdsa"}[i/2%2]}
		issuedBy[good] = append(issuedBy[good], h.Start(spec))
	}
	for i := range 3 {
		issuedBy[held] = append(issuedBy[held], h.Start(emulator.ProcessSpec{CARef: "pca-held", KeyType: []string{"rsa", "ecdsa"}[i%2]}))
		issuedBy[lossy] = append(issuedBy[lossy], h.Start(emulator.ProcessSpec{CARef: "pca-lossy", KeyType: []string{"rsa", "ecdsa"}[i%2]}))
	}
	var cut []string
	for i := range 2 {
		cut = append(cut, h.Start(emulator.ProcessSpec{CARef: "pca-hanging", KeyType: []string{"rsa", "ecdsa"}[i%2]}))
	}
	refused := h.Start(emulator.ProcessSpec{CARef: "pca-refusing", KeyType: "ecdsa"})

	names := append([]string{refused}, cut...)
	for _, ns := range issuedBy {
		names = append(names, ns...)
	}
	snaps := h.WaitFinished(names, 3*time.Minute)
	for f, ns := range issuedBy {
		pool := x509.NewCertPool()
		pool.AddCert(f.ca.Cert)
		for _, name := range ns {
			h.MustIssue(snaps[name], pool)
		}
		f.mu.Lock()
		if f.minted != len(ns) || len(f.mintedFor) != len(ns) {
			t.Errorf("%s CA: %d certificates for %d tokens, %d processes", f.keyAlg, f.minted, len(f.mintedFor), len(ns))
		}
		f.mu.Unlock()
	}
	if n := held.callCount("GetCertificate"); n < 9 {
		t.Errorf("the held CA answered %d GetCertificate calls; want at least 3 per process (2 in progress, then the certificate)", n)
	}
	for _, name := range cut {
		s := snaps[name]
		if s.State != emulator.StateFailed || !strings.Contains(s.FailureMessage, "may have issued a certificate") {
			t.Errorf("%s: %s %q", name, s.State, s.FailureMessage)
		}
	}
	hanging.mu.Lock()
	for token, n := range hanging.tokenCalls {
		if n != 1 {
			t.Errorf("token %s sent %d times after the call was cut", token, n)
		}
	}
	hanging.mu.Unlock()
	if s := snaps[refused]; s.State != emulator.StateFailed || !strings.Contains(s.FailureMessage, "AccessDeniedException") {
		t.Errorf("refused: %s %q", s.State, s.FailureMessage)
	}
	h.WaitJournalIdle(10 * time.Second)
}
