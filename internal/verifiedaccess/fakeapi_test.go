package verifiedaccess

import (
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	va1 "google.golang.org/api/verifiedaccess/v1"
	va2 "google.golang.org/api/verifiedaccess/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// fakeAPI is an httptest stand-in for Google's Verified Access REST API, for unit tests: it
// hands out random challenges and answers challenge:verify from answers the test registered
// (through fakeDevice.respond), in the Google error envelope when told to fail. The end-to-end
// tests use the real emulator instead.
type fakeAPI struct {
	srv *httptest.Server

	mu         sync.Mutex
	answers    map[string]*fakeAnswer // by hex of the response key
	challenges map[string]int         // by API version
	verifies   map[string]int         // by API version
	identities []string               // expectedIdentity of each verify
	failNext   []fakeFailure          // answers for the next calls, any method
}

// fakeAnswer is what verify says about one response.
type fakeAnswer struct {
	identity string // the enrolled identity; a different expectedIdentity is a mismatch
	result   map[string]any
	fail     *fakeFailure
}

type fakeFailure struct {
	status  int
	message string
	// retryAfter, when set, is sent as the Retry-After header.
	retryAfter string
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{answers: map[string]*fakeAnswer{}, challenges: map[string]int{}, verifies: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/challenge", func(w http.ResponseWriter, r *http.Request) {
		if f.injected(w) {
			return
		}
		data := randomBytes(t, 32)
		f.count(f.challenges, "v1")
		writeGoogle(w, http.StatusOK, va1.Challenge{Challenge: &va1.SignedData{
			Data: base64.StdEncoding.EncodeToString(data), Signature: base64.StdEncoding.EncodeToString([]byte("google-sig")),
		}})
	})
	mux.HandleFunc("POST /v2/challenge:generate", func(w http.ResponseWriter, r *http.Request) {
		if f.injected(w) {
			return
		}
		f.count(f.challenges, "v2")
		writeGoogle(w, http.StatusOK, va2.Challenge{Challenge: base64.StdEncoding.EncodeToString(
			wire.MarshalSignedData(randomBytes(t, 32), []byte("google-sig")))})
	})
	mux.HandleFunc("POST /v1/challenge:verify", func(w http.ResponseWriter, r *http.Request) {
		var req va1.VerifyChallengeResponseRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.ChallengeResponse == nil {
			writeGoogleError(w, http.StatusBadRequest, "malformed request")
			return
		}
		data, _ := base64.StdEncoding.DecodeString(req.ChallengeResponse.Data)
		f.verify(w, "v1", data, req.ExpectedIdentity)
	})
	mux.HandleFunc("POST /v2/challenge:verify", func(w http.ResponseWriter, r *http.Request) {
		var req va2.VerifyChallengeResponseRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeGoogleError(w, http.StatusBadRequest, "malformed request")
			return
		}
		resp, _ := base64.StdEncoding.DecodeString(req.ChallengeResponse)
		f.verify(w, "v2", resp, req.ExpectedIdentity)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) count(m map[string]int, version string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m[version]++
}

// injected answers with the next queued failure, if any.
func (f *fakeAPI) injected(w http.ResponseWriter) bool {
	f.mu.Lock()
	if len(f.failNext) == 0 {
		f.mu.Unlock()
		return false
	}
	fl := f.failNext[0]
	f.failNext = f.failNext[1:]
	f.mu.Unlock()
	writeGoogleFailure(w, fl)
	return true
}

func (f *fakeAPI) failNextCall(status int, message string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = append(f.failNext, fakeFailure{status: status, message: message})
}

func (f *fakeAPI) verify(w http.ResponseWriter, version string, key []byte, expected string) {
	f.mu.Lock()
	f.verifies[version]++
	f.identities = append(f.identities, expected)
	a := f.answers[version+hex.EncodeToString(key)]
	f.mu.Unlock()
	if f.injected(w) {
		return
	}
	switch {
	case a == nil:
		writeGoogleError(w, http.StatusBadRequest, "invalid challenge response: unknown")
	case a.fail != nil:
		writeGoogleFailure(w, *a.fail)
	case !strings.EqualFold(a.identity, expected):
		writeGoogleError(w, http.StatusBadRequest, "identity mismatch: the key does not belong to the expected identity")
	default:
		writeGoogle(w, http.StatusOK, a.result)
	}
}

func (f *fakeAPI) verifyCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.verifies["v1"] + f.verifies["v2"]
}

