package catest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// CA is a certificate authority made for a test: a P-256 key and its CA certificate, self-signed
// or issued by another CA. Tests use it where they need hierarchies a connector's real server
// does not make: a second root, a restricted or expired intermediate, a leaf of any shape.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewRoot makes a self-signed root named cn, valid from an hour ago for two days.
func NewRoot(t testing.TB, cn string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := caTemplate(cn)
	return &CA{Cert: sign(t, tmpl, tmpl, key.Public(), key), Key: key}
}

// NewIntermediate makes a CA certificate for cn issued by c. usages, when given, restrict it
// with an extKeyUsage extension, as some enterprise CAs restrict their issuing CAs.
func (c *CA) NewIntermediate(t testing.TB, cn string, usages ...x509.ExtKeyUsage) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := caTemplate(cn)
	tmpl.ExtKeyUsage = usages
	return &CA{Cert: sign(t, tmpl, c.Cert, key.Public(), c.Key), Key: key}
}

// Sign issues tmpl for pub with c. A zero serial number, notBefore or notAfter takes a random
// serial, an hour ago and a day from now.
func (c *CA) Sign(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	return sign(t, tmpl, c.Cert, pub, c.Key)
}

// Pool is a pool holding c's certificate alone, as roots.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Cert)
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("catest: CA key: %v", err)
	}
	return key
}

func caTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"certprov catest"}},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotAfter:              time.Now().Add(48 * time.Hour),
	}
}

func sign(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		if err != nil {
			t.Fatalf("catest: serial: %v", err)
		}
		tmpl.SerialNumber = serial
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatalf("catest: sign %q: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("catest: parse %q: %v", tmpl.Subject.CommonName, err)
	}
	return cert
}
