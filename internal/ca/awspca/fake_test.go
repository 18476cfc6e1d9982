package awspca_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// fakePCA is an httptest server speaking the AWS JSON 1.1 protocol of ACM PCA as the SDK uses
// it: POST / with Content-Type application/x-amz-json-1.1 and X-Amz-Target
// ACMPrivateCA.<Operation>, every request SigV4-signed for service acm-pca in the CA's region,
// members named as in the API reference (blobs base64), errors as HTTP 400/500 with
// X-Amzn-ErrorType and a {"__type", "message"} body. It checks what PCA checks: the CA's ARN and
// state, the CSR's signature, the signing algorithm's family against the CA key, the validity,
// the template, the idempotency token (honoured for five minutes of its clock).
type fakePCA struct {
	srv     *httptest.Server
	region  string
	arn     string
	secrets map[string]string // access key ID -> secret

	mu      sync.Mutex
	clock   time.Time // the idempotency window's clock; tests advance it
	status  string
	keyAlg  string // RSA_2048 or EC_prime256v1
	sigAlg  string // the CA's own, as DescribeCertificateAuthority says
	root    *catest.CA
	ca      *catest.CA
	tokens  map[string]tokenUse
	certs   map[string]*fakeCert // by certificate ARN
	hold    bool
	calls   map[string]int
	fail    map[string]fakeError // operation -> answer instead
	lose    map[string]bool      // operation -> do it, then answer 500 (the answer is lost)
	inputs  map[string][]byte    // operation -> last body
	minted  int
	revoked map[string]string // ARN -> reason
	// holdCalls makes GetCertificate answer in progress that many times per certificate before
	// PCA has signed it; loseFirstAnswers answers the first IssueCertificate of each token with
	// a 500 after issuing; hangAfterIssue leaves it unanswered until the caller gives up.
	holdCalls                        int
	loseFirstAnswers, hangAfterIssue bool
	tokenCalls                       map[string]int
	mintedFor                        map[string]int // idempotency token -> certificates signed
}

type tokenUse struct {
	arn string
	at  time.Time
}

type fakeCert struct {
	der    []byte // nil while held
	serial *big.Int
	tmpl   *x509.Certificate
	pub    crypto.PublicKey
	token  string
	asked  int // GetCertificate calls while unsigned
}

type fakeError struct {
	status int
	code   string
	msg    string
}

const (
	fakeAKID   = "AKIDCERTPROVTEST0001"
	fakeSecret = "fake/secret/key/for/the/pca/test/0000000"
	fakeRegion = "eu-west-1"
	fakeCAArn  = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555"
)

func newFakePCA(t testing.TB, keyAlg string) *fakePCA {
	t.Helper()
	f := &fakePCA{
		region:     fakeRegion,
		arn:        fakeCAArn,
		secrets:    map[string]string{fakeAKID: fakeSecret},
		clock:      time.Now(),
		status:     "ACTIVE",
		keyAlg:     keyAlg,
		root:       catest.NewRoot(t, "fake PCA root"),
		tokens:     map[string]tokenUse{},
		certs:      map[string]*fakeCert{},
		calls:      map[string]int{},
		fail:       map[string]fakeError{},
		lose:       map[string]bool{},
		inputs:     map[string][]byte{},
		revoked:    map[string]string{},
		tokenCalls: map[string]int{},
		mintedFor:  map[string]int{},
	}
	var key crypto.Signer
	var err error
	switch keyAlg {
	case "RSA_2048":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
		f.sigAlg = "SHA256WITHRSA"
	case "EC_prime256v1":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		f.sigAlg = "SHA256WITHECDSA"
	default:
		t.Fatalf("fake PCA: key algorithm %s", keyAlg)
	}
	if err != nil {
		t.Fatal(err)
	}
	caCert := f.root.Sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "fake PCA subordinate"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, NotAfter: time.Now().Add(30 * 24 * time.Hour),
	}, key.Public())
	f.ca = &catest.CA{Cert: caCert, Key: key}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakePCA) rootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(f.root.Cert)
	return p
}

func (f *fakePCA) callCount(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakePCA) mintedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.minted
}

// advance moves the fake's clock, as time passing moves PCA's.
func (f *fakePCA) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock = f.clock.Add(d)
}

