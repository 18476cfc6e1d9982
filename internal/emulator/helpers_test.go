package emulator

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	cm "google.golang.org/api/chromemanagement/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
)

// env is one emulator served over HTTP plus a generated client pointed at it.
type env struct {
	emu *Emulator
	srv *httptest.Server
	svc *cm.Service
	api *cm.CustomersCertificateProvisioningProcessesService
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, Options{Logger: zaptest.NewLogger(t)})
}

// newEnvWith is newEnv with the emulator's options.
func newEnvWith(t *testing.T, opts Options) *env {
	t.Helper()
	ctx := context.Background()
	emu, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(emu.Handler())
	// Cleanups run last-in first-out: stop the devices before the HTTP server and the logger go.
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		if err := emu.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	svc, err := cm.NewService(ctx, option.WithEndpoint(srv.URL+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	return &env{emu: emu, srv: srv, svc: svc, api: svc.Customers.CertificateProvisioningProcesses}
}

func (v *env) start(t *testing.T, spec ProcessSpec) string {
	t.Helper()
	if spec.Encoding == "" && !spec.NoPublish {
		// Most tests do not read notifications; skipping them keeps the subscription quiet.
		spec.NoPublish = true
	}
	name, err := v.emu.StartProcess(context.Background(), spec)
	if err != nil {
		t.Fatalf("StartProcess: %v", err)
	}
	return name
}

func (v *env) snap(t *testing.T, name string) Snapshot {
	t.Helper()
	s, ok := v.emu.Process(name)
	if !ok {
		t.Fatalf("process %s not found", name)
	}
	return s
}

func (v *env) claim(t *testing.T, name, instance string) {
	t.Helper()
	if _, err := v.api.Claim(name, &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{
		CallerInstanceId: instance}).Do(); err != nil {
		t.Fatalf("claim %s: %v", name, err)
	}
}

func (v *env) signData(name string, data []byte, alg string) (*cm.GoogleLongrunningOperation, error) {
	return v.api.SignData(name, &cm.GoogleChromeManagementVersionsV1SignDataRequest{
		SignData: base64.StdEncoding.EncodeToString(data), SignatureAlgorithm: alg}).Do()
}

// waitOp polls operations.get until the operation is done.
func (v *env) waitOp(t *testing.T, opName string) *cm.GoogleLongrunningOperation {
	t.Helper()
	var op *cm.GoogleLongrunningOperation
	waitFor(t, "operation "+opName+" done", func() bool {
		var err error
		op, err = v.api.Operations.Get(opName).Do()
		if err != nil {
			t.Fatalf("operations.get %s: %v", opName, err)
		}
		return op.Done
	})
	return op
}

// signed claims, requests a signature and waits for the device; it returns the done operation.
func (v *env) signed(t *testing.T, name string, data []byte) *cm.GoogleLongrunningOperation {
	t.Helper()
	v.claim(t, name, "instance-a")
	s := v.snap(t, name)
	op, err := v.signData(name, data, algorithmFor(s.KeyType))
	if err != nil {
		t.Fatalf("signData %s: %v", name, err)
	}
	return v.waitOp(t, op.Name)
}

func (v *env) upload(name, pemText string) error {
	_, err := v.api.UploadCertificate(name, &cm.GoogleChromeManagementVersionsV1UploadCertificateRequest{
		CertificatePem: pemText}).Do()
	return err
}

func (v *env) setFailure(name, msg string) error {
	_, err := v.api.SetFailure(name, &cm.GoogleChromeManagementVersionsV1SetFailureRequest{ErrorMessage: msg}).Do()
	return err
}

// waitFor polls cond until it holds, failing the test after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wantAPIError checks err is a *googleapi.Error with the HTTP code and envelope status.
func wantAPIError(t *testing.T, err error, code int, status string) *googleapi.Error {
	t.Helper()
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		t.Fatalf("error = %v, want *googleapi.Error %d %s", err, code, status)
	}
	if gerr.Code != code {
		t.Fatalf("HTTP code = %d (%s), want %d %s", gerr.Code, gerr.Message, code, status)
	}
	if status != "" && !bodyHasStatus(gerr.Body, status) {
		t.Fatalf("error body = %s, want status %s", gerr.Body, status)
	}
	return gerr
}

func bodyHasStatus(body, status string) bool {
	var env errorEnvelope
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		return false
	}
	return env.Error.Status == status
}

// testCA is a throw-away CA that issues leaves for arbitrary public keys.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  string
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	return newCA(t, cn, 1, nil)
}

// newCA creates a CA certificate; parent signs it, or it signs itself when parent is nil.
func newCA(t *testing.T, cn string, serial int64, parent *testCA) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool,
		pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// issue returns a PEM leaf for pub, valid from notBefore for a day.
func (ca *testCA) issueAt(t *testing.T, pub crypto.PublicKey, cn string, notBefore time.Time) string {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notBefore.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func (ca *testCA) issue(t *testing.T, pub crypto.PublicKey, cn string) string {
	t.Helper()
	return ca.issueAt(t, pub, cn, time.Now().Add(-time.Minute))
}

func otherKey(t *testing.T) crypto.PublicKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}