func writeGoogle(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeGoogleError(w http.ResponseWriter, status int, message string) {
	writeGoogleFailure(w, fakeFailure{status: status, message: message})
}

// writeGoogleFailure answers in Google's error envelope (AIP-193): code, message, status and,
// for the platform's own refusals, an ErrorInfo with the reason.
func writeGoogleFailure(w http.ResponseWriter, f fakeFailure) {
	statusText := map[int]string{400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
		404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}[f.status]
	details := []any{}
	if reason := map[int]string{403: "SERVICE_DISABLED", 429: "RATE_LIMIT_EXCEEDED"}[f.status]; reason != "" {
		details = append(details, map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
			"domain": "googleapis.com", "metadata": map[string]string{"service": "verifiedaccess.googleapis.com"}})
	}
	if f.retryAfter != "" {
		w.Header().Set("Retry-After", f.retryAfter)
	}
	writeGoogle(w, f.status, map[string]any{"error": map[string]any{"code": f.status, "message": f.message, "status": statusText, "details": details}})
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeDevice is the Chrome side for unit tests: a key that answers challenges as ChromeOS does.
type fakeDevice struct {
	key      crypto.Signer
	identity string         // what the device or user is enrolled as
	result   map[string]any // verify result fields besides the SPKAC; nil = a healthy ChromeOS device
	// spkac varies the SPKAC; the key is filled in, and an empty challenge is ChromeOS's (the
	// hex of 32 random bytes) with NULL parameters.
	spkac   spkacSpec
	noSPKAC bool
	fail    *fakeFailure
	// unregistered answers without telling the fake API, which then refuses the answer as
	// Google refuses one it cannot verify.
	unregistered bool
}

// healthyDevice is what verify reports for a managed ChromeOS device that passes strict policies.
func healthyDevice() map[string]any {
	return map[string]any{
		"devicePermanentId": "5CD0001", "deviceEnrollmentId": "enr-1", "attestedDeviceId": "5CD0001",
		"customerId": "C0abc123", "keyTrustLevel": "CHROME_OS_VERIFIED_MODE", "virtualDeviceId": "vd-1",
		"deviceSignals": map[string]any{
			"serialNumber": "5CD0001", "hostname": "chromebook-1", "operatingSystem": "CHROME_OS",
			"osVersion": "15183.69.3", "browserVersion": "120.0.6099.235",
			"diskEncryption": "DISK_ENCRYPTION_ENCRYPTED", "osFirewall": "OS_FIREWALL_ENABLED",
			"screenLockSecured": "SCREEN_LOCK_SECURED_ENABLED", "safeBrowsingProtectionLevel": "STANDARD",
			"deviceEnrollmentDomain": "example.com", "siteIsolationEnabled": true,
		},
	}
}

// respond answers a challenge (base64, as the adapter handed it out) for API version and returns
// the challenge response in base64, registering with the fake API what verify must say.
func (d *fakeDevice) respond(t *testing.T, api *fakeAPI, challengeB64, version string) string {
	t.Helper()
	chBytes, err := base64.StdEncoding.DecodeString(challengeB64)
	if err != nil {
		t.Fatalf("challenge is not base64: %v", err)
	}
	if _, _, err := wire.UnmarshalSignedData(chBytes); err != nil {
		t.Fatalf("challenge is not a SignedData: %v", err)
	}
	// ChallengeResponse{challenge = 1, nonce = 2, encrypted_key_info = 3}: the key info (with
	// the SPKAC) is for Google only, so random bytes stand for it here.
	payload := marshalChallengeResponse(chBytes, randomBytes(t, 32), randomBytes(t, 96))
	response := wire.MarshalSignedData(payload, []byte("device-signature"))
	key := response // v2 sends the bytes as they are
	if version == "v1" {
		key = payload // v1 sends data and signature separately
	}
	spec := d.spkac
	spec.key = d.key
	if spec.challenge == "" && spec.alg == nil {
		spec = chromeOSSPKAC(d.key, chromeOSChallenge(t, 32), spec.rawSignature)
		spec.tamper, spec.trailing = d.spkac.tamper, d.spkac.trailing
	}
	result := d.result
	if result == nil {
		result = healthyDevice()
	}
	out := map[string]any{}
	for k, v := range result {
		if version == "v1" && !v1Field(k) {
			continue
		}
		out[k] = v
	}
	if !d.noSPKAC {
		out["signedPublicKeyAndChallenge"] = base64.StdEncoding.EncodeToString(makeSPKAC(t, spec))
	}
	if !d.unregistered {
		api.mu.Lock()
		api.answers[version+hex.EncodeToString(key)] = &fakeAnswer{identity: d.identity, result: out, fail: d.fail}
		api.mu.Unlock()
	}
	return base64.StdEncoding.EncodeToString(response)
}

// marshalChallengeResponse serializes ChromeOS's ChallengeResponse: the challenge's SignedData
// exactly as handed out (field 1), the device's nonce (2) and the encrypted key info (3, an
// EncryptedData message; its content does not matter here).
func marshalChallengeResponse(challenge, nonce, encryptedKeyInfo []byte) []byte {
	// The key info goes in field 5 (data) of an EncryptedData, which the adapter never reads.
	return wire.MarshalChallengeResponse(challenge, nonce, protowire.AppendBytes(protowire.AppendTag(nil, 5, protowire.BytesType), encryptedKeyInfo))
}

func v1Field(k string) bool {
	switch k {
	case "devicePermanentId", "deviceEnrollmentId", "attestedDeviceId":
		return true
	}
	return false
}
