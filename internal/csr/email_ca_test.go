package csr_test

// The tests of this file issue through the built-in CA, whose package (by way of package ca)
// imports csr: they are in the external test package.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

// quotedAddresses are the RFC 5321 Quoted-string forms the brief names.
var quotedAddresses = []string{`"john doe"@example.com`, `"a@b"@example.com`, `"\"q\""@example.com`}

var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	tagRFC822Name     = 1 // GeneralName rfc822Name [1]
)

// Device keys are generated once per test binary: RSA-2048 generation is slow under -race.
var (
	keysOnce sync.Once
	keys     []crypto.Signer
)

// deviceKeys are a P-256, an RSA-2048 and another P-256 device key.
func deviceKeys(t testing.TB) []crypto.Signer {
	keysOnce.Do(func() {
		keys = []crypto.Signer{catest.DeviceKey(t, catest.P256), catest.DeviceKey(t, catest.RSA2048), catest.DeviceKey(t, catest.P256)}
	})
	return keys
}

func spkiOf(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatalf("marshal public key: %v", err)
	}
	return der
}

func userProcess() *process.Process {
	return &process.Process{
		Name:     process.Name("C01abcdef", "0123456789ABCDEF0123456789ABCDEF"),
		Customer: "C01abcdef", ID: "0123456789ABCDEF0123456789ABCDEF", ProfileID: "wifi-profile",
		Device: &process.Device{SerialNumber: "5CD1234XYZ", DirectoryID: "d7a1c0de-0000-4000-8000-000000000001"},
		User:   &process.User{Email: "alice@example.com", DirectoryID: "112233445566778899"},
	}
}

// constrainedCA is a local CA whose certificate permits (or excludes) e-mail addresses at
// example.com, so that Go's verifier has to parse every rfc822Name it issues.
type constrainedCA struct {
	conn *local.Connector
	cert *x509.Certificate
}

func newConstrainedCA(t testing.TB, permitted, excluded []string) *constrainedCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "constrained test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		PermittedEmailAddresses: permitted, ExcludedEmailAddresses: excluded, PermittedDNSDomainsCritical: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certFile, pemutil.EncodeCertificateDER(der), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pemutil.EncodePrivateKey(keyDER), 0o600); err != nil {
		t.Fatal(err)
	}
	conn, err := local.New(ca.Settings{"certificateFile": certFile, "keyFile": keyFile}, ca.Env{Name: "constrained"})
	if err != nil {
		t.Fatal(err)
	}
	return &constrainedCA{conn: conn, cert: conn.Certificate()}
}

// issue has the device sign the CRI for req and the CA issue the certificate.
func (c *constrainedCA) issue(t testing.TB, req *csr.Request, key crypto.Signer, id string) (*x509.CertificateRequest, *x509.Certificate) {
	t.Helper()
	der := catest.SignedCSR(t, key, req)
	parsed, err := csr.Verify(der, spkiOf(t, key))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	issued, err := c.conn.Issue(context.Background(), &ca.Request{Key: id, CSR: parsed, CSRDER: der, Validity: time.Hour})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	// What a relying party sees: the certificate as it travels, parsed afresh.
	leaf, err := x509.ParseCertificate(issued.Leaf.Raw)
	if err != nil {
		t.Fatalf("ParseCertificate: %v", err)
	}
	return parsed, leaf
}

