// Package standin is a minimal stand-in for the adapter's enrollment API, for tests of the
// reference client (extension.Enroll, certprov-emulator va-enroll) that run without the adapter.
// Only tests import it.
package standin

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

	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// Profile is one enrollment profile of the Adapter.
type Profile struct {
	APIVersion string // vagoogle.V1 or vagoogle.V2
	Domain     string // the expected identity of machine keys
}

// Adapter is a minimal stand-in for the adapter's enrollment API
// (docs/verified-access-api.md, section 2), written to the contract so that the reference client
// (Enroll, certprov-emulator va-enroll) can be tested without the adapter. It calls the Verified
// Access API at GoogleURL with the generated clients, checks the SPKAC, applies a trivial policy
// (Deny) and issues with an in-memory CA. It is a test double, not the adapter: no configuration,
// no templates, no real policy.
type Adapter struct {
	GoogleURL string // base URL of the Verified Access API (the emulator)
	CACert    *x509.Certificate
	CAKey     crypto.Signer
	Profiles  map[string]Profile

	// Deny, when not empty, refuses every enrollment that Google verified with 403 POLICY_DENIED
	// listing these rules.
	Deny []string
	// Policy, when set, returns the rules the verified device fails (v1 reports only
	// devicePermanentId, deviceEnrollmentId and attestedDeviceId); any makes it POLICY_DENIED.
	Policy func(vagoogle.Device) []string
	// IssueForOtherKey issues for a fresh key instead of the SPKAC's, so that clients' key checks
	// can be tested.
	IssueForOtherKey bool

	mu   sync.Mutex
	seen map[string]bool // sha256 of the challenge responses already presented
	v1   *va1.Service
	v2   *va2.Service
}

// Handler serves POST /v1/verifiedaccess/challenge and POST /v1/verifiedaccess/enroll.
func (f *Adapter) Handler(ctx context.Context) (http.Handler, error) {
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
	mux.HandleFunc("POST "+wire.ChallengePath, f.challenge)
	mux.HandleFunc("POST "+wire.EnrollPath, f.enroll)
	return mux, nil
}

// enrollError is one of the contract's error answers.
type enrollError struct {
	status      int
	code        wire.Code
	msg         string
	failedRules []string
}

func fakeErr(status int, code wire.Code, format string, args ...any) *enrollError {
	return &enrollError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func writeEnrollError(w http.ResponseWriter, e *enrollError) {
	var body wire.ErrorBody
	body.Error.Code, body.Error.Message, body.Error.FailedRules = e.code, e.msg, e.failedRules
	writeJSON(w, e.status, body)
}

func decodeStrict(w http.ResponseWriter, r *http.Request, v any) *enrollError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fakeErr(400, wire.CodeBadRequest, "malformed JSON: %v", err)
	}
	return nil
}

func (f *Adapter) profile(name string) (Profile, *enrollError) {
	if name == "" {
		return Profile{}, fakeErr(400, wire.CodeBadRequest, "profile is required")
	}
	p, ok := f.Profiles[name]
	if !ok {
		return Profile{}, fakeErr(404, wire.CodeUnknownProfile, "no enrollment profile %q", name)
	}
	return p, nil
}

func (f *Adapter) challenge(w http.ResponseWriter, r *http.Request) {
	var req wire.ChallengeRequest
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
	case vagoogle.V1:
		c, err := f.v1.Challenge.Create(&va1.Empty{}).Context(r.Context()).Do()
		if err != nil || c.Challenge == nil {
			writeEnrollError(w, fakeErr(503, wire.CodeUnavailable, "Google Verified Access could not be reached"))
			return
		}
		data, err1 := base64.StdEncoding.DecodeString(c.Challenge.Data)
		sig, err2 := base64.StdEncoding.DecodeString(c.Challenge.Signature)
		if err1 != nil || err2 != nil {
			writeEnrollError(w, fakeErr(503, wire.CodeUnavailable, "Google sent an undecodable challenge"))
			return
		}
		challenge = wire.MarshalSignedData(data, sig)
	default:
		c, err := f.v2.Challenge.Generate(&va2.Empty{}).Context(r.Context()).Do()
		if err != nil {
			writeEnrollError(w, fakeErr(503, wire.CodeUnavailable, "Google Verified Access could not be reached"))
			return
		}
		if challenge, err = base64.StdEncoding.DecodeString(c.Challenge); err != nil {
			writeEnrollError(w, fakeErr(503, wire.CodeUnavailable, "Google sent an undecodable challenge"))
			return
		}
	}
	writeJSON(w, http.StatusOK, wire.ChallengeResponse{Challenge: base64.StdEncoding.EncodeToString(challenge),
		APIVersion: p.APIVersion, ExpiresInSeconds: int(vagoogle.DefaultChallengeLifetime / time.Second)})
}

func (f *Adapter) enroll(w http.ResponseWriter, r *http.Request) {
	cert, e := f.doEnroll(w, r)
	if e != nil {
		writeEnrollError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, wire.EnrollResponse{Certificate: string(pemutil.Encode(cert)),
		Chain: []string{string(pemutil.Encode(f.CACert))}})
}

