package cas_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	privateca "cloud.google.com/go/security/privateca/apiv1"
	"cloud.google.com/go/security/privateca/apiv1/privatecapb"
	"golang.org/x/oauth2"
	"google.golang.org/api/option"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/cas"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// clientOptions reach the fake over TLS with token as the OAuth access token.
func (f *fakeCAS) clientOptions(token string) []option.ClientOption {
	return []option.ClientOption{
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token, TokenType: "Bearer"})),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: f.serverCA.Pool()}))),
	}
}

// connector builds a cas connector for the fake, with extra settings.
func connector(t testing.TB, f *fakeCAS, extra ca.Settings) *cas.Connector {
	t.Helper()
	s := ca.Settings{"caPool": f.pool, "endpoint": f.addr}
	maps.Copy(s, extra)
	c, err := cas.New(s, ca.Env{Name: "corp"}, cas.Options{ClientOptions: f.clientOptions(f.token)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestConformance(t *testing.T) {
	catest.RunTarget(t, func(t *testing.T) *catest.Target {
		f := newFakeCAS(t)
		return &catest.Target{
			Connector:  connector(t, f, nil),
			Roots:      f.roots(),
			Idempotent: true,
			Revocation: &catest.Revocation{Status: func(t testing.TB, cert *x509.Certificate) (bool, ca.Reason) {
				revoked, reason := f.revocation(cert)
				return revoked, casReasons[reason]
			}},
		}
	})
}

// casReasons reads CAS's revocation reasons back as RFC 5280's.
var casReasons = map[privatecapb.RevocationReason]ca.Reason{
	privatecapb.RevocationReason_REVOCATION_REASON_UNSPECIFIED:    ca.ReasonUnspecified,
	privatecapb.RevocationReason_KEY_COMPROMISE:                   ca.ReasonKeyCompromise,
	privatecapb.RevocationReason_CERTIFICATE_AUTHORITY_COMPROMISE: ca.ReasonCACompromise,
	privatecapb.RevocationReason_AFFILIATION_CHANGED:              ca.ReasonAffiliationChanged,
	privatecapb.RevocationReason_SUPERSEDED:                       ca.ReasonSuperseded,
	privatecapb.RevocationReason_CESSATION_OF_OPERATION:           ca.ReasonCessationOfOperation,
	privatecapb.RevocationReason_CERTIFICATE_HOLD:                 ca.ReasonCertificateHold,
	privatecapb.RevocationReason_PRIVILEGE_WITHDRAWN:              ca.ReasonPrivilegeWithdrawn,
	privatecapb.RevocationReason_ATTRIBUTE_AUTHORITY_COMPROMISE:   ca.ReasonAACompromise,
}

// TestIssueReportsRootsFromThePool: the roots come from FetchCaCerts, and the chain verifies to
// them; the lifetime is the profile's validity, capped by the connection's lifetime.
func TestIssueReportsRootsFromThePool(t *testing.T) {
	f := newFakeCAS(t)
	c := connector(t, f, ca.Settings{"maxLifetime": "1h"})
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "ROOTS")
	issued, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	catest.CheckIssued(t, req, issued, f.roots())
	catest.CheckRoots(t, issued)
	if got := issued.Leaf.NotAfter.Sub(issued.Leaf.NotBefore); got > time.Hour {
		t.Errorf("lifetime %s, want at most the connection's 1h", got)
	}
	if f.lastLifetime != time.Hour {
		t.Errorf("asked CAS for %s, want 1h", f.lastLifetime)
	}
}

// TestRepeatedKeyIssuesOnce: the same key twice gets the same certificate, through request_id
// within CAS's window and through certificate_id after it.
func TestRepeatedKeyIssuesOnce(t *testing.T) {
	f := newFakeCAS(t)
	c := connector(t, f, nil)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REPEAT")
	first, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	clear(f.requests) // CAS's 60 minutes are over
	f.mu.Unlock()
	third, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Leaf.Equal(second.Leaf) || !first.Leaf.Equal(third.Leaf) {
		t.Errorf("serials %s, %s, %s: want one certificate", first.Leaf.SerialNumber, second.Leaf.SerialNumber, third.Leaf.SerialNumber)
	}
	if n := f.mintedTotal(); n != 1 {
		t.Errorf("CAS signed %d certificates for one key", n)
	}
	// Another device key under the same request key is not given the first device's certificate.
	other := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REPEAT")
	f.mu.Lock()
	clear(f.requests)
	f.mu.Unlock()
	if got, err := c.Issue(ctx(t), other); err == nil || !ca.IsPermanent(err) {
		t.Errorf("a different key under a used request key: %v, %v; want a permanent error", got, err)
	}
}

// TestLostAnswerIsRecovered: CAS issued but the answer was lost; the error is retryable, and
// Recover returns that certificate, so the engine completes the request with one certificate.
func TestLostAnswerIsRecovered(t *testing.T) {
	f := newFakeCAS(t)
	c := connector(t, f, nil)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.RSA2048), "LOST")
	f.mu.Lock()
	f.loseAnswer = status.Error(codes.Unavailable, "connection reset")
	f.mu.Unlock()
	if _, err := c.Issue(ctx(t), req); err == nil || ca.IsPermanent(err) {
		t.Fatalf("lost answer: %v; want a retryable error", err)
	}
	got, err := c.Recover(ctx(t), req.Key)
	if err != nil || got == nil {
		t.Fatalf("Recover: %v, %v", got, err)
	}
	catest.CheckIssued(t, req, got, f.roots())
	catest.CheckRoots(t, got)
	again, err := c.Issue(ctx(t), req)
	if err != nil || !again.Leaf.Equal(got.Leaf) {
		t.Fatalf("Issue after the lost answer: %v; want the recovered certificate", err)
	}
	if n := f.mintedTotal(); n != 1 {
		t.Errorf("CAS signed %d certificates", n)
	}
	if none, err := c.Recover(ctx(t), "customers/C0/certificateProvisioningProcesses/never"); none != nil || err != nil {
		t.Errorf("Recover of a key never issued: %v, %v", none, err)
	}
}

