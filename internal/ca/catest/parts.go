package catest

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// Target is one connection under test, made fresh for each subtest by the function given to
// RunTarget, with what the suite needs to drive the optional parts.
type Target struct {
	Connector ca.Connector
	// Roots are the roots its certificates chain to.
	Roots *x509.CertPool

	// Idempotent says the connector passes ca.Request.Key to its CA as an idempotency key: Issue
	// repeated with the same key returns the certificate already issued (the same serial), not a
	// second one. Without it, a repeat must still succeed, with a certificate for the key.
	Idempotent bool

	// Pending, when set, lets the suite make the CA hold requests for approval, and so run the
	// Pending part.
	Pending *PendingControl

	// Revocation is required when the connector implements ca.Revoker: it says how the suite
	// sees what the CA revoked. A Revoker without it fails the suite, since a revocation nobody
	// can observe proves nothing.
	Revocation *Revocation
}

// PendingControl makes the CA behind a Target hold requests for approval, as a CA with a
// manager-approval workflow does.
type PendingControl struct {
	// Hold makes the CA answer every request it receives from now on with "accepted, not issued
	// yet", until Approve.
	Hold func(t testing.TB)
	// Approve issues what the CA holds and stops holding.
	Approve func(t testing.TB)
}

// Revocation tells the suite what the CA revoked.
type Revocation struct {
	// Status reports whether the CA holds cert revoked, and with which reason. It asks the CA
	// itself (the CRL it publishes, its API, the fake's records), never the connector.
	Status func(t testing.TB, cert *x509.Certificate) (revoked bool, reason ca.Reason)
	// UnknownSerialAccepted says the CA records the revocation of any serial number without
	// telling whether it issued it (step-ca), so a serial it never issued cannot be refused.
	// Without it, revoking an unknown serial must fail with a Permanent error.
	UnknownSerialAccepted bool
	// NeedsCertificate says the CA revokes by something only the certificate gives (a resource
	// name): a request with the serial alone must then fail with a Permanent error.
	NeedsCertificate bool
	// ReasonNotRecorded says the CA revokes without a reason (Vault's PKI takes a serial only and
	// its CRL entries carry none): the suite then checks that the certificate is revoked, not
	// with which reason.
	ReasonNotRecorded bool
}

func ctxFor(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// issue issues a request for a fresh P-256 device key and checks the certificate.
func issue(t testing.TB, tg *Target, id string) (*ca.Request, *ca.Issued) {
	t.Helper()
	req := NewRequest(t, DeviceKey(t, P256), id)
	issued, err := tg.Connector.Issue(ctxFor(t), req)
	if err != nil {
		t.Fatalf("Issue %s: %v", id, err)
	}
	CheckIssued(t, req, issued, tg.Roots)
	return req, issued
}

func sameCert(a, b *x509.Certificate) bool {
	return a != nil && b != nil && a.Equal(b)
}

func wantClass(t testing.TB, what string, err error, want ca.Class) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want a %v one", what, want)
	}
	if got, _ := ca.Classify(err); got != want {
		t.Errorf("%s: classified %v, want %v: %v", what, got, want, err)
	}
}

// runOptional runs the parts a connector opts into, by its interfaces and its Target.
func runOptional(t *testing.T, newTarget func(t *testing.T) *Target) {
	t.Run("RepeatedKey", func(t *testing.T) { testRepeatedKey(t, newTarget(t)) })

	probe := newTargetOnce(t, newTarget)
	if _, ok := probe.Connector.(ca.Recoverer); ok {
		t.Run("Recover", func(t *testing.T) { testRecover(t, newTarget(t)) })
	}
	if _, ok := probe.Connector.(ca.Pinger); ok {
		t.Run("Ping", func(t *testing.T) { testPing(t, newTarget(t)) })
	}
	if _, ok := probe.Connector.(ca.PublicKeyIssuer); ok {
		for _, kt := range []KeyType{RSA2048, P256} {
			t.Run("IssueForKey/"+string(kt), func(t *testing.T) { testIssueForKey(t, newTarget(t), kt) })
		}
	}
	if probe.Pending != nil {
		t.Run("Pending", func(t *testing.T) { testPending(t, newTarget(t)) })
	}
	if _, ok := probe.Connector.(ca.Revoker); ok {
		t.Run("Revoke", func(t *testing.T) { testRevoke(t, newTarget(t)) })
	} else if probe.Revocation != nil {
		t.Errorf("the Target has a Revocation, but %T does not implement ca.Revoker", probe.Connector)
	}
}