func (f *fakePCA) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clock
}

func writeError(w http.ResponseWriter, e fakeError) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", e.code)
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": e.code, "message": e.msg})
}

func clientError(code, format string, args ...any) *fakeError {
	return &fakeError{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
}

func (f *fakePCA) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, fakeError{400, "SerializationException", "cannot read the body"})
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		writeError(w, fakeError{404, "UnknownOperationException", "only POST / is served"})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		writeError(w, fakeError{400, "SerializationException", "Content-Type must be application/x-amz-json-1.1, got " + ct})
		return
	}
	if err := verifySigV4(r, body, f.secrets, f.region, "acm-pca", time.Now()); err != nil {
		se := err.(*sigv4Error)
		status := http.StatusBadRequest
		if se.code == "MissingAuthenticationTokenException" || se.code == "InvalidSignatureException" {
			status = http.StatusForbidden
		}
		writeError(w, fakeError{status, se.code, se.msg})
		return
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "ACMPrivateCA.")
	if !ok {
		writeError(w, fakeError{400, "UnknownOperationException", "X-Amz-Target names no ACMPrivateCA operation"})
		return
	}
	f.mu.Lock()
	f.calls[op]++
	f.inputs[op] = body
	injected, fails := f.fail[op]
	lose := f.lose[op]
	f.lose[op] = false
	f.mu.Unlock()
	if fails {
		writeError(w, injected)
		return
	}
	var (
		out  any
		ferr *fakeError
	)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	switch op {
	case "IssueCertificate":
		var in issueInput
		if err := dec.Decode(&in); err != nil {
			ferr = clientError("SerializationException", "%v", err)
			break
		}
		out, ferr = f.issue(&in)
	case "GetCertificate":
		var in struct{ CertificateArn, CertificateAuthorityArn string }
		if err := dec.Decode(&in); err != nil {
			ferr = clientError("SerializationException", "%v", err)
			break
		}
		out, ferr = f.get(in.CertificateAuthorityArn, in.CertificateArn)
	case "DescribeCertificateAuthority":
		var in struct{ CertificateAuthorityArn string }
		if err := dec.Decode(&in); err != nil {
			ferr = clientError("SerializationException", "%v", err)
			break
		}
		out, ferr = f.describe(in.CertificateAuthorityArn)
	case "GetCertificateAuthorityCertificate":
		var in struct{ CertificateAuthorityArn string }
		if err := dec.Decode(&in); err != nil {
			ferr = clientError("SerializationException", "%v", err)
			break
		}
		if ferr = f.checkCA(in.CertificateAuthorityArn); ferr == nil {
			out = map[string]string{"Certificate": pemOf(f.ca.Cert.Raw), "CertificateChain": pemOf(f.root.Cert.Raw)}
		}
	case "RevokeCertificate":
		var in struct{ CertificateAuthorityArn, CertificateSerial, RevocationReason string }
		if err := dec.Decode(&in); err != nil {
			ferr = clientError("SerializationException", "%v", err)
			break
		}
		out, ferr = f.revoke(in.CertificateAuthorityArn, in.CertificateSerial, in.RevocationReason)
	default:
		ferr = clientError("UnknownOperationException", "unknown operation %s", op)
	}
	if ferr != nil {
		writeError(w, *ferr)
		return
	}
	if op == "IssueCertificate" {
		var in struct{ IdempotencyToken string }
		_ = json.Unmarshal(body, &in)
		f.mu.Lock()
		f.tokenCalls[in.IdempotencyToken]++
		first := f.tokenCalls[in.IdempotencyToken] == 1
		lose = lose || (first && f.loseFirstAnswers)
		hang := first && f.hangAfterIssue
		f.mu.Unlock()
		if hang {
			<-r.Context().Done() // issued, never answered: the caller gives up first
			return
		}
	}
	if lose {
		writeError(w, fakeError{500, "InternalFailure", "the connection was reset"})
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(out)
}

type issueInput struct {
	CertificateAuthorityArn string
	Csr                     []byte // base64 on the wire
	SigningAlgorithm        string
	Validity                *struct {
		Type  string
		Value *int64
	}
	IdempotencyToken string
	TemplateArn      string
	ApiPassthrough   json.RawMessage
}

