// Package catest is the conformance suite every CA connector must pass, plus helpers that build
// requests the way the engine does: a device-held key signs a CertificationRequestInfo made by
// package csr, and the connector gets the verified CSR.
//
// A connector's test calls Run with a constructor that returns a fresh connector (backed by a
// real CA or an httptest fake) and the roots its certificates chain to:
//
//	func TestConformance(t *testing.T) {
//		catest.Run(t, func(t *testing.T) (ca.Connector, *x509.CertPool) { … })
//	}
//
// or RunTarget with a *Target, which also opts into the parts that need the test's help: a CA
// that holds requests for approval (Pending), what the CA revoked (Revocation, required for a
// ca.Revoker), an idempotency key. Parts for ca.Recoverer, ca.Pinger and ca.PublicKeyIssuer run
// whenever the connector implements them.
package catest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/leafcheck"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/process"
)

// KeyType names a kind of device key.
type KeyType string

// The key types ChromeOS devices use.
const (
	RSA2048 KeyType = "RSA-2048"
	P256    KeyType = "P-256"
)

// DeviceKey generates a device key of the given type.
func DeviceKey(t testing.TB, kt KeyType) crypto.Signer {
	t.Helper()
	var (
		key crypto.Signer
		err error
	)
	switch kt {
	case RSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case P256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		t.Fatalf("catest: unknown key type %q", kt)
	}
	if err != nil {
		t.Fatalf("catest: generate %s key: %v", kt, err)
	}
	return key
}

// NewRequest builds the request the engine would send for a device with this key: a CSR with a
// subject, DNS, e-mail and UPN names, digitalSignature and clientAuth, signed by the device key
// over the CertificationRequestInfo from csr.BuildCRI, assembled and verified. id becomes the
// process id, so distinct ids give distinct request keys.
func NewRequest(t testing.TB, key crypto.Signer, id string) *ca.Request {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatalf("catest: marshal device key: %v", err)
	}
	serial := "CATEST" + id
	p := &process.Process{
		Name:             process.Name("C0catest", id),
		Customer:         "C0catest",
		ID:               id,
		ProfileID:        "catest-profile",
		StartTime:        time.Now(),
		SPKI:             spki,
		Device:           &process.Device{SerialNumber: serial, DirectoryID: "device-" + id},
		User:             &process.User{Email: "user-" + id + "@example.com", DirectoryID: "user-" + id},
		CAConnectionKind: process.CAConnectionGeneric,
		CAConnectionRef:  "catest",
		ProfileRef:       "catest",
	}
	req := &csr.Request{
		Subject:        pkix.Name{CommonName: p.User.Email, Organization: []string{"certprov catest"}},
		DNSNames:       []string{serial + ".devices.example.com"},
		EmailAddresses: []string{p.User.Email},
		UPNs:           []string{"user-" + id + "@corp.example.com"},
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der := SignedCSR(t, key, req)
	parsed, err := csr.Verify(der, spki)
	if err != nil {
		t.Fatalf("catest: verify CSR: %v", err)
	}
	return &ca.Request{
		Key:         p.Name,
		CSR:         parsed,
		CSRDER:      der,
		Process:     p,
		ProfileName: "catest",
		Validity:    24 * time.Hour,
	}
}

// SignedCSR encodes req around the key's SPKI and signs it as the device would (RSA PKCS#1 v1.5
// or ECDSA, SHA-256), returning the assembled CSR.
func SignedCSR(t testing.TB, key crypto.Signer, req *csr.Request) []byte {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatalf("catest: marshal device key: %v", err)
	}
	alg, err := csr.AlgorithmFor(spki)
	if err != nil {
		t.Fatalf("catest: %v", err)
	}
	cri, err := csr.BuildCRI(req, spki)
	if err != nil {
		t.Fatalf("catest: build CRI: %v", err)
	}
	digest := sha256.Sum256(cri)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("catest: device signature: %v", err)
	}
	der, err := csr.Assemble(cri, alg, sig)
	if err != nil {
		t.Fatalf("catest: assemble CSR: %v", err)
	}
	return der
}

// CheckIssued fails t unless issued is a leaf for the request's key that chains to roots (through
// the returned chain) for client authentication, and is not itself a CA; and unless it passes the
// engine's own check (leafcheck), which verifies it to the roots the connector reported, if any.
func CheckIssued(t testing.TB, req *ca.Request, issued *ca.Issued, roots *x509.CertPool) {
	t.Helper()
	if err := checkIssued(req, issued, roots); err != nil {
		t.Fatal(err)
	}
}

func checkIssued(req *ca.Request, issued *ca.Issued, roots *x509.CertPool) error {
	if issued == nil || issued.Leaf == nil {
		return errors.New("no certificate returned")
	}
	leaf := issued.Leaf
	if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, req.CSR.RawSubjectPublicKeyInfo) {
		return fmt.Errorf("leaf %s does not carry the CSR's public key byte for byte", leaf.Subject)
	}
	if leaf.IsCA {
		return fmt.Errorf("leaf %s is a CA certificate", leaf.Subject)
	}
	intermediates := x509.NewCertPool()
	for _, c := range issued.Chain {
		if c == nil {
			return errors.New("nil certificate in the chain")
		}
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return fmt.Errorf("leaf %s does not chain to the roots for clientAuth: %w", leaf.Subject, err)
	}
	if _, err := leafcheck.Check(issued, leafcheck.Expectations{SPKI: req.CSR.RawSubjectPublicKeyInfo}); err != nil {
		return fmt.Errorf("leaf %s fails the engine's check (rule %s): %w", leaf.Subject, leafcheck.RuleOf(err), err)
	}
	return nil
}