// newTargetOnce makes one target to learn which parts apply, in a subtest of its own so that
// its cleanups run before the parts start.
func newTargetOnce(t *testing.T, newTarget func(t *testing.T) *Target) *Target {
	var tg *Target
	t.Run("Parts", func(t *testing.T) {
		tg = newTarget(t)
		var parts []string
		if _, ok := tg.Connector.(ca.Recoverer); ok {
			parts = append(parts, "Recover")
		}
		if _, ok := tg.Connector.(ca.Pinger); ok {
			parts = append(parts, "Ping")
		}
		if _, ok := tg.Connector.(ca.PublicKeyIssuer); ok {
			parts = append(parts, "IssueForKey")
		}
		if tg.Pending != nil {
			parts = append(parts, "Pending")
		}
		if _, ok := tg.Connector.(ca.Revoker); ok {
			parts = append(parts, "Revoke")
		}
		t.Logf("optional parts for %T: %v", tg.Connector, parts)
	})
	if tg == nil {
		t.FailNow()
	}
	return tg
}

func describeIssued(i *ca.Issued) string {
	if i == nil || i.Leaf == nil {
		return "no certificate"
	}
	return "serial " + i.Leaf.SerialNumber.Text(16)
}

// testRepeatedKey: the engine asks again with the same key after a retryable error, after a
// pending answer and after a restart, so the CA must not refuse a key for being used before; an
// idempotent one answers with the certificate it issued.
func testRepeatedKey(t testing.TB, tg *Target) {
	req := NewRequest(t, DeviceKey(t, P256), "REPEATED0000000000000000000000001")
	var got [2]*ca.Issued
	for i := range got {
		issued, err := tg.Connector.Issue(ctxFor(t), req)
		if err != nil {
			t.Fatalf("Issue #%d with the same key: %v", i+1, err)
		}
		CheckIssued(t, req, issued, tg.Roots)
		got[i] = issued
	}
	if tg.Idempotent && !sameCert(got[0].Leaf, got[1].Leaf) {
		t.Errorf("an idempotent CA issued twice for one key: serials %s and %s",
			got[0].Leaf.SerialNumber.Text(16), got[1].Leaf.SerialNumber.Text(16))
	}
	if r, ok := tg.Connector.(ca.Recoverer); ok {
		rec, err := r.Recover(ctxFor(t), req.Key)
		if err != nil {
			t.Fatalf("Recover after two issues: %v", err)
		}
		if rec == nil || (!sameCert(rec.Leaf, got[0].Leaf) && !sameCert(rec.Leaf, got[1].Leaf)) {
			t.Errorf("Recover returned %v, not one of the certificates issued for the key", describeIssued(rec))
		}
	}
}

// testRecover: a key nothing was issued for recovers nothing; an issued one recovers that
// certificate, which passes the same checks as Issue's.
func testRecover(t testing.TB, tg *Target) {
	r := tg.Connector.(ca.Recoverer)
	unknown := NewRequest(t, DeviceKey(t, P256), "NEVERISSUED000000000000000000001")
	got, err := r.Recover(ctxFor(t), unknown.Key)
	if err != nil {
		t.Fatalf("Recover of a key nothing was issued for: %v", err)
	}
	if got != nil {
		t.Fatalf("Recover of a key nothing was issued for returned %s", describeIssued(got))
	}

	req, issued := issue(t, tg, "RECOVER00000000000000000000000001")
	rec, err := r.Recover(ctxFor(t), req.Key)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if rec == nil || !sameCert(rec.Leaf, issued.Leaf) {
		t.Fatalf("Recover returned %s, Issue %s", describeIssued(rec), describeIssued(issued))
	}
	CheckIssued(t, req, rec, tg.Roots)
	if (issued.Roots == nil) != (rec.Roots == nil) {
		t.Errorf("Issue reported roots %v, Recover %v: both must say what the connection trusts", issued.Roots != nil, rec.Roots != nil)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got, err := r.Recover(ctx, req.Key); err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("Recover with a cancelled context: %s, %v; want an error wrapping context.Canceled", describeIssued(got), err)
	} else if ca.IsPermanent(err) {
		t.Errorf("Recover's cancellation classified permanent: %v", err)
	}
}

