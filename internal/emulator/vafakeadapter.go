package emulator

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	va1 "google.golang.org/api/verifiedaccess/v1"
	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// VAFakeProfile is one enrollment profile of the VAFakeAdapter.
type VAFakeProfile struct {
	APIVersion string // VAv1 or VAv2
	Domain     string // the expected identity of machine keys
}

// VAFakeAdapter is a minimal stand-in for the adapter's enrollment API
// (docs/verified-access-api.md, section 2), written to the contract so that the reference client
// (Enroll, certprov-emulator va-enroll) can be tested without the adapter. It calls the Verified
// Access API at GoogleURL with the generated clients, checks the SPKAC, applies a trivial policy
// (Deny) and issues with an in-memory CA. It is a test double, not the adapter: no configuration,
// no templates, no real policy.
type VAFakeAdapter struct {
	GoogleURL string // base URL of the Verified Access API (the emulator)
	CACert    *x509.Certificate
	CAKey     crypto.Signer
	Profiles  map[string]VAFakeProfile

	// Deny, when not empty, refuses every enrollment that Google verified with 403 POLICY_DENIED
	// listing these rules.
	Deny []string
	// Policy, when set, returns the rules the verified device fails (v1 reports only
	// devicePermanentId, deviceEnrollmentId and attestedDeviceId); any makes it POLICY_DENIED.
	Policy func(VADevice) []string
	// IssueForOtherKey issues for a fresh key instead of the SPKAC's, so that clients' key checks
	// can be tested.
	IssueForOtherKey bool

	mu   sync.Mutex
	seen map[string]bool // sha256 of the challenge responses already presented
	v1   *va1.Service
	v2   *va2.Service
}

// Handler serves POST /v1/verifiedaccess/challenge and POST /v1/verifiedaccess/enroll.
func (f *VAFakeAdapter) Handler(ctx context.Context) (http.Handler, error) {
	opts := []option.ClientOption{option.WithEndpoint(strings.TrimRight(f.GoogleURL, "/") + "/"),
		option.WithoutAuthentication()}
	var err error
	if f.v1, err = va1.NewService(ctx, opts...); err != nil {
		return nil, fmt.Errorf("fake adapter: verified access v1 client: %w", err)
	}
	if f.v2, err = va2.NewService(ctx, opts...); err != nil {
		return nil, fmt.Errorf("fake adapter: verified access v2 client: %w", err)
	}
	f.seen = map[string]bool{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+EnrollChallengePath, f.challenge)
	mux.HandleFunc("POST "+EnrollPath, f.enroll)
	return mux, nil
}

// enrollError is one of the contract's error answers.
type enrollError struct {
	status      int
	code, msg   string
	failedRules []string
}

func fakeErr(status int, code, format string, args ...any) *enrollError {
	return &enrollError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func writeEnrollError(w http.ResponseWriter, e *enrollError) {
	var body EnrollErrorBody
	body.Error.Code, body.Error.Message, body.Error.FailedRules = e.code, e.msg, e.failedRules
	writeJSON(w, e.status, body)
}

func decodeStrict(w http.ResponseWriter, r *http.Request, v any) *enrollError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fakeErr(400, EnrollCodeBadRequest, "malformed JSON: %v", err)
	}
	return nil
}

func (f *VAFakeAdapter) profile(name string) (VAFakeProfile, *enrollError) {
	if name == "" {
		return VAFakeProfile{}, fakeErr(400, EnrollCodeBadRequest, "profile is required")
	}
	p, ok := f.Profiles[name]
	if !ok {
		return VAFakeProfile{}, fakeErr(404, EnrollCodeUnknownProfile, "no enrollment profile %q", name)
	}
	return p, nil
}

func (f *VAFakeAdapter) challenge(w http.ResponseWriter, r *http.Request) {
	var req EnrollChallengeRequest
	if e := decodeStrict(w, r, &req); e != nil {
		writeEnrollError(w, e)
		return
	}
	p, e := f.profile(req.Profile)
	if e != nil {
		writeEnrollError(w, e)
		return
	}
	var challenge []byte
	switch p.APIVersion {
	case VAv1:
		c, err := f.v1.Challenge.Create(&va1.Empty{}).Context(r.Context()).Do()
		if err != nil || c.Challenge == nil {
			writeEnrollError(w, fakeErr(503, EnrollCodeUnavailable, "Google Verified Access could not be reached"))
			return
		}
		data, err1 := base64.StdEncoding.DecodeString(c.Challenge.Data)
		sig, err2 := base64.StdEncoding.DecodeString(c.Challenge.Signature)
		if err1 != nil || err2 != nil {
			writeEnrollError(w, fakeErr(503, EnrollCodeUnavailable, "Google sent an undecodable challenge"))
			return
		}
		challenge = MarshalSignedData(data, sig)
	default:
		c, err := f.v2.Challenge.Generate(&va2.Empty{}).Context(r.Context()).Do()
		if err != nil {
			writeEnrollError(w, fakeErr(503, EnrollCodeUnavailable, "Google Verified Access could not be reached"))
			return
		}
		if challenge, err = base64.StdEncoding.DecodeString(c.Challenge); err != nil {
			writeEnrollError(w, fakeErr(503, EnrollCodeUnavailable, "Google sent an undecodable challenge"))
			return
		}
	}
	writeJSON(w, http.StatusOK, EnrollChallengeResponse{Challenge: base64.StdEncoding.EncodeToString(challenge),
		APIVersion: p.APIVersion, ExpiresInSeconds: int(DefaultVAChallengeLifetime / time.Second)})
}

