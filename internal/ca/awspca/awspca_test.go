package awspca_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/acmpca"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/awspca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
)

// awsEnv gives the SDK's default credential chain the fake's access key through the
// environment, and nothing else to find.
func awsEnv(t testing.TB) {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", fakeAKID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", fakeSecret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_PROFILE", "")
	_ = os.Unsetenv("AWS_PROFILE")
}

// connector builds an awspca connector for the fake. retries keeps the SDK's own retryer;
// otherwise each call is made once, so that the test sees each answer's class.
func connector(t testing.TB, f *fakePCA, extra ca.Settings, retries bool) *awspca.Connector {
	t.Helper()
	s := ca.Settings{"certificateAuthorityArn": f.arn, "endpoint": f.srv.URL}
	maps.Copy(s, extra)
	c, err := awspca.New(s, ca.Env{Name: "corp"}, awspca.Options{
		ClientOptions: []func(*acmpca.Options){func(o *acmpca.Options) {
			o.HTTPClient = f.srv.Client()
			if !retries {
				o.Retryer = aws.NopRetryer{}
			}
		}},
		Now: f.now,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// lastIssueInput is the body of the last IssueCertificate the fake received.
func (f *fakePCA) lastIssueInput(t *testing.T) issueInput {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var in issueInput
	if err := json.Unmarshal(f.inputs["IssueCertificate"], &in); err != nil {
		t.Fatal(err)
	}
	return in
}

func TestConformance(t *testing.T) {
	awsEnv(t)
	catest.RunTarget(t, func(t *testing.T) *catest.Target {
		f := newFakePCA(t, "EC_prime256v1")
		return &catest.Target{
			Connector:  connector(t, f, nil, false),
			Roots:      f.rootPool(),
			Idempotent: true,
			Pending: &catest.PendingControl{
				Hold:    func(testing.TB) { f.mu.Lock(); f.hold = true; f.mu.Unlock() },
				Approve: f.approve,
			},
			Revocation: &catest.Revocation{Status: func(t testing.TB, cert *x509.Certificate) (bool, ca.Reason) {
				revoked, reason := f.revocation(cert)
				return revoked, pcaReasons[reason]
			}},
		}
	})
}

// pcaReasons reads PCA's revocation reasons back as RFC 5280's.
var pcaReasons = map[string]ca.Reason{
	"UNSPECIFIED": ca.ReasonUnspecified, "KEY_COMPROMISE": ca.ReasonKeyCompromise,
	"CERTIFICATE_AUTHORITY_COMPROMISE": ca.ReasonCACompromise, "AFFILIATION_CHANGED": ca.ReasonAffiliationChanged,
	"SUPERSEDED": ca.ReasonSuperseded, "CESSATION_OF_OPERATION": ca.ReasonCessationOfOperation,
	"PRIVILEGE_WITHDRAWN": ca.ReasonPrivilegeWithdrawn, "A_A_COMPROMISE": ca.ReasonAACompromise,
}

// TestSigningAlgorithmIsTheCAs: PCA signs with the CA's key, so the algorithm follows the CA
// (read from DescribeCertificateAuthority), whatever the device key is; one of the other family
// is refused by PCA, permanently.
func TestSigningAlgorithmIsTheCAs(t *testing.T) {
	awsEnv(t)
	f := newFakePCA(t, "RSA_2048")
	c := connector(t, f, nil, false)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "RSACA")
	issued, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	catest.CheckIssued(t, req, issued, f.rootPool())
	catest.CheckRoots(t, issued)
	if in := f.lastIssueInput(t); in.SigningAlgorithm != "SHA256WITHRSA" {
		t.Errorf("SigningAlgorithm %q, want the CA's SHA256WITHRSA", in.SigningAlgorithm)
	}
	if issued.Leaf.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Errorf("leaf signed with %v", issued.Leaf.SignatureAlgorithm)
	}
	wrong := connector(t, f, ca.Settings{"signingAlgorithm": "SHA256WITHECDSA"}, false)
	_, err = wrong.Issue(ctx(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "WRONGALG"))
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "InvalidArgsException") {
		t.Errorf("ECDSA on an RSA CA: %v", err)
	}
}

