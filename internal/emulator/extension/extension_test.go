package extension

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/standin"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// enrollEnv is the emulator, a stand-in adapter on TLS in front of it, and a CA.
type enrollEnv struct {
	va      *vaEnv
	ca      *catest.CA
	fake    *standin.Adapter
	adapter *httptest.Server
}

// newEnrollEnv starts the stand-in adapter with profiles "wifi-machine" (v1) and "wifi-v2" (v2),
// both for domain example.com. wrap, if set, wraps its handler (to move the clock mid-flow).
func newEnrollEnv(t *testing.T, configure func(*standin.Adapter), wrap func(*vaEnv, http.Handler) http.Handler) *enrollEnv {
	t.Helper()
	v := newVAEnv(t, 0)
	ca := catest.NewRoot(t, "VA Test CA")
	fake := &standin.Adapter{
		GoogleURL: v.srv.URL, CACert: ca.Cert, CAKey: ca.Key,
		Profiles: map[string]standin.Profile{
			"wifi-machine": {APIVersion: vagoogle.V1, Domain: vagoogle.DefaultDomain},
			"wifi-v2":      {APIVersion: vagoogle.V2, Domain: vagoogle.DefaultDomain},
		},
	}
	if configure != nil {
		configure(fake)
	}
	h, err := fake.Handler(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		h = wrap(v, h)
	}
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return &enrollEnv{va: v, ca: ca, fake: fake, adapter: srv}
}

func (e *enrollEnv) options(o EnrollOptions) EnrollOptions {
	o.AdapterURL, o.AdapterClient, o.EmulatorURL = e.adapter.URL, e.adapter.Client(), e.va.srv.URL
	if o.Roots == nil {
		o.Roots = e.ca.Pool()
	}
	return o
}

func TestEnrollIssuesVerifiedCertificate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    EnrollOptions
		wantCN  string
		wantVer string
	}{
		{name: "v1 machine rsa", opts: EnrollOptions{Profile: "wifi-machine", KeyType: emulator.KeyRSA, KeyID: "m1"},
			wantCN: vagoogle.DefaultDevice(vagoogle.ScopeMachine, "m1", vagoogle.DefaultDomain).DevicePermanentID, wantVer: vagoogle.V1},
		{name: "v2 machine ecdsa", opts: EnrollOptions{Profile: "wifi-v2", Scope: vagoogle.ScopeMachine, KeyType: emulator.KeyECDSA, KeyID: "m2"},
			wantCN: vagoogle.DefaultDevice(vagoogle.ScopeMachine, "m2", vagoogle.DefaultDomain).DevicePermanentID, wantVer: vagoogle.V2},
		{name: "v1 user ecdsa", opts: EnrollOptions{Profile: "wifi-machine", Scope: vagoogle.ScopeUser, KeyType: emulator.KeyECDSA,
			Identity: "alice@example.com"}, wantCN: "alice@example.com", wantVer: vagoogle.V1},
		{name: "v2 user default identity", opts: EnrollOptions{Profile: "wifi-v2", Scope: vagoogle.ScopeUser, KeyType: emulator.KeyECDSA},
			wantCN: vagoogle.DefaultUser, wantVer: vagoogle.V2},
		{name: "v2 user, TPM 1.2, raw ECDSA signatures", opts: EnrollOptions{Profile: "wifi-v2", Scope: vagoogle.ScopeUser,
			KeyType: emulator.KeyECDSA, Identity: "bob@example.com", TPMVersion: vagoogle.TPM12, RawSignatures: true},
			wantCN: "bob@example.com", wantVer: vagoogle.V2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := newEnrollEnv(t, nil, nil)
			res, err := Enroll(context.Background(), env.options(tc.opts))
			if err != nil {
				t.Fatalf("Enroll: %v", err)
			}
			if res.APIVersion != tc.wantVer || res.Certificate.Subject.CommonName != tc.wantCN {
				t.Errorf("version %s CN %q, want %s %q", res.APIVersion, res.Certificate.Subject.CommonName, tc.wantVer, tc.wantCN)
			}
			if !bytes.Equal(res.Certificate.RawSubjectPublicKeyInfo, res.SPKI) {
				t.Errorf("certificate does not carry the simulated key")
			}
			if len(res.Verified) != 2 || !res.Verified[1].Equal(env.ca.Cert) {
				t.Errorf("verified path %d long", len(res.Verified))
			}
			priv, err := x509.ParsePKCS8PrivateKey(res.PrivateKeyPKCS8)
			if err != nil {
				t.Fatal(err)
			}
			spki, _ := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
			if !bytes.Equal(spki, res.SPKI) {
				t.Errorf("private key does not match")
			}
			st := env.va.emu.VerifiedAccess().Stats()
			if st.Challenges[tc.wantVer] != 1 || st.Verifies[vagoogle.OutcomeVerified] != 1 || st.Responses != 1 {
				t.Errorf("emulator stats %+v", st)
			}
		})
	}
}