func (c *constrainedCA) verify(leaf *x509.Certificate) error {
	roots := x509.NewCertPool()
	roots.AddCert(c.cert)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// rfc822Names returns the rfc822Name entries of a subjectAltName extension as their raw
// IA5String contents.
func rfc822Names(t testing.TB, exts []pkix.Extension) []string {
	t.Helper()
	var out []string
	for _, e := range exts {
		if !e.Id.Equal(oidSubjectAltName) {
			continue
		}
		var names []asn1.RawValue
		if rest, err := asn1.Unmarshal(e.Value, &names); err != nil || len(rest) > 0 {
			t.Fatalf("SAN extension: %v", err)
		}
		for _, n := range names {
			if n.Class == asn1.ClassContextSpecific && n.Tag == tagRFC822Name {
				out = append(out, string(n.Bytes))
			}
		}
	}
	return out
}

// TestQuotedEmailThroughLocalCA renders a profile over users whose address has a quoted local
// part, has the device sign, the built-in CA issue under e-mail name constraints, and checks that
// the certificate carries exactly the address, byte for byte, in the SAN and in the commonName,
// that the key is the device's, and that Go's verifier (which parses every rfc822Name against the
// constraints) accepts it.
func TestQuotedEmailThroughLocalCA(t *testing.T) {
	tmpl, err := csr.Compile(csr.Spec{
		Subject:         csr.Subject{CommonName: "{{.User.Email}}"},
		SubjectAltNames: csr.SANs{Email: []string{"{{.User.Email}}"}},
		KeyUsage:        []string{"digitalSignature"},
		ExtKeyUsage:     []string{"clientAuth"},
	})
	if err != nil {
		t.Fatal(err)
	}
	permitted := newConstrainedCA(t, []string{"example.com"}, nil)
	excluded := newConstrainedCA(t, nil, []string{"example.com"})
	for i, addr := range quotedAddresses {
		t.Run(addr, func(t *testing.T) {
			p := userProcess()
			p.User.Email = addr
			req, err := tmpl.Render(p)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			key := deviceKeys(t)[i%3]
			parsed, leaf := permitted.issue(t, req, key, p.Name)

			if !slices.Equal(parsed.EmailAddresses, []string{addr}) {
				t.Errorf("CSR EmailAddresses %q, want exactly %q", parsed.EmailAddresses, addr)
			}
			if !slices.Equal(leaf.EmailAddresses, []string{addr}) {
				t.Errorf("certificate EmailAddresses %q, want exactly %q", leaf.EmailAddresses, addr)
			}
			if got := rfc822Names(t, leaf.Extensions); !slices.Equal(got, []string{addr}) {
				t.Errorf("rfc822Name DER contents %q, want exactly %q (no escaping inside the IA5String)", got, addr)
			}
			if leaf.Subject.CommonName != addr {
				t.Errorf("commonName %q, want %q", leaf.Subject.CommonName, addr)
			}
			if !slices.Equal(leaf.RawSubjectPublicKeyInfo, spkiOf(t, key)) {
				t.Error("the certificate does not carry the device key")
			}
			if err := permitted.verify(leaf); err != nil {
				t.Errorf("verify under permitted example.com: %v", err)
			}

			// The same request under a CA that excludes example.com must fail on the constraint:
			// proof that the verifier parsed the quoted address, not skipped it.
			_, other := excluded.issue(t, req, key, p.Name)
			var inv x509.CertificateInvalidError
			if err := excluded.verify(other); err == nil || !asCertificateInvalid(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
				t.Errorf("verify under excluded example.com: %v, want CANotAuthorizedForThisName", err)
			}
		})
	}
}

func asCertificateInvalid(err error, target *x509.CertificateInvalidError) bool {
	inv, ok := err.(x509.CertificateInvalidError)
	if ok {
		*target = inv
	}
	return ok
}

// A DN string shows the address with RFC 4514 escaping; the attribute itself holds it unescaped.
func TestQuotedEmailInSubjectDisplay(t *testing.T) {
	tmpl, err := csr.Compile(csr.Spec{Subject: csr.Subject{CommonName: "{{.User.Email}}"}})
	if err != nil {
		t.Fatal(err)
	}
	p := userProcess()
	p.User.Email = `"john doe"@example.com`
	req, err := tmpl.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	_, leaf := newConstrainedCA(t, nil, nil).issue(t, req, deviceKeys(t)[0], p.Name)
	if got, want := leaf.Subject.String(), `CN=\"john doe\"@example.com`; got != want {
		t.Errorf("subject %q, want %q", got, want)
	}
	var rdns pkix.RDNSequence
	if _, err := asn1.Unmarshal(leaf.RawSubject, &rdns); err != nil || len(rdns) != 1 || rdns[0][0].Value != p.User.Email {
		t.Errorf("subject RDNs %v (%v), want one commonName %q", rdns, err, p.User.Email)
	}
}