// TestPending: PCA still signing is a pending answer with the certificate ARN as ticket; the
// ticket fetches that certificate once it is signed, and nothing is issued twice.
func TestPending(t *testing.T) {
	awsEnv(t)
	f := newFakePCA(t, "EC_prime256v1")
	c := connector(t, f, nil, false)
	f.hold = true
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "PENDING")
	for range 2 {
		_, err := c.Issue(ctx(t), req)
		var p *ca.PendingError
		if !errors.As(err, &p) || !strings.HasPrefix(p.Ticket, f.arn+"/certificate/") || p.RetryAfter <= 0 {
			t.Fatalf("held: %v", err)
		}
		req.Ticket = p.Ticket
	}
	f.approve(t)
	issued, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	catest.CheckIssued(t, req, issued, f.rootPool())
	if n, m := f.callCount("IssueCertificate"), f.mintedCount(); n != 1 || m != 1 {
		t.Errorf("IssueCertificate %d times, %d certificates", n, m)
	}
	// A ticket from elsewhere is refused before any call.
	req.Ticket = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/x"
	if _, err := c.Issue(ctx(t), req); !ca.IsPermanent(err) {
		t.Errorf("foreign ticket: %v", err)
	}
}

// TestLostAnswer: PCA issued but its answer was lost. The SDK's retry and the engine's repeat
// reuse the idempotency token, so one certificate results; a repeat after PCA forgot the token
// is refused rather than issuing a second.
func TestLostAnswer(t *testing.T) {
	awsEnv(t)
	t.Run("SDKRetry", func(t *testing.T) {
		f := newFakePCA(t, "EC_prime256v1")
		c := connector(t, f, nil, true)
		f.lose["IssueCertificate"] = true
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "LOSTSDK")
		issued, err := c.Issue(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		catest.CheckIssued(t, req, issued, f.rootPool())
		if n, m := f.callCount("IssueCertificate"), f.mintedCount(); n != 2 || m != 1 {
			t.Errorf("IssueCertificate %d times, %d certificates; want 2 and 1", n, m)
		}
	})
	t.Run("EngineRepeat", func(t *testing.T) {
		f := newFakePCA(t, "EC_prime256v1")
		c := connector(t, f, nil, false)
		f.lose["IssueCertificate"] = true
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "LOSTENGINE")
		if _, err := c.Issue(ctx(t), req); err == nil || ca.IsPermanent(err) {
			t.Fatalf("lost answer: %v; want retryable", err)
		}
		f.advance(3 * time.Minute)
		issued, err := c.Issue(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		catest.CheckIssued(t, req, issued, f.rootPool())
		if m := f.mintedCount(); m != 1 {
			t.Errorf("%d certificates", m)
		}
	})
	t.Run("RefusedThenFixed", func(t *testing.T) {
		f := newFakePCA(t, "EC_prime256v1")
		c := connector(t, f, nil, false)
		f.fail["IssueCertificate"] = fakeError{400, "AccessDeniedException", "not authorized"}
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REFUSED")
		if _, err := c.Issue(ctx(t), req); !ca.IsPermanent(err) {
			t.Fatalf("refused: %v", err)
		}
		delete(f.fail, "IssueCertificate")
		f.advance(6 * time.Minute) // a refusal leaves no doubt: no "lost answer" to refuse later
		issued, err := c.Issue(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		catest.CheckIssued(t, req, issued, f.rootPool())
	})
	t.Run("TokenForgotten", func(t *testing.T) {
		f := newFakePCA(t, "EC_prime256v1")
		c := connector(t, f, nil, false)
		f.lose["IssueCertificate"] = true
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "LOSTLONG")
		if _, err := c.Issue(ctx(t), req); err == nil || ca.IsPermanent(err) {
			t.Fatalf("lost answer: %v", err)
		}
		f.advance(6 * time.Minute)
		if _, err := c.Issue(ctx(t), req); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "may have issued") {
			t.Errorf("after the token window: %v", err)
		}
		if n, m := f.callCount("IssueCertificate"), f.mintedCount(); n != 1 || m != 1 {
			t.Errorf("IssueCertificate %d times, %d certificates; want 1 and 1", n, m)
		}
	})
}