// TestIssueForKey: a bare public key is certified with the request's names and usages, and
// exactly that key.
func TestIssueForKey(t *testing.T) {
	f := newFakeCAS(t)
	c := connector(t, f, nil)
	for _, kt := range []catest.KeyType{catest.RSA2048, catest.P256} {
		key := catest.DeviceKey(t, kt)
		req := &ca.KeyRequest{
			Key: "verifiedaccess/machine/" + string(kt), PublicKey: key.Public(),
			DNSNames: []string{"device.example.com"}, EmailAddresses: []string{"u@example.com"},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			UnknownExtKeyUsage: []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 11129, 2, 1, 99}},
			Validity:           24 * time.Hour,
		}
		req.Subject.CommonName, req.Subject.Organization = "SERIAL-"+string(kt), []string{"Example"}
		issued, err := c.IssueForKey(ctx(t), req)
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		spki, _ := x509.MarshalPKIXPublicKey(key.Public())
		catest.CheckIssued(t, &ca.Request{CSR: &x509.CertificateRequest{RawSubjectPublicKeyInfo: spki}}, issued, f.roots())
		leaf := issued.Leaf
		if leaf.Subject.CommonName != "SERIAL-"+string(kt) || leaf.Subject.Organization[0] != "Example" ||
			leaf.DNSNames[0] != "device.example.com" || leaf.EmailAddresses[0] != "u@example.com" ||
			len(leaf.UnknownExtKeyUsage) != 1 || !leaf.UnknownExtKeyUsage[0].Equal(req.UnknownExtKeyUsage[0]) {
			t.Errorf("%s: leaf %s %v %v %v", kt, leaf.Subject, leaf.DNSNames, leaf.EmailAddresses, leaf.UnknownExtKeyUsage)
		}
	}
	// A subject CAS cannot express is refused before any call.
	key := catest.DeviceKey(t, catest.P256)
	bad := &ca.KeyRequest{Key: "va/bad", PublicKey: key.Public(), Validity: time.Hour}
	bad.Subject.OrganizationalUnit = []string{"a", "b"}
	before := f.callCount("CreateCertificate")
	if _, err := c.IssueForKey(ctx(t), bad); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "organizationalUnit") {
		t.Errorf("two OUs: %v", err)
	}
	if f.callCount("CreateCertificate") != before {
		t.Error("a request CAS cannot express was sent")
	}
}