// testPing: a healthy CA pings; a cancelled ping says so and is not permanent.
func testPing(t testing.TB, tg *Target) {
	p := tg.Connector.(ca.Pinger)
	if err := p.Ping(ctxFor(t)); err != nil {
		t.Fatalf("Ping of a working CA: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := p.Ping(ctx)
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("Ping with a cancelled context: %v; want an error wrapping context.Canceled", err)
	} else if ca.IsPermanent(err) {
		t.Errorf("Ping's cancellation classified permanent: %v", err)
	}
	// A ping issues nothing: a connection still issues normally after it.
	issue(t, tg, "AFTERPING0000000000000000000001")
}

// testIssueForKey: a certificate for a bare public key carries exactly that key and the
// requested names, and passes the engine's check.
func testIssueForKey(t testing.TB, tg *Target, kt KeyType) {
	pki := tg.Connector.(ca.PublicKeyIssuer)
	key := DeviceKey(t, kt)
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	uri, _ := url.Parse("urn:chromeos:device:catest-" + string(kt))
	req := &ca.KeyRequest{
		Key:            "verifiedaccess/catest/" + string(kt),
		PublicKey:      key.Public(),
		Subject:        pkix.Name{CommonName: "catest-va-" + string(kt), Organization: []string{"certprov catest"}},
		DNSNames:       []string{"va-" + string(kt) + ".devices.example.com"},
		EmailAddresses: []string{"va-user@example.com"},
		URIs:           []*url.URL{uri},
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Validity:       24 * time.Hour,
		ProfileName:    "catest",
	}
	issued, err := pki.IssueForKey(ctxFor(t), req)
	if err != nil {
		t.Fatalf("IssueForKey: %v", err)
	}
	// CheckIssued compares against a CSR's key; a bare-key request has none, so make one that
	// carries the key's SPKI.
	if err := checkIssued(&ca.Request{Key: req.Key, CSR: &x509.CertificateRequest{RawSubjectPublicKeyInfo: spki}}, issued, tg.Roots); err != nil {
		t.Fatal(err)
	}
	leaf := issued.Leaf
	if leaf.Subject.CommonName != req.Subject.CommonName {
		t.Errorf("subject CN %q, requested %q", leaf.Subject.CommonName, req.Subject.CommonName)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != req.DNSNames[0] {
		t.Errorf("DNS names %v, requested %v", leaf.DNSNames, req.DNSNames)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, err := pki.IssueForKey(ctx, req)
	if err == nil || !errors.Is(err, context.Canceled) || (got != nil && got.Leaf != nil) {
		t.Errorf("IssueForKey with a cancelled context: %s, %v; want no certificate and an error wrapping context.Canceled", describeIssued(got), err)
	}
}

// testPending: a held request is answered pending (with the same request asked again, as the
// engine does with the ticket) until the CA approves; then it issues, once.
func testPending(t testing.TB, tg *Target) {
	req := NewRequest(t, DeviceKey(t, P256), "PENDING00000000000000000000000001")
	tg.Pending.Hold(t)
	for i := range 2 {
		issued, err := tg.Connector.Issue(ctxFor(t), req)
		var p *ca.PendingError
		if !errors.As(err, &p) {
			t.Fatalf("Issue #%d of a held request: %s, %v; want a *ca.PendingError", i+1, describeIssued(issued), err)
		}
		if issued != nil && issued.Leaf != nil {
			t.Fatalf("Issue #%d returned a certificate with its pending answer", i+1)
		}
		req.Ticket = p.Ticket
	}
	if r, ok := tg.Connector.(ca.Recoverer); ok {
		got, err := r.Recover(ctxFor(t), req.Key)
		if err != nil || got != nil {
			t.Errorf("Recover of a pending request: %s, %v; want nothing yet (the engine then asks Issue)", describeIssued(got), err)
		}
	}
	tg.Pending.Approve(t)
	issued, err := tg.Connector.Issue(ctxFor(t), req)
	if err != nil {
		t.Fatalf("Issue of the approved request (ticket %q): %v", req.Ticket, err)
	}
	CheckIssued(t, req, issued, tg.Roots)
	if r, ok := tg.Connector.(ca.Recoverer); ok {
		got, err := r.Recover(ctxFor(t), req.Key)
		if err != nil || got == nil || !sameCert(got.Leaf, issued.Leaf) {
			t.Errorf("Recover of the approved request: %s, %v; want serial %s", describeIssued(got), err, issued.Leaf.SerialNumber.Text(16))
		}
	}
}

// testRevoke: a certificate revoked with a reason is revoked at the CA with that reason;
// revoking it again succeeds; the serial alone suffices unless the CA needs the certificate; a
// certificate of another CA and, where the CA can tell, a serial it never issued are refused
// permanently; a cancelled revocation is not permanent.
func testRevoke(t testing.TB, tg *Target) {
	rv := tg.Connector.(ca.Revoker)
	if tg.Revocation == nil || tg.Revocation.Status == nil {
		t.Fatalf("%T implements ca.Revoker: its Target must say how to see what the CA revoked (Target.Revocation.Status)", tg.Connector)
	}
	status := tg.Revocation.Status
	// reasonHeld: the CA holds want, or records no reason at all where the Target says so.
	reasonHeld := func(got, want ca.Reason) bool {
		return got == want || tg.Revocation.ReasonNotRecorded && got == ca.ReasonUnspecified
	}

	req, issued := issue(t, tg, "REVOKE000000000000000000000000001")
	keep, kept := issue(t, tg, "REVOKEKEEP0000000000000000000001")
	if revoked, _ := status(t, issued.Leaf); revoked {
		t.Fatal("a certificate is revoked before Revoke")
	}
	full := &ca.RevokeRequest{Serial: issued.Leaf.SerialNumber, Certificate: issued.Leaf, Key: req.Key, Reason: ca.ReasonKeyCompromise}
	if err := rv.Revoke(ctxFor(t), full); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if revoked, reason := status(t, issued.Leaf); !revoked || !reasonHeld(reason, ca.ReasonKeyCompromise) {
		t.Fatalf("after Revoke the CA holds revoked=%v reason=%v, want revoked for %v", revoked, reason, ca.ReasonKeyCompromise)
	}
	if revoked, _ := status(t, kept.Leaf); revoked {
		t.Errorf("revoking serial %s revoked serial %s (%s) too", issued.Leaf.SerialNumber.Text(16), kept.Leaf.SerialNumber.Text(16), keep.Key)
	}
	// The caller retries after a lost answer: the second call must not fail.
	if err := rv.Revoke(ctxFor(t), full); err != nil {
		t.Errorf("Revoke of a revoked certificate: %v; want nil (Revoke is idempotent)", err)
	}

	_, bySerial := issue(t, tg, "REVOKESERIAL00000000000000000001")
	err := rv.Revoke(ctxFor(t), &ca.RevokeRequest{Serial: bySerial.Leaf.SerialNumber, Reason: ca.ReasonSuperseded})
	if tg.Revocation.NeedsCertificate {
		wantClass(t, "Revoke by serial alone, where the CA needs the certificate", err, ca.ClassPermanent)
	} else {
		if err != nil {
			t.Fatalf("Revoke by serial alone: %v", err)
		}
		if revoked, reason := status(t, bySerial.Leaf); !revoked || !reasonHeld(reason, ca.ReasonSuperseded) {
			t.Errorf("after Revoke by serial the CA holds revoked=%v reason=%v, want revoked for %v", revoked, reason, ca.ReasonSuperseded)
		}
	}

	// A certificate this connection did not issue, though its serial may look like one.
	other := NewRoot(t, "catest foreign CA")
	foreign := other.Sign(t, &x509.Certificate{
		SerialNumber: kept.Leaf.SerialNumber, Subject: kept.Leaf.Subject,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, kept.Leaf.PublicKey)
	err = rv.Revoke(ctxFor(t), &ca.RevokeRequest{Serial: foreign.SerialNumber, Certificate: foreign, Reason: ca.ReasonKeyCompromise})
	wantClass(t, "Revoke of another CA's certificate", err, ca.ClassPermanent)
	if revoked, _ := status(t, kept.Leaf); revoked {
		t.Errorf("revoking another CA's certificate with serial %s revoked this CA's certificate with that serial", kept.Leaf.SerialNumber.Text(16))
	}

	if !tg.Revocation.UnknownSerialAccepted {
		unknown, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
		if err != nil {
			t.Fatal(err)
		}
		unknown.Add(unknown, big.NewInt(1))
		err = rv.Revoke(ctxFor(t), &ca.RevokeRequest{Serial: unknown, Reason: ca.ReasonUnspecified})
		wantClass(t, fmt.Sprintf("Revoke of serial %s, which the CA never issued", unknown.Text(16)), err, ca.ClassPermanent)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = rv.Revoke(ctx, &ca.RevokeRequest{Serial: kept.Leaf.SerialNumber, Certificate: kept.Leaf, Reason: ca.ReasonSuperseded})
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("Revoke with a cancelled context: %v; want an error wrapping context.Canceled", err)
	} else if ca.IsPermanent(err) {
		t.Errorf("Revoke's cancellation classified permanent: %v", err)
	}
	if revoked, _ := status(t, kept.Leaf); revoked {
		t.Error("a cancelled Revoke revoked the certificate")
	}
}
