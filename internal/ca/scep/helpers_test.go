package scep

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"maps"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/process"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// testCert is a certificate with its key.
type testCert struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

// newCert makes an RSA certificate signed by parent (self-signed when parent is nil).
func newCert(t testing.TB, cn string, parent *testCert, isCA bool, ku x509.KeyUsage) *testCert {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"scep test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		KeyUsage:              ku,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	issuerCert, issuerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		issuerCert, issuerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuerCert, &key.PublicKey, issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{cert: cert, key: key}
}

func newTestCA(t testing.TB, cn string) *testCert {
	t.Helper()
	return newCert(t, cn, nil, true, x509.KeyUsageCertSign|x509.KeyUsageCRLSign|x509.KeyUsageDigitalSignature)
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// newTestConnector builds a connector with signer files in a fresh directory.
func newTestConnector(t testing.TB, settings ca.Settings) *Connector {
	t.Helper()
	dir := t.TempDir()
	s := ca.Settings{
		"signerKeyFile":  filepath.Join(dir, "signer.key"),
		"signerCertFile": filepath.Join(dir, "signer.pem"),
	}
	maps.Copy(s, settings)
	c, err := New(s, ca.Env{Name: "scep-test", Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// newRequest is catest.NewRequest with extra CSR attributes (a challenge password), signed by
// the device key as the engine would have it signed.
func newRequest(t testing.TB, key crypto.Signer, id string, attrs []csr.Attribute) *ca.Request {
	t.Helper()
	base := catest.NewRequest(t, key, id)
	r := &csr.Request{
		Subject:        pkix.Name{CommonName: "device-" + id, Organization: []string{"certprov scep test"}},
		DNSNames:       []string{strings.ToLower(id) + ".devices.example.com"},
		EmailAddresses: []string{"user-" + id + "@example.com"},
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Attributes:     attrs,
	}
	der := catest.SignedCSR(t, key, r)
	parsed, err := csr.Verify(der, base.Process.SPKI)
	if err != nil {
		t.Fatalf("verify CSR: %v", err)
	}
	base.CSR, base.CSRDER = parsed, der
	return base
}

// requestWithChallenge asks c for its attributes, as the engine does before signData, and builds
// the request the device would sign.
func requestWithChallenge(t testing.TB, c *Connector, kt catest.KeyType, id string) *ca.Request {
	t.Helper()
	attrs, err := c.CSRAttributes(context.Background(), &ca.Request{Key: id, Process: &process.Process{ID: id}})
	if err != nil {
		t.Fatalf("CSRAttributes: %v", err)
	}
	return newRequest(t, catest.DeviceKey(t, kt), id, attrs)
}

// scepServer is a running micromdm scepserver.
type scepServer struct {
	url   string
	ca    *x509.Certificate
	roots *x509.CertPool
}

// startSCEPServer runs the real scepserver (testservers.StartSCEP).
func startSCEPServer(t testing.TB, challenge string) *scepServer {
	t.Helper()
	s := testservers.StartSCEP(t, challenge)
	return &scepServer{url: s.URL, ca: s.CA, roots: pool(s.CA)}
}