// TestTemplate: the connection's template is resolved in the pool's location; a profile's
// templateName overrides it; a template CAS does not have is a permanent error.
func TestTemplate(t *testing.T) {
	f := newFakeCAS(t)
	f.templates[fakeLocation+"/certificateTemplates/wifi"] = true
	c := connector(t, f, ca.Settings{"certificateTemplate": "client-auth"})
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "TEMPLATE1")
	if _, err := c.Issue(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if f.templateUsed != fakeLocation+"/certificateTemplates/client-auth" {
		t.Errorf("template %q", f.templateUsed)
	}
	req = catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "TEMPLATE2")
	req.TemplateName = "wifi"
	if _, err := c.Issue(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if f.templateUsed != fakeLocation+"/certificateTemplates/wifi" {
		t.Errorf("template %q, want the profile's", f.templateUsed)
	}
	req = catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "TEMPLATE3")
	req.TemplateName = "missing"
	if _, err := c.Issue(ctx(t), req); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("missing template: %v", err)
	}
}

// TestErrorClasses: CAS's status codes become the engine's classes, with the server's reason
// and its retry hint.
func TestErrorClasses(t *testing.T) {
	withRetry := func(d time.Duration) error {
		st, _ := status.New(codes.ResourceExhausted, "Quota exceeded for quota metric 'Certificate requests'").
			WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		return st.Err()
	}
	tests := []struct {
		err       error
		class     ca.Class
		hint      time.Duration
		inMessage string
	}{
		{status.Error(codes.PermissionDenied, "Permission 'privateca.certificates.create' denied"), ca.ClassPermanent, 0, "privateca.certificates.create"},
		{status.Error(codes.InvalidArgument, "Request violates the pool's issuance policy: subject not allowed"), ca.ClassPermanent, 0, "issuance policy"},
		{status.Error(codes.FailedPrecondition, "There are no enabled CAs in the CaPool"), ca.ClassPermanent, 0, "no enabled CAs"},
		{status.Error(codes.Unavailable, "The service is currently unavailable"), ca.ClassRetryable, 0, "unavailable"},
		{status.Error(codes.Internal, "internal error"), ca.ClassRetryable, 0, "internal error"},
		{withRetry(42 * time.Second), ca.ClassRetryable, 42 * time.Second, "Quota exceeded"},
	}
	for _, tt := range tests {
		f := newFakeCAS(t)
		c := connector(t, f, nil)
		f.fail["CreateCertificate"] = tt.err
		_, err := c.Issue(ctx(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "CLASS"))
		class, hint := ca.Classify(err)
		if class != tt.class || hint != tt.hint || !strings.Contains(err.Error(), tt.inMessage) {
			t.Errorf("%v: got %v %s %q", tt.err, class, hint, err)
		}
	}
}