func TestEnrollRefusals(t *testing.T) {
	t.Parallel()
	otherCA := catest.NewRoot(t, "Other CA")
	// advanceOnEnroll moves the emulator's clock past the lifetime when the enroll call arrives.
	advanceOnEnroll := func(v *vaEnv, h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == wire.EnrollPath {
				v.clock.Advance(vagoogle.DefaultChallengeLifetime + time.Second)
			}
			h.ServeHTTP(w, r)
		})
	}
	tests := []struct {
		name       string
		configure  func(*standin.Adapter)
		wrap       func(*vaEnv, http.Handler) http.Handler
		opts       EnrollOptions
		otherRoots bool
		wantStep   string
		wantStatus int
		wantCode   wire.Code
		wantRules  []string
		wantVerify bool // ErrCertificateNotVerified instead of an adapter refusal
		wantStats  map[string]int
	}{
		{name: "unknown profile", opts: EnrollOptions{Profile: "nope"},
			wantStep: "challenge", wantStatus: 404, wantCode: wire.CodeUnknownProfile},
		{name: "policy denied", configure: func(f *standin.Adapter) { f.Deny = []string{"diskEncryption", "minOsVersion"} },
			opts:     EnrollOptions{Profile: "wifi-v2", KeyType: emulator.KeyECDSA},
			wantStep: "enroll", wantStatus: 403, wantCode: wire.CodePolicyDenied, wantRules: []string{"diskEncryption", "minOsVersion"},
			wantStats: map[string]int{vagoogle.OutcomeVerified: 1}},
		{name: "machine enrolled in another domain", opts: EnrollOptions{Profile: "wifi-machine", KeyType: emulator.KeyECDSA, DeviceIdentity: "other.example"},
			wantStep: "enroll", wantStatus: 400, wantCode: wire.CodeBadChallenge,
			wantStats: map[string]int{vagoogle.OutcomeIdentityMismatch: 1}},
		{name: "user enrolled as someone else", opts: EnrollOptions{Profile: "wifi-v2", Scope: vagoogle.ScopeUser, KeyType: emulator.KeyECDSA,
			Identity: "alice@example.com", DeviceIdentity: "mallory@example.com"},
			wantStep: "enroll", wantStatus: 400, wantCode: wire.CodeBadChallenge,
			wantStats: map[string]int{vagoogle.OutcomeIdentityMismatch: 1}},
		{name: "tampered response", opts: EnrollOptions{Profile: "wifi-machine", KeyType: emulator.KeyECDSA, Tamper: true},
			wantStep: "enroll", wantStatus: 400, wantCode: wire.CodeBadChallenge,
			wantStats: map[string]int{vagoogle.OutcomeInvalid: 1}},
		{name: "tampered SPKAC", opts: EnrollOptions{Profile: "wifi-v2", KeyType: emulator.KeyRSA, TamperSPKAC: true},
			wantStep: "enroll", wantStatus: 400, wantCode: wire.CodeBadChallenge,
			wantStats: map[string]int{vagoogle.OutcomeVerified: 1}},
		{name: "expired challenge", wrap: advanceOnEnroll, opts: EnrollOptions{Profile: "wifi-v2", KeyType: emulator.KeyECDSA},
			wantStep: "enroll", wantStatus: 400, wantCode: wire.CodeBadChallenge,
			wantStats: map[string]int{vagoogle.OutcomeExpired: 1}},
		{name: "certificate for another key", configure: func(f *standin.Adapter) { f.IssueForOtherKey = true },
			opts: EnrollOptions{Profile: "wifi-v2", KeyType: emulator.KeyECDSA}, wantVerify: true,
			wantStats: map[string]int{vagoogle.OutcomeVerified: 1}},
		{name: "certificate from another CA", otherRoots: true,
			opts: EnrollOptions{Profile: "wifi-machine", KeyType: emulator.KeyECDSA}, wantVerify: true,
			wantStats: map[string]int{vagoogle.OutcomeVerified: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := newEnrollEnv(t, tc.configure, tc.wrap)
			opts := tc.opts
			if tc.otherRoots {
				opts.Roots = otherCA.Pool()
			}
			res, err := Enroll(context.Background(), env.options(opts))
			if err == nil {
				t.Fatalf("Enroll succeeded: %s", res.Certificate.Subject)
			}
			if tc.wantVerify {
				if !errors.Is(err, ErrCertificateNotVerified) {
					t.Fatalf("err = %v, want ErrCertificateNotVerified", err)
				}
				if res == nil || res.Certificate == nil || res.Verified != nil {
					t.Errorf("result with an unverified certificate: %+v", res)
				}
			} else {
				var aerr *AdapterError
				if !errors.As(err, &aerr) {
					t.Fatalf("err = %v, want *AdapterError", err)
				}
				if aerr.Step != tc.wantStep || aerr.Status != tc.wantStatus || aerr.Code != tc.wantCode ||
					!reflect.DeepEqual(aerr.FailedRules, tc.wantRules) {
					t.Errorf("refusal %+v, want %s %d %s %v", aerr, tc.wantStep, tc.wantStatus, tc.wantCode, tc.wantRules)
				}
				if res != nil {
					t.Errorf("result with a refusal: %+v", res)
				}
			}
			if tc.wantStats == nil {
				tc.wantStats = map[string]int{}
			}
			if st := env.va.emu.VerifiedAccess().Stats(); !reflect.DeepEqual(st.Verifies, tc.wantStats) {
				t.Errorf("emulator verifies %v, want %v", st.Verifies, tc.wantStats)
			}
		})
	}
}