// CheckRoots fails t unless the connector reported the roots of its connection with issued
// (ca.Issued.Roots), and the leaf verifies to them through the returned chain: the engine can then
// check the chain itself. Connectors that know their CA call it in their own tests; a connector
// that knows no roots may leave them out, so the conformance suite does not demand them.
func CheckRoots(t testing.TB, issued *ca.Issued) {
	t.Helper()
	if issued == nil || issued.Leaf == nil {
		t.Fatal("no certificate returned")
	}
	if issued.Roots == nil {
		t.Fatalf("leaf %s: the connector reported no roots", issued.Leaf.Subject)
	}
	if _, err := leafcheck.VerifyChain(issued.Leaf, issued.Chain, issued.Roots, time.Now()); err != nil {
		t.Fatalf("leaf %s does not chain to the roots the connector reported: %v", issued.Leaf.Subject, err)
	}
}

// Run runs the conformance suite's core parts, and the optional parts the connector's
// interfaces call for that need nothing from the test (Recover, Ping, bare-key issuance, a
// repeated request). newConnector is called once per subtest and must return a fresh connector
// and the pool of roots its certificates chain to. A connector that can do more (hold requests
// pending, revoke) uses RunTarget, which drives those parts too.
func Run(t *testing.T, newConnector func(t *testing.T) (ca.Connector, *x509.CertPool)) {
	t.Helper()
	RunTarget(t, func(t *testing.T) *Target {
		conn, roots := newConnector(t)
		return &Target{Connector: conn, Roots: roots}
	})
}

// RunTarget runs the whole conformance suite: the core parts every connector passes (issuance
// for RSA and P-256 device keys, cancellation, a CSR with a bad signature, concurrency), a
// repeated request with the same key, and the optional parts that apply, chosen by the
// connector's interfaces (ca.Recoverer, ca.Pinger, ca.PublicKeyIssuer, ca.Revoker) and by what
// the Target offers (Pending). newTarget is called once per subtest and must return a fresh
// connection.
func RunTarget(t *testing.T, newTarget func(t *testing.T) *Target) {
	t.Helper()
	newConnector := func(t *testing.T) (ca.Connector, *x509.CertPool) {
		tg := newTarget(t)
		return tg.Connector, tg.Roots
	}
	for _, kt := range []KeyType{RSA2048, P256} {
		t.Run("Issues/"+string(kt), func(t *testing.T) {
			conn, roots := newConnector(t)
			req := NewRequest(t, DeviceKey(t, kt), "0123456789ABCDEF0123456789ABCDEF")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			issued, err := conn.Issue(ctx, req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			CheckIssued(t, req, issued, roots)
		})
	}

	t.Run("CancelledContext", func(t *testing.T) {
		conn, _ := newConnector(t)
		req := NewRequest(t, DeviceKey(t, P256), "CANCELLED0000000000000000000000")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		issued, err := conn.Issue(ctx, req)
		if err == nil {
			t.Fatal("Issue with a cancelled context returned no error")
		}
		if issued != nil && issued.Leaf != nil {
			t.Error("Issue with a cancelled context returned a certificate")
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %q does not wrap context.Canceled", err)
		}
		if ca.IsPermanent(err) {
			t.Errorf("cancellation classified permanent: %v", err)
		}
	})

	t.Run("InvalidSignatureIsPermanent", func(t *testing.T) {
		conn, _ := newConnector(t)
		req := NewRequest(t, DeviceKey(t, P256), "BADSIGNATURE00000000000000000000")
		// Corrupt the last byte of the signature: still a well-formed CSR, no longer a valid one.
		der := bytes.Clone(req.CSRDER)
		der[len(der)-1] ^= 0xff
		bad, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatalf("parse corrupted CSR: %v", err)
		}
		if bad.CheckSignature() == nil {
			t.Fatal("corrupting the signature left it valid")
		}
		req.CSR, req.CSRDER = bad, der
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		issued, err := conn.Issue(ctx, req)
		if err == nil {
			t.Fatal("Issue accepted a CSR with an invalid signature")
		}
		if issued != nil && issued.Leaf != nil {
			t.Error("Issue returned a certificate for a CSR with an invalid signature")
		}
		if !ca.IsPermanent(err) {
			c, _ := ca.Classify(err)
			t.Errorf("invalid signature classified %v, want permanent: %v", c, err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		conn, roots := newConnector(t)
		const n = 8
		reqs := make([]*ca.Request, n)
		for i := range reqs {
			reqs[i] = NewRequest(t, DeviceKey(t, P256), fmt.Sprintf("CONCURRENT%022d", i))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		issued := make([]*ca.Issued, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range reqs {
			wg.Go(func() { issued[i], errs[i] = conn.Issue(ctx, reqs[i]) })
		}
		wg.Wait()
		serials := map[string]bool{}
		for i := range reqs {
			if errs[i] != nil {
				t.Errorf("request %d: %v", i, errs[i])
				continue
			}
			if err := checkIssued(reqs[i], issued[i], roots); err != nil {
				t.Errorf("request %d: %v", i, err)
				continue
			}
			s := issued[i].Leaf.Issuer.String() + "/" + issued[i].Leaf.SerialNumber.String()
			if serials[s] {
				t.Errorf("request %d: serial number %s issued twice", i, issued[i].Leaf.SerialNumber)
			}
			serials[s] = true
		}
	})

	runOptional(t, newTarget)
}