// TestFakeRefusesWhatCASRefuses: requests real CAS refuses are refused by the fake, so that the
// connector's passing requests mean something.
func TestFakeRefusesWhatCASRefuses(t *testing.T) {
	f := newFakeCAS(t)
	good := func() *privatecapb.CreateCertificateRequest {
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "RAW")
		return &privatecapb.CreateCertificateRequest{
			Parent: f.pool, CertificateId: "raw-1", RequestId: "8c5ad2ad-8f3c-4a3d-9d9a-7a6f1e2b3c4d",
			Certificate: &privatecapb.Certificate{
				CertificateConfig: &privatecapb.Certificate_PemCsr{PemCsr: string(pemutil.EncodeCSR(req.CSRDER))},
				Lifetime:          durationpb.New(time.Hour),
			},
		}
	}
	client := func(token string) *privateca.CertificateAuthorityClient {
		opts := append([]option.ClientOption{option.WithEndpoint(f.addr)}, f.clientOptions(token)...)
		c, err := privateca.NewCertificateAuthorityClient(context.Background(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	authed := client(f.token)
	if _, err := authed.CreateCertificate(ctx(t), good()); err != nil {
		t.Fatalf("the well-formed request: %v", err)
	}
	tests := []struct {
		name   string
		client *privateca.CertificateAuthorityClient
		mutate func(*privatecapb.CreateCertificateRequest)
		code   codes.Code
	}{
		{"wrong token", client("ya29.someone-else"), func(*privatecapb.CreateCertificateRequest) {}, codes.Unauthenticated},
		{"request_id not a UUID", authed, func(r *privatecapb.CreateCertificateRequest) { r.RequestId = "process-1" }, codes.InvalidArgument},
		{"zero request_id", authed, func(r *privatecapb.CreateCertificateRequest) { r.RequestId = "00000000-0000-0000-0000-000000000000" }, codes.InvalidArgument},
		{"certificate_id with a slash", authed, func(r *privatecapb.CreateCertificateRequest) {
			r.CertificateId = "customers/C0/x"
		}, codes.InvalidArgument},
		{"certificate_id missing on Enterprise", authed, func(r *privatecapb.CreateCertificateRequest) { r.CertificateId = "" }, codes.InvalidArgument},
		{"no lifetime", authed, func(r *privatecapb.CreateCertificateRequest) { r.Certificate.Lifetime = nil }, codes.InvalidArgument},
		{"unknown pool", authed, func(r *privatecapb.CreateCertificateRequest) { r.Parent = fakeLocation + "/caPools/other" }, codes.NotFound},
		{"bad CSR signature", authed, func(r *privatecapb.CreateCertificateRequest) {
			csr := r.Certificate.GetPemCsr()
			block, _ := pem.Decode([]byte(csr))
			block.Bytes[len(block.Bytes)-1] ^= 0xff
			r.Certificate.CertificateConfig = &privatecapb.Certificate_PemCsr{PemCsr: string(pem.EncodeToMemory(block))}
		}, codes.InvalidArgument},
		{"DER public key in a config", authed, func(r *privatecapb.CreateCertificateRequest) {
			r.Certificate.CertificateConfig = &privatecapb.Certificate_Config{Config: &privatecapb.CertificateConfig{
				X509Config: &privatecapb.X509Parameters{},
				PublicKey:  &privatecapb.PublicKey{Key: []byte{0x30, 0x59}, Format: privatecapb.PublicKey_PEM},
			}}
		}, codes.InvalidArgument},
		{"disabled issuing CA", authed, func(r *privatecapb.CreateCertificateRequest) { r.IssuingCertificateAuthorityId = "ca-2" }, codes.FailedPrecondition},
	}
	f.addCA(t, "ca-2", privatecapb.CertificateAuthority_DISABLED)
	for i, tt := range tests {
		req := good()
		req.CertificateId = "raw-" + string(rune('a'+i))
		req.RequestId = ""
		tt.mutate(req)
		_, err := tt.client.CreateCertificate(ctx(t), req)
		if status.Code(err) != tt.code {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.code)
		}
	}
}

// TestFakeChecksTheRoutingHeader: a routing header naming another resource than the request's
// is refused (the SDK derives it from the request; a hand-made one may lie).
func TestFakeChecksTheRoutingHeader(t *testing.T) {
	f := newFakeCAS(t)
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: f.serverCA.Pool()})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw := privatecapb.NewCertificateAuthorityServiceClient(conn)
	for _, tt := range []struct {
		params string
		code   codes.Code
	}{
		{"name=" + url.QueryEscape(f.pool), codes.OK},
		{"name=" + url.QueryEscape(fakeLocation+"/caPools/other"), codes.InvalidArgument},
	} {
		c := metadata.AppendToOutgoingContext(ctx(t), "authorization", "Bearer "+f.token, "x-goog-request-params", tt.params)
		if _, err := raw.GetCaPool(c, &privatecapb.GetCaPoolRequest{Name: f.pool}); status.Code(err) != tt.code {
			t.Errorf("%s: %v, want %s", tt.params, err, tt.code)
		}
	}
}