func (f *VAFakeAdapter) enroll(w http.ResponseWriter, r *http.Request) {
	cert, e := f.doEnroll(w, r)
	if e != nil {
		writeEnrollError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, EnrollResponse{Certificate: string(pemutil.Encode(cert)),
		Chain: []string{string(pemutil.Encode(f.CACert))}})
}

func (f *VAFakeAdapter) doEnroll(w http.ResponseWriter, r *http.Request) (*x509.Certificate, *enrollError) {
	var req EnrollRequest
	if e := decodeStrict(w, r, &req); e != nil {
		return nil, e
	}
	p, e := f.profile(req.Profile)
	if e != nil {
		return nil, e
	}
	expected := p.Domain
	switch {
	case req.ChallengeResponse == "":
		return nil, fakeErr(400, EnrollCodeBadRequest, "challengeResponse is required")
	case req.Scope == VAScopeUser && req.Identity == "":
		return nil, fakeErr(400, EnrollCodeBadRequest, "identity is required for user scope")
	case req.Scope == VAScopeUser:
		expected = req.Identity
	case req.Scope != VAScopeMachine:
		return nil, fakeErr(400, EnrollCodeBadRequest, "scope %q: want machine or user", req.Scope)
	}
	response, err := base64.StdEncoding.DecodeString(req.ChallengeResponse)
	if err != nil {
		return nil, fakeErr(400, EnrollCodeBadRequest, "challengeResponse is not base64")
	}
	sum := sha256.Sum256(response)
	f.mu.Lock()
	replayed := f.seen[hex.EncodeToString(sum[:])]
	f.seen[hex.EncodeToString(sum[:])] = true
	f.mu.Unlock()
	if replayed {
		return nil, fakeErr(409, EnrollCodeChallengeReplayed, "challenge response already used")
	}

	var spkacB64 string
	var device VADevice
	switch p.APIVersion {
	case VAv1:
		data, sig, err := UnmarshalSignedData(response)
		if err != nil {
			return nil, fakeErr(400, EnrollCodeBadChallenge, "challenge response is not a SignedData")
		}
		res, err := f.v1.Challenge.Verify(&va1.VerifyChallengeResponseRequest{
			ChallengeResponse: &va1.SignedData{Data: b64(data), Signature: b64(sig)},
			ExpectedIdentity:  expected,
		}).Context(r.Context()).Do()
		if err != nil {
			return nil, googleRefusal(err)
		}
		spkacB64 = res.SignedPublicKeyAndChallenge
		device = VADevice{DevicePermanentID: res.DevicePermanentId, DeviceEnrollmentID: res.DeviceEnrollmentId,
			AttestedDeviceID: res.AttestedDeviceId}
	default:
		res, err := f.v2.Challenge.Verify(&va2.VerifyChallengeResponseRequest{
			ChallengeResponse: req.ChallengeResponse, ExpectedIdentity: expected,
		}).Context(r.Context()).Do()
		if err != nil {
			return nil, googleRefusal(err)
		}
		spkacB64 = res.SignedPublicKeyAndChallenge
		device = VADevice{DevicePermanentID: res.DevicePermanentId, DeviceEnrollmentID: res.DeviceEnrollmentId,
			AttestedDeviceID: res.AttestedDeviceId, CustomerID: res.CustomerId, VirtualDeviceID: res.VirtualDeviceId,
			KeyTrustLevel: res.KeyTrustLevel, DeviceSignals: res.DeviceSignals,
			ProfileCustomerID: res.ProfileCustomerId, VirtualProfileID: res.VirtualProfileId,
			ProfilePermanentID: res.ProfilePermanentId, ProfileKeyTrustLevel: res.ProfileKeyTrustLevel}
	}
	spkac, err := ParseSPKAC(spkacB64)
	if err != nil {
		return nil, fakeErr(400, EnrollCodeBadChallenge, "the signed public key does not verify")
	}
	failed := append([]string(nil), f.Deny...)
	if f.Policy != nil {
		failed = append(failed, f.Policy(device)...)
	}
	if len(failed) > 0 {
		e := fakeErr(403, EnrollCodePolicyDenied, "the device does not satisfy the profile's policy")
		e.failedRules = failed
		return nil, e
	}
	subject := device.DevicePermanentID
	if subject == "" {
		subject = expected
	}
	pub := spkac.PublicKey
	if f.IssueForOtherKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fakeErr(502, EnrollCodeCAFailure, "the CA could not issue")
		}
		pub = k.Public()
	}
	cert, err := f.issue(pub, subject)
	if err != nil {
		return nil, fakeErr(502, EnrollCodeCAFailure, "the CA could not issue")
	}
	return cert, nil
}

// googleRefusal maps a Verified Access error to the contract's codes by its HTTP status, as the
// contract page fixes: 400 is a refused answer, 401/403/404 the adapter's configuration, the rest
// (and no answer) Google being unavailable.
func googleRefusal(err error) *enrollError {
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		return fakeErr(503, EnrollCodeUnavailable, "Google Verified Access could not be reached")
	}
	switch gerr.Code {
	case 400:
		return fakeErr(400, EnrollCodeBadChallenge, "Google refused the challenge response")
	case 401, 403, 404:
		return fakeErr(500, EnrollCodeMisconfigured, "Google refused the adapter")
	default:
		return fakeErr(503, EnrollCodeUnavailable, "Google Verified Access is unavailable")
	}
}

func (f *VAFakeAdapter) issue(pub crypto.PublicKey, cn string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, f.CACert, pub, f.CAKey)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	return x509.ParseCertificate(der)
}