// TestRepeatAfterTheWindow: a completed request asked again after PCA forgot its token gets the
// certificate already issued, fetched by its ARN.
func TestRepeatAfterTheWindow(t *testing.T) {
	awsEnv(t)
	f := newFakePCA(t, "EC_prime256v1")
	c := connector(t, f, nil, false)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REPEAT")
	first, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Issue(ctx(t), req)
	if err != nil || !second.Leaf.Equal(first.Leaf) {
		t.Fatalf("repeat within the window: %v", err)
	}
	f.advance(10 * time.Minute)
	third, err := c.Issue(ctx(t), req)
	if err != nil || !third.Leaf.Equal(first.Leaf) {
		t.Fatalf("repeat after the window: %v", err)
	}
	if m := f.mintedCount(); m != 1 {
		t.Errorf("%d certificates for one key", m)
	}
}

// TestRequestInput: the idempotency token comes from the request key; the validity is whole
// days where it can be, an absolute end otherwise, capped by maxValidity; the template is the
// default, or the profile's.
func TestRequestInput(t *testing.T) {
	awsEnv(t)
	f := newFakePCA(t, "EC_prime256v1")
	c := connector(t, f, ca.Settings{"maxValidity": "72h"}, false)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "INPUT1")
	req.Validity = 48 * time.Hour
	if _, err := c.Issue(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	in := f.lastIssueInput(t)
	sum := sha256.Sum256([]byte(req.Key))
	if in.IdempotencyToken != hex.EncodeToString(sum[:16]) || in.Validity.Type != "DAYS" || *in.Validity.Value != 2 ||
		in.TemplateArn != awspca.DefaultTemplateArn {
		t.Errorf("input %+v %+v", in, in.Validity)
	}
	req = catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "INPUT2")
	req.Validity, req.TemplateName = 90*time.Minute, "EndEntityCertificate/V1"
	issued, err := c.Issue(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	in = f.lastIssueInput(t)
	if in.Validity.Type != "ABSOLUTE" || in.TemplateArn != "arn:aws:acm-pca:::template/EndEntityCertificate/V1" {
		t.Errorf("input %+v", in)
	}
	if d := time.Until(issued.Leaf.NotAfter); d > 91*time.Minute || d < 80*time.Minute {
		t.Errorf("notAfter in %s, want about 90m", d)
	}
	req = catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "INPUT3")
	req.Validity = 8760 * time.Hour
	if _, err := c.Issue(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if in = f.lastIssueInput(t); *in.Validity.Value != 3 {
		t.Errorf("validity %d days, want maxValidity's 3", *in.Validity.Value)
	}
	req = catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "INPUT4")
	req.TemplateName = "SubordinateCACertificate_PathLen0/V1"
	if _, err := c.Issue(ctx(t), req); !ca.IsPermanent(err) {
		t.Errorf("unsupported template: %v", err)
	}
}

// TestErrorClasses: PCA's error codes become the engine's classes, with PCA's message.
func TestErrorClasses(t *testing.T) {
	awsEnv(t)
	tests := []struct {
		e     fakeError
		class ca.Class
	}{
		{fakeError{400, "AccessDeniedException", "User is not authorized to perform: acm-pca:IssueCertificate"}, ca.ClassPermanent},
		{fakeError{400, "LimitExceededException", "Quota of certificates issued exceeded"}, ca.ClassPermanent},
		{fakeError{400, "InvalidStateException", "The certificate authority is DISABLED"}, ca.ClassPermanent},
		{fakeError{400, "ThrottlingException", "Rate exceeded"}, ca.ClassRetryable},
		{fakeError{400, "RequestFailedException", "The request has failed for an unspecified reason."}, ca.ClassRetryable},
		{fakeError{500, "InternalFailure", "internal error"}, ca.ClassRetryable},
		{fakeError{503, "ServiceUnavailable", "Service unavailable"}, ca.ClassRetryable},
	}
	for _, tt := range tests {
		f := newFakePCA(t, "EC_prime256v1")
		c := connector(t, f, nil, false)
		f.fail["IssueCertificate"] = tt.e
		_, err := c.Issue(ctx(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "CLASS"))
		if class, _ := ca.Classify(err); class != tt.class || !strings.Contains(err.Error(), tt.e.msg) {
			t.Errorf("%s: %v %v", tt.e.code, class, err)
		}
	}
}

