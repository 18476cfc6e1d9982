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
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	cm "google.golang.org/api/chromemanagement/v1"
	"google.golang.org/api/option"

	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
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
	clocktest.WaitFor(t, what, 20*time.Second, cond)
}

// testCA is a throw-away CA (catest's) that issues leaves for arbitrary public keys.
type testCA struct {
	ca   *catest.CA
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool
	pem  string
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	return wrapCA(catest.NewRoot(t, cn))
}

// newIntermediate creates an intermediate CA signed by parent.
func newIntermediate(t *testing.T, parent *testCA) *testCA {
	t.Helper()
	return wrapCA(parent.ca.NewIntermediate(t, "Intermediate"))
}

func wrapCA(c *catest.CA) *testCA {
	return &testCA{ca: c, cert: c.Cert, key: c.Key, pool: c.Pool(), pem: string(pemutil.Encode(c.Cert))}
}

// issueAt returns a PEM leaf for pub, valid from notBefore for a day.
func (ca *testCA) issueAt(t *testing.T, pub crypto.PublicKey, cn string, notBefore time.Time) string {
	t.Helper()
	return string(pemutil.Encode(ca.ca.Sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		NotBefore:   notBefore,
		NotAfter:    notBefore.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, pub)))
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