// TestNoCredentialsIsPermanent: a connector whose token CAS refuses says so, permanently.
func TestNoCredentialsIsPermanent(t *testing.T) {
	f := newFakeCAS(t)
	c, err := cas.New(ca.Settings{"caPool": f.pool, "endpoint": f.addr}, ca.Env{}, cas.Options{ClientOptions: f.clientOptions("ya29.expired")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Ping(ctx(t))
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "credentials were refused") {
		t.Errorf("Ping with a refused token: %v", err)
	}
}

// TestNoCredentials: without credentialsFile and with no Application Default Credentials to be
// found, New says what to set, at credentialsFile.
func TestNoCredentials(t *testing.T) {
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "missing.json"))
	_, err := cas.New(ca.Settings{"caPool": fakePool}, ca.Env{}, cas.Options{})
	var se *ca.SettingError
	if !errors.As(err, &se) || se.Key != "credentialsFile" || !strings.Contains(err.Error(), "Application Default Credentials") {
		t.Errorf("New without credentials: %v", err)
	}
}

// TestPing: a healthy pool pings; a disabled issuing CA, a missing template or pool do not,
// each with its reason.
func TestPing(t *testing.T) {
	f := newFakeCAS(t)
	f.addCA(t, "ca-off", privatecapb.CertificateAuthority_DISABLED)
	if err := connector(t, f, ca.Settings{"certificateAuthority": "ca-1", "certificateTemplate": "client-auth"}).Ping(ctx(t)); err != nil {
		t.Fatalf("healthy: %v", err)
	}
	for _, tt := range []struct {
		settings ca.Settings
		want     string
	}{
		{ca.Settings{"certificateAuthority": "ca-off"}, "not ENABLED"},
		{ca.Settings{"certificateAuthority": "ca-gone"}, "NotFound"},
		{ca.Settings{"certificateTemplate": "gone"}, "certificateTemplate"},
		{ca.Settings{"caPool": fakeLocation + "/caPools/gone"}, "caPools/gone"},
	} {
		err := connector(t, f, tt.settings).Ping(ctx(t))
		if !ca.IsPermanent(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v", tt.settings, err)
		}
	}
}

// TestNewCAInThePool: a certificate from a CA added to the pool after the roots were read
// still comes with roots it chains to, read again from FetchCaCerts.
func TestNewCAInThePool(t *testing.T) {
	f := newFakeCAS(t)
	c := connector(t, f, nil)
	if _, err := c.Issue(ctx(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "BEFORE")); err != nil {
		t.Fatal(err)
	}
	f.addCA(t, "ca-new", privatecapb.CertificateAuthority_ENABLED)
	f.mu.Lock()
	f.cas[0].state = privatecapb.CertificateAuthority_DISABLED
	f.mu.Unlock()
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "AFTER")
	issued, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	catest.CheckRoots(t, issued)
	if n := f.callCount("FetchCaCerts"); n != 2 {
		t.Errorf("FetchCaCerts called %d times, want 2", n)
	}
}