// TestFakeRefusesWhatAWSRefuses: the fake checks SigV4 and the JSON 1.1 framing as AWS does; a
// correctly signed request passes, and each departure from it is refused.
func TestFakeRefusesWhatAWSRefuses(t *testing.T) {
	f := newFakePCA(t, "EC_prime256v1")
	body := []byte(`{"CertificateAuthorityArn":"` + f.arn + `"}`)
	send := func(mutate func(*http.Request), secret, region string, after func(*http.Request)) (int, string) {
		req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		req.Header.Set("X-Amz-Target", "ACMPrivateCA.DescribeCertificateAuthority")
		mutate(req)
		sum := sha256.Sum256(body)
		if secret != "" {
			err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: fakeAKID, SecretAccessKey: secret},
				req, hex.EncodeToString(sum[:]), "acm-pca", region, time.Now())
			if err != nil {
				t.Fatal(err)
			}
		}
		after(req)
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Amzn-Errortype")
	}
	none := func(*http.Request) {}
	if code, typ := send(none, fakeSecret, fakeRegion, none); code != 200 {
		t.Fatalf("a correctly signed request: HTTP %d %s", code, typ)
	}
	tests := []struct {
		name     string
		mutate   func(*http.Request)
		secret   string
		region   string
		after    func(*http.Request)
		wantType string
	}{
		{"unsigned", none, "", fakeRegion, none, "MissingAuthenticationTokenException"},
		{"wrong secret", none, "another secret", fakeRegion, none, "InvalidSignatureException"},
		{"other region", none, fakeSecret, "us-east-1", none, "InvalidSignatureException"},
		{"body changed after signing", none, fakeSecret, fakeRegion, func(r *http.Request) {
			changed := bytes.Replace(body, []byte("555555555555"), []byte("666666666666"), 1)
			r.Body, r.ContentLength = ioNopCloser(changed), int64(len(changed))
		}, "InvalidSignatureException"},
		{"operation changed after signing", none, fakeSecret, fakeRegion, func(r *http.Request) {
			r.Header.Set("X-Amz-Target", "ACMPrivateCA.RevokeCertificate")
		}, "InvalidSignatureException"},
		{"JSON 1.0 content type", func(r *http.Request) { r.Header.Set("Content-Type", "application/x-amz-json-1.0") }, fakeSecret, fakeRegion, none, "SerializationException"},
		{"path", func(r *http.Request) { r.URL.Path = "/v1/describe" }, fakeSecret, fakeRegion, none, "UnknownOperationException"},
		{"other service's target", func(r *http.Request) { r.Header.Set("X-Amz-Target", "CertificateManager.DescribeCertificate") }, fakeSecret, fakeRegion, none, "UnknownOperationException"},
	}
	for _, tt := range tests {
		if code, typ := send(tt.mutate, tt.secret, tt.region, tt.after); code < 400 || typ != tt.wantType {
			t.Errorf("%s: HTTP %d %s, want %s", tt.name, code, typ, tt.wantType)
		}
	}
	// Through the connector: a key AWS does not know is a permanent error naming the credentials.
	awsEnv(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDUNKNOWN000000000")
	err := connector(t, f, nil, false).Ping(ctx(t))
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("unknown access key: %v", err)
	}
}