func (f *Adapter) doEnroll(w http.ResponseWriter, r *http.Request) (*x509.Certificate, *enrollError) {
	var req wire.EnrollRequest
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
		return nil, fakeErr(400, wire.CodeBadRequest, "challengeResponse is required")
	case req.Scope == vagoogle.ScopeUser && req.Identity == "":
		return nil, fakeErr(400, wire.CodeBadRequest, "identity is required for user scope")
	case req.Scope == vagoogle.ScopeUser:
		expected = req.Identity
	case req.Scope != vagoogle.ScopeMachine:
		return nil, fakeErr(400, wire.CodeBadRequest, "scope %q: want machine or user", req.Scope)
	}
	response, err := base64.StdEncoding.DecodeString(req.ChallengeResponse)
	if err != nil {
		return nil, fakeErr(400, wire.CodeBadRequest, "challengeResponse is not base64")
	}
	sum := sha256.Sum256(response)
	f.mu.Lock()
	replayed := f.seen[hex.EncodeToString(sum[:])]
	f.seen[hex.EncodeToString(sum[:])] = true
	f.mu.Unlock()
	if replayed {
		return nil, fakeErr(409, wire.CodeChallengeReplayed, "challenge response already used")
	}

	var spkacB64 string
	var device vagoogle.Device
	switch p.APIVersion {
	case vagoogle.V1:
		data, sig, err := wire.UnmarshalSignedData(response)
		if err != nil {
			return nil, fakeErr(400, wire.CodeBadChallenge, "challenge response is not a SignedData")
		}
		res, err := f.v1.Challenge.Verify(&va1.VerifyChallengeResponseRequest{
			ChallengeResponse: &va1.SignedData{Data: base64.StdEncoding.EncodeToString(data), Signature: base64.StdEncoding.EncodeToString(sig)},
			ExpectedIdentity:  expected,
		}).Context(r.Context()).Do()
		if err != nil {
			return nil, googleRefusal(err)
		}
		spkacB64 = res.SignedPublicKeyAndChallenge
		device = vagoogle.Device{DevicePermanentID: res.DevicePermanentId, DeviceEnrollmentID: res.DeviceEnrollmentId,
			AttestedDeviceID: res.AttestedDeviceId}
	default:
		res, err := f.v2.Challenge.Verify(&va2.VerifyChallengeResponseRequest{
			ChallengeResponse: req.ChallengeResponse, ExpectedIdentity: expected,
		}).Context(r.Context()).Do()
		if err != nil {
			return nil, googleRefusal(err)
		}
		spkacB64 = res.SignedPublicKeyAndChallenge
		device = vagoogle.Device{DevicePermanentID: res.DevicePermanentId, DeviceEnrollmentID: res.DeviceEnrollmentId,
			AttestedDeviceID: res.AttestedDeviceId, CustomerID: res.CustomerId, VirtualDeviceID: res.VirtualDeviceId,
			KeyTrustLevel: res.KeyTrustLevel, DeviceSignals: res.DeviceSignals,
			ProfileCustomerID: res.ProfileCustomerId, VirtualProfileID: res.VirtualProfileId,
			ProfilePermanentID: res.ProfilePermanentId, ProfileKeyTrustLevel: res.ProfileKeyTrustLevel}
	}
	der, err := frontend.DecodeBase64(spkacB64)
	if err != nil {
		return nil, fakeErr(400, wire.CodeBadChallenge, "the signed public key is not base64")
	}
	spkac, err := verifiedaccess.ParseSPKAC(der)
	if err != nil {
		return nil, fakeErr(400, wire.CodeBadChallenge, "the signed public key does not verify")
	}
	failed := append([]string(nil), f.Deny...)
	if f.Policy != nil {
		failed = append(failed, f.Policy(device)...)
	}
	if len(failed) > 0 {
		e := fakeErr(403, wire.CodePolicyDenied, "the device does not satisfy the profile's policy")
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
			return nil, fakeErr(502, wire.CodeCAFailure, "the CA could not issue")
		}
		pub = k.Public()
	}
	cert, err := f.issue(pub, subject)
	if err != nil {
		return nil, fakeErr(502, wire.CodeCAFailure, "the CA could not issue")
	}
	return cert, nil
}

// googleRefusal maps a Verified Access error to the contract's codes by its HTTP status, as the
// contract page fixes: 400 is a refused answer, 401/403/404 the adapter's configuration, the rest
// (and no answer) Google being unavailable.
func googleRefusal(err error) *enrollError {
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		return fakeErr(503, wire.CodeUnavailable, "Google Verified Access could not be reached")
	}
	switch gerr.Code {
	case 400:
		return fakeErr(400, wire.CodeBadChallenge, "Google refused the challenge response")
	case 401, 403, 404:
		return fakeErr(500, wire.CodeMisconfigured, "Google refused the adapter")
	default:
		return fakeErr(503, wire.CodeUnavailable, "Google Verified Access is unavailable")
	}
}

func (f *Adapter) issue(pub crypto.PublicKey, cn string) (*x509.Certificate, error) {
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

// maxBody bounds a request body, as the adapter does.
const maxBody = 64 << 10

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