// TestPinnedRoots: with caCertsFile the roots are the file's, and the pool's are not fetched.
func TestPinnedRoots(t *testing.T) {
	f := newFakeCAS(t)
	path := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(path, pemutil.Encode(f.cas[0].root.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	c := connector(t, f, ca.Settings{"caCertsFile": path})
	issued, err := c.Issue(ctx(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "PINNED"))
	if err != nil {
		t.Fatal(err)
	}
	catest.CheckRoots(t, issued)
	if n := f.callCount("FetchCaCerts"); n != 0 {
		t.Errorf("FetchCaCerts called %d times with caCertsFile", n)
	}
}

// TestRevoke: by key and by serial alone, with CAS's reason; again is no error; another CA's
// certificate with a serial of this pool, and a serial unknown to the pool, are refused.
func TestRevoke(t *testing.T) {
	f := newFakeCAS(t)
	c := connector(t, f, nil)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REVOKE")
	issued, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	rr := &ca.RevokeRequest{Serial: issued.Leaf.SerialNumber, Certificate: issued.Leaf, Key: req.Key, Reason: ca.ReasonKeyCompromise}
	for range 2 {
		if err := c.Revoke(ctx(t), rr); err != nil {
			t.Fatal(err)
		}
	}
	if revoked, reason := f.revocation(issued.Leaf); !revoked || reason != privatecapb.RevocationReason_KEY_COMPROMISE {
		t.Errorf("revoked %v %v", revoked, reason)
	}
	if n := f.callCount("RevokeCertificate"); n != 1 {
		t.Errorf("RevokeCertificate called %d times; the second revoke should see it revoked", n)
	}

	other, err := c.Issue(ctx(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REVOKE2"))
	if err != nil {
		t.Fatal(err)
	}
	foreign := catest.NewRoot(t, "foreign").Sign(t, &x509.Certificate{SerialNumber: other.Leaf.SerialNumber}, other.Leaf.PublicKey)
	if err := c.Revoke(ctx(t), &ca.RevokeRequest{Serial: foreign.SerialNumber, Certificate: foreign}); !ca.IsPermanent(err) {
		t.Errorf("another CA's certificate: %v", err)
	}
	if revoked, _ := f.revocation(other.Leaf); revoked {
		t.Fatal("revoking a foreign certificate revoked this pool's")
	}
	if err := c.Revoke(ctx(t), &ca.RevokeRequest{Serial: other.Leaf.SerialNumber, Reason: ca.ReasonCertificateHold}); err != nil {
		t.Fatal(err)
	}
	if revoked, reason := f.revocation(other.Leaf); !revoked || reason != privatecapb.RevocationReason_CERTIFICATE_HOLD {
		t.Errorf("by serial: revoked %v %v", revoked, reason)
	}
	unknown := new(big.Int).Lsh(issued.Leaf.SerialNumber, 1)
	if err := c.Revoke(ctx(t), &ca.RevokeRequest{Serial: unknown}); !ca.IsPermanent(err) ||
		!strings.Contains(err.Error(), "holds no certificate") {
		t.Errorf("unknown serial: %v", err)
	}
}

// TestDevOpsTier: a DevOps pool issues, but Recover and Revoke say why they cannot work.
func TestDevOpsTier(t *testing.T) {
	f := newFakeCAS(t)
	f.tier = privatecapb.CaPool_DEVOPS
	c := connector(t, f, nil)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "DEVOPS")
	issued, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	catest.CheckIssued(t, req, issued, f.roots())
	if _, err := c.Recover(ctx(t), req.Key); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "DevOps") {
		t.Errorf("Recover: %v", err)
	}
	if err := c.Revoke(ctx(t), &ca.RevokeRequest{Serial: issued.Leaf.SerialNumber, Key: req.Key}); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "DevOps") {
		t.Errorf("Revoke: %v", err)
	}
}

// TestSettings: every problem is reported at its key, without a file read or a call.
func TestSettings(t *testing.T) {
	err := cas.Check(ca.Settings{"caPool": "my-pool", "certificateAuthority": "projects/p/locations/l/caPools/x/certificateAuthorities/y",
		"certificateTemplate": "a/b", "maxLifetime": "10ms", "endpoint": "https://privateca.googleapis.com"})
	for _, key := range []string{"caPool:", "certificateAuthority:", "certificateTemplate:", "maxLifetime:", "endpoint:"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("no problem at %s: %v", key, err)
		}
	}
	if err := cas.Check(ca.Settings{}); err == nil || !strings.Contains(err.Error(), "caPool: required") {
		t.Errorf("empty: %v", err)
	}
	if err := cas.Check(ca.Settings{"caPool": fakePool, "certificateTemplate": fakeLocation + "/certificateTemplates/t", "maxLifetime": "720h"}); err != nil {
		t.Errorf("good settings: %v", err)
	}
	_, err = cas.New(ca.Settings{"caPool": fakePool, "credentialsFile": "/nonexistent/sa.json"}, ca.Env{}, cas.Options{})
	var se *ca.SettingError
	if !errors.As(err, &se) || se.Key != "credentialsFile" {
		t.Errorf("missing credentials file: %v", err)
	}
}

// BenchmarkIssue measures one issuance through the SDK client and the in-process CAS over TLS,
// the fake's own signing included, for P-256 device keys (keys and CSRs made before the timer).
func BenchmarkIssue(b *testing.B) {
	f := newFakeCAS(b)
	c := connector(b, f, nil)
	reqs := make([]*ca.Request, b.N)
	for i := range reqs {
		reqs[i] = catest.NewRequest(b, catest.DeviceKey(b, catest.P256), fmt.Sprintf("BENCH%d", i))
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if _, err := c.Issue(ctx, reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
}