var (
	tokenRE   = regexp.MustCompile(`^[\t\n\r\x20-\xFF]{1,36}$`)
	templates = map[string]bool{
		"arn:aws:acm-pca:::template/EndEntityCertificate/V1":           true,
		"arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1": true,
		"arn:aws:acm-pca:::template/EndEntityServerAuthCertificate/V1": true,
	}
)

func (f *fakePCA) checkCA(arn string) *fakeError {
	if arn != f.arn {
		return clientError("ResourceNotFoundException", "Could not find certificate authority %s.", arn)
	}
	return nil
}

func (f *fakePCA) issue(in *issueInput) (any, *fakeError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkCA(in.CertificateAuthorityArn); e != nil {
		return nil, e
	}
	if f.status != "ACTIVE" {
		return nil, clientError("InvalidStateException", "The certificate authority is not in a valid state for issuing certificates.")
	}
	if in.IdempotencyToken != "" {
		if !tokenRE.MatchString(in.IdempotencyToken) {
			return nil, clientError("ValidationException", "1 validation error detected: Value at 'idempotencyToken' failed to satisfy constraint")
		}
		if u, ok := f.tokens[in.IdempotencyToken]; ok && f.clock.Sub(u.at) < 5*time.Minute {
			return map[string]string{"CertificateArn": u.arn}, nil
		}
	}
	block, _ := pem.Decode(in.Csr)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, clientError("MalformedCSRException", "The certificate signing request is invalid.")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		return nil, clientError("MalformedCSRException", "The certificate signing request is invalid.")
	}
	family := map[string]string{"SHA256WITHRSA": "RSA", "SHA384WITHRSA": "RSA", "SHA512WITHRSA": "RSA",
		"SHA256WITHECDSA": "EC", "SHA384WITHECDSA": "EC", "SHA512WITHECDSA": "EC"}[in.SigningAlgorithm]
	if family == "" || !strings.HasPrefix(f.keyAlg, family) {
		return nil, clientError("InvalidArgsException", "Signing algorithm %q does not match the certificate authority key algorithm %s", in.SigningAlgorithm, f.keyAlg)
	}
	if in.Validity == nil || in.Validity.Value == nil {
		return nil, clientError("ValidationException", "1 validation error detected: Value null at 'validity' failed to satisfy constraint: Member must not be null")
	}
	now := time.Now()
	var notAfter time.Time
	switch in.Validity.Type {
	case "DAYS":
		if *in.Validity.Value < 1 {
			return nil, clientError("InvalidArgsException", "validity must be at least one day")
		}
		notAfter = now.AddDate(0, 0, int(*in.Validity.Value))
	case "ABSOLUTE":
		notAfter = time.Unix(*in.Validity.Value, 0)
		if !notAfter.After(now) {
			return nil, clientError("InvalidArgsException", "The validity end is in the past")
		}
	default:
		return nil, clientError("InvalidArgsException", "unsupported validity type %q", in.Validity.Type)
	}
	if notAfter.After(f.ca.Cert.NotAfter) {
		return nil, clientError("InvalidArgsException", "The certificate validity specified exceeds the certificate authority validity")
	}
	template := in.TemplateArn
	if template == "" {
		template = "arn:aws:acm-pca:::template/EndEntityCertificate/V1"
	}
	if !templates[template] {
		return nil, clientError("InvalidArgsException", "The template %s is not supported", template)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	serial.Add(serial, big.NewInt(1))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: csr.Subject, NotBefore: now.Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	switch {
	case strings.Contains(template, "/EndEntityCertificate/"):
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	case strings.Contains(template, "/EndEntityServerAuthCertificate/"):
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, ext := range csr.Extensions {
		if ext.Id.Equal([]int{2, 5, 29, 17}) { // the CSR's SANs pass through
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
		}
	}
	arn := f.arn + "/certificate/" + hex.EncodeToString(serial.Bytes())
	c := &fakeCert{serial: serial, tmpl: tmpl, pub: csr.PublicKey, token: in.IdempotencyToken}
	if !f.hold && f.holdCalls == 0 {
		if e := f.sign(c); e != nil {
			return nil, e
		}
	}
	f.certs[arn] = c
	if in.IdempotencyToken != "" {
		f.tokens[in.IdempotencyToken] = tokenUse{arn: arn, at: f.clock}
	}
	return map[string]string{"CertificateArn": arn}, nil
}

func (f *fakePCA) sign(c *fakeCert) *fakeError {
	der, err := x509.CreateCertificate(rand.Reader, c.tmpl, f.ca.Cert, c.pub, f.ca.Key)
	if err != nil {
		return &fakeError{500, "InternalFailure", err.Error()}
	}
	c.der = der
	f.minted++
	f.mintedFor[c.token]++
	return nil
}

// approve signs every held request and stops holding.
func (f *fakePCA) approve(t testing.TB) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = false
	for _, c := range f.certs {
		if c.der == nil {
			if e := f.sign(c); e != nil {
				t.Fatal(e.msg)
			}
		}
	}
}