// The stand-in adapter refuses a replayed response itself (CHALLENGE_REPLAYED), and Google refuses
// a new answer to a used challenge with a 400, which is BAD_CHALLENGE: this checks the stand-in
// follows the contract the client relies on.
func TestStandinReplay(t *testing.T) {
	t.Parallel()
	env := newEnrollEnv(t, nil, nil)
	var ch wire.ChallengeResponse
	if status, _ := env.post(t, wire.ChallengePath, wire.ChallengeRequest{Profile: "wifi-v2"}, &ch); status != http.StatusOK {
		t.Fatalf("challenge: HTTP %d", status)
	}
	raw := mustB64(t, ch.Challenge)
	first := env.va.respond(t, vagoogle.RespondRequest{Challenge: raw, KeyType: emulator.KeyECDSA})
	second := env.va.respond(t, vagoogle.RespondRequest{Challenge: raw, KeyType: emulator.KeyECDSA})
	enroll := func(resp []byte) (int, wire.ErrorBody) {
		return env.post(t, wire.EnrollPath, wire.EnrollRequest{Profile: "wifi-v2", Scope: vagoogle.ScopeMachine,
			ChallengeResponse: base64.StdEncoding.EncodeToString(resp)}, &wire.EnrollResponse{})
	}
	if status, body := enroll(first.ChallengeResponse); status != http.StatusOK {
		t.Fatalf("first enroll: HTTP %d %+v", status, body)
	}
	if status, body := enroll(first.ChallengeResponse); body.Error.Code != wire.CodeChallengeReplayed || status != 409 {
		t.Errorf("replay: HTTP %d %+v", status, body)
	}
	if status, body := enroll(second.ChallengeResponse); body.Error.Code != wire.CodeBadChallenge || status != 400 {
		t.Errorf("new answer to a used challenge: HTTP %d %+v", status, body)
	}
}