// TestSharedCredentialsFile: the default chain finds a shared credentials file too.
func TestSharedCredentialsFile(t *testing.T) {
	awsEnv(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	path := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(path, []byte("[default]\naws_access_key_id = "+fakeAKID+"\naws_secret_access_key = "+fakeSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", path)
	f := newFakePCA(t, "EC_prime256v1")
	if err := connector(t, f, nil, false).Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// TestPing: an ACTIVE CA pings; a disabled one or an unknown ARN does not, permanently.
func TestPing(t *testing.T) {
	awsEnv(t)
	f := newFakePCA(t, "EC_prime256v1")
	if err := connector(t, f, nil, false).Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
	f.status = "DISABLED"
	if err := connector(t, f, nil, false).Ping(ctx(t)); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "DISABLED") {
		t.Errorf("disabled: %v", err)
	}
	other := strings.Replace(f.arn, "11111111", "99999999", 1)
	if err := connector(t, f, ca.Settings{"certificateAuthorityArn": other}, false).Ping(ctx(t)); !ca.IsPermanent(err) ||
		!strings.Contains(err.Error(), "ResourceNotFoundException") {
		t.Errorf("unknown CA: %v", err)
	}
}

// TestRevoke: by serial, with PCA's reason, as colon-separated hex; again is no error; another
// CA's certificate with this CA's serial, an unknown serial, and certificateHold are refused.
func TestRevoke(t *testing.T) {
	awsEnv(t)
	f := newFakePCA(t, "EC_prime256v1")
	c := connector(t, f, nil, false)
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
	if revoked, reason := f.revocation(issued.Leaf); !revoked || reason != "KEY_COMPROMISE" {
		t.Errorf("revoked %v %s", revoked, reason)
	}
	var in struct{ CertificateSerial string }
	_ = json.Unmarshal(f.inputs["RevokeCertificate"], &in)
	if !strings.Contains(in.CertificateSerial, ":") {
		t.Errorf("serial sent as %q", in.CertificateSerial)
	}

	other, err := c.Issue(ctx(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REVOKE2"))
	if err != nil {
		t.Fatal(err)
	}
	foreign := catest.NewRoot(t, "foreign").Sign(t, &x509.Certificate{SerialNumber: other.Leaf.SerialNumber}, other.Leaf.PublicKey)
	before := f.callCount("RevokeCertificate")
	if err := c.Revoke(ctx(t), &ca.RevokeRequest{Serial: foreign.SerialNumber, Certificate: foreign}); !ca.IsPermanent(err) {
		t.Errorf("another CA's certificate: %v", err)
	}
	if err := c.Revoke(ctx(t), &ca.RevokeRequest{Serial: other.Leaf.SerialNumber, Reason: ca.ReasonCertificateHold}); !ca.IsPermanent(err) {
		t.Errorf("certificateHold: %v", err)
	}
	if f.callCount("RevokeCertificate") != before {
		t.Error("a refused revocation reached PCA")
	}
	if revoked, _ := f.revocation(other.Leaf); revoked {
		t.Fatal("revoked by a refused request")
	}
	if err := c.Revoke(ctx(t), &ca.RevokeRequest{Serial: other.Leaf.SerialNumber, Reason: ca.ReasonSuperseded}); err != nil {
		t.Fatal(err)
	}
	if revoked, reason := f.revocation(other.Leaf); !revoked || reason != "SUPERSEDED" {
		t.Errorf("by serial: %v %s", revoked, reason)
	}
	unknown := new(big.Int).Lsh(other.Leaf.SerialNumber, 3)
	if err := c.Revoke(ctx(t), &ca.RevokeRequest{Serial: unknown}); !ca.IsPermanent(err) {
		t.Errorf("unknown serial: %v", err)
	}
}

// TestSettings: every problem is reported at its key.
func TestSettings(t *testing.T) {
	err := awspca.Check(ca.Settings{"certificateAuthorityArn": "arn:aws:acm:eu-west-1:123456789012:certificate/x",
		"templateArn": "arn:aws:acm-pca:::template/x y", "signingAlgorithm": "MD5WITHRSA", "maxValidity": "1ms",
		"region": "Europe", "endpoint": "http://acm-pca.eu-west-1.amazonaws.com"})
	for _, key := range []string{"certificateAuthorityArn:", "templateArn:", "signingAlgorithm:", "maxValidity:", "region:", "endpoint:"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("no problem at %s: %v", key, err)
		}
	}
	if err := awspca.Check(ca.Settings{"certificateAuthorityArn": fakeCAArn, "templateArn": "EndEntityClientAuthCertificate/V1",
		"signingAlgorithm": "SHA384WITHECDSA", "maxValidity": "720h", "region": "eu-central-1"}); err != nil {
		t.Errorf("good settings: %v", err)
	}
}

func ioNopCloser(b []byte) *nopCloser { return &nopCloser{bytes.NewReader(b)} }

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// BenchmarkIssue measures one issuance (IssueCertificate, then GetCertificate) through the SDK
// and the SigV4-checking fake over TLS, the fake's signing included, for P-256 device keys.
func BenchmarkIssue(b *testing.B) {
	awsEnv(b)
	f := newFakePCA(b, "EC_prime256v1")
	c := connector(b, f, nil, false)
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