func (f *fakePCA) get(caArn, certArn string) (any, *fakeError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkCA(caArn); e != nil {
		return nil, e
	}
	c, ok := f.certs[certArn]
	if !ok || !strings.HasPrefix(certArn, caArn+"/certificate/") {
		return nil, clientError("ResourceNotFoundException", "Could not find certificate %s.", certArn)
	}
	if c.der == nil && !f.hold && c.asked >= f.holdCalls {
		if e := f.sign(c); e != nil {
			return nil, e
		}
	}
	if c.der == nil {
		c.asked++
		return nil, clientError("RequestInProgressException", "The request to issue certificate %s is still in progress.", certArn)
	}
	return map[string]string{"Certificate": pemOf(c.der), "CertificateChain": pemOf(f.ca.Cert.Raw) + pemOf(f.root.Cert.Raw)}, nil
}

func (f *fakePCA) describe(arn string) (any, *fakeError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkCA(arn); e != nil {
		return nil, e
	}
	return map[string]any{"CertificateAuthority": map[string]any{
		"Arn": f.arn, "Status": f.status, "Type": "SUBORDINATE", "UsageMode": "GENERAL_PURPOSE",
		"CertificateAuthorityConfiguration": map[string]any{
			"KeyAlgorithm": f.keyAlg, "SigningAlgorithm": f.sigAlg,
			"Subject": map[string]string{"CommonName": f.ca.Cert.Subject.CommonName},
		},
	}}, nil
}

var revocationReasons = map[string]bool{"UNSPECIFIED": true, "KEY_COMPROMISE": true, "CERTIFICATE_AUTHORITY_COMPROMISE": true,
	"AFFILIATION_CHANGED": true, "SUPERSEDED": true, "CESSATION_OF_OPERATION": true, "PRIVILEGE_WITHDRAWN": true, "A_A_COMPROMISE": true}

func (f *fakePCA) revoke(caArn, serialHex, reason string) (any, *fakeError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkCA(caArn); e != nil {
		return nil, e
	}
	if !revocationReasons[reason] {
		return nil, clientError("ValidationException", "1 validation error detected: Value '%s' at 'revocationReason' failed to satisfy constraint", reason)
	}
	serial, ok := new(big.Int).SetString(strings.ReplaceAll(serialHex, ":", ""), 16)
	if !ok {
		return nil, clientError("InvalidArgsException", "The certificate serial %q is not hexadecimal", serialHex)
	}
	for arn, c := range f.certs {
		if c.serial.Cmp(serial) != 0 {
			continue
		}
		if _, done := f.revoked[arn]; done {
			return nil, clientError("RequestAlreadyProcessedException", "Certificate %s has already been revoked.", serialHex)
		}
		f.revoked[arn] = reason
		return struct{}{}, nil
	}
	return nil, clientError("ResourceNotFoundException", "Could not find certificate with serial %s.", serialHex)
}

// revocation says whether the fake holds cert revoked, and the PCA reason.
func (f *fakePCA) revocation(cert *x509.Certificate) (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for arn, c := range f.certs {
		if c.der != nil && bytes.Equal(c.der, cert.Raw) {
			reason, ok := f.revoked[arn]
			return ok, reason
		}
	}
	return false, ""
}

func pemOf(der []byte) string {
	return string(pemutil.EncodeCertificateDER(der))
}