func TestEnrollReportsNonContractAnswers(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	ca := catest.NewRoot(t, "CA")
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer proxy.Close()
	_, err := Enroll(context.Background(), EnrollOptions{AdapterURL: proxy.URL, EmulatorURL: v.srv.URL,
		Profile: "p", Roots: ca.Pool()})
	var aerr *AdapterError
	if !errors.As(err, &aerr) || aerr.Status != 502 || aerr.Code != "" || !strings.Contains(aerr.Message, "bad gateway") {
		t.Errorf("err = %v", err)
	}

	// A challenge the emulator did not issue: the emulator's refusal is reported as such.
	fakeChallenge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(wire.ChallengeResponse{Challenge: base64.StdEncoding.EncodeToString(wire.MarshalSignedData([]byte("x"), []byte("y"))), APIVersion: vagoogle.V2})
	}))
	defer fakeChallenge.Close()
	_, err = Enroll(context.Background(), EnrollOptions{AdapterURL: fakeChallenge.URL, EmulatorURL: v.srv.URL,
		Profile: "p", Roots: ca.Pool()})
	if err == nil || errors.As(err, &aerr) || !strings.Contains(err.Error(), "INVALID_ARGUMENT") {
		t.Errorf("err = %v, want the emulator's 400", err)
	}

	for _, o := range []EnrollOptions{{Profile: "p"}, {Roots: ca.Pool()}, {Profile: "p", Roots: ca.Pool(), Scope: "device"}} {
		if _, err := Enroll(context.Background(), o); err == nil {
			t.Errorf("Enroll(%+v) accepted bad options", o)
		}
	}
}

// post sends v to the stand-in at path and decodes a 200 answer into out; it returns the status
// and, for any other, the error envelope.
func (e *enrollEnv) post(t *testing.T, path string, v, out any) (int, wire.ErrorBody) {
	t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.adapter.Client().Post(e.adapter.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var refusal wire.ErrorBody
	if resp.StatusCode == http.StatusOK {
		err = json.NewDecoder(resp.Body).Decode(out)
	} else {
		err = json.NewDecoder(resp.Body).Decode(&refusal)
	}
	if err != nil {
		t.Fatalf("%s: HTTP %d: %v", path, resp.StatusCode, err)
	}
	return resp.StatusCode, refusal
}

// vaEnv is the emulator on a test server, on a clock the test moves.
type vaEnv struct {
	emu   *emulator.Emulator
	srv   *httptest.Server
	clock *clocktest.Clock
}

func newVAEnv(t *testing.T, lifetime time.Duration) *vaEnv {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	emu, err := emulator.New(context.Background(), emulator.Options{Logger: zaptest.NewLogger(t), Clock: clock.Now, VAChallengeLifetime: lifetime})
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(func() { _ = emu.Close() })
	return &vaEnv{emu: emu, srv: srv, clock: clock}
}

func (v *vaEnv) respond(t *testing.T, req vagoogle.RespondRequest) vagoogle.RespondResult {
	t.Helper()
	res, err := v.emu.VerifiedAccess().Respond(context.Background(), req)
	if err != nil {
		t.Fatalf("VARespond: %v", err)
	}
	return res
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
