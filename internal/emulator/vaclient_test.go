package emulator

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

// enrollEnv is the emulator, a stand-in adapter on TLS in front of it, and a CA.
type enrollEnv struct {
	va      *vaEnv
	ca      *testCA
	fake    *VAFakeAdapter
	adapter *httptest.Server
}

// newEnrollEnv starts the stand-in adapter with profiles "wifi-machine" (v1) and "wifi-v2" (v2),
// both for domain example.com. wrap, if set, wraps its handler (to move the clock mid-flow).
func newEnrollEnv(t *testing.T, configure func(*VAFakeAdapter), wrap func(*vaEnv, http.Handler) http.Handler) *enrollEnv {
	t.Helper()
	v := newVAEnv(t, 0)
	ca := newTestCA(t, "VA Test CA")
	fake := &VAFakeAdapter{
		GoogleURL: v.srv.URL, CACert: ca.cert, CAKey: ca.key,
		Profiles: map[string]VAFakeProfile{
			"wifi-machine": {APIVersion: VAv1, Domain: DefaultVADomain},
			"wifi-v2":      {APIVersion: VAv2, Domain: DefaultVADomain},
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
		o.Roots = e.ca.pool
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
		{name: "v1 machine rsa", opts: EnrollOptions{Profile: "wifi-machine", KeyType: KeyRSA, KeyID: "m1"},
			wantCN: DefaultVADevice(VAScopeMachine, "m1", DefaultVADomain).DevicePermanentID, wantVer: VAv1},
		{name: "v2 machine ecdsa", opts: EnrollOptions{Profile: "wifi-v2", Scope: VAScopeMachine, KeyType: KeyECDSA, KeyID: "m2"},
			wantCN: DefaultVADevice(VAScopeMachine, "m2", DefaultVADomain).DevicePermanentID, wantVer: VAv2},
		{name: "v1 user ecdsa", opts: EnrollOptions{Profile: "wifi-machine", Scope: VAScopeUser, KeyType: KeyECDSA,
			Identity: "alice@example.com"}, wantCN: "alice@example.com", wantVer: VAv1},
		{name: "v2 user default identity", opts: EnrollOptions{Profile: "wifi-v2", Scope: VAScopeUser, KeyType: KeyECDSA},
			wantCN: DefaultVAUser, wantVer: VAv2},
		{name: "v2 user, TPM 1.2, raw ECDSA signatures", opts: EnrollOptions{Profile: "wifi-v2", Scope: VAScopeUser,
			KeyType: KeyECDSA, Identity: "bob@example.com", TPMVersion: TPM12, RawSignatures: true},
			wantCN: "bob@example.com", wantVer: VAv2},
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
			if len(res.Verified) != 2 || !res.Verified[1].Equal(env.ca.cert) {
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
			st := env.va.emu.VAStats()
			if st.Challenges[tc.wantVer] != 1 || st.Verifies[VAOutcomeVerified] != 1 || st.Responses != 1 {
				t.Errorf("emulator stats %+v", st)
			}
		})
	}
}

func TestEnrollRefusals(t *testing.T) {
	t.Parallel()
	otherCA := newTestCA(t, "Other CA")
	// advanceOnEnroll moves the emulator's clock past the lifetime when the enroll call arrives.
	advanceOnEnroll := func(v *vaEnv, h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == EnrollPath {
				v.clock.Advance(DefaultVAChallengeLifetime + time.Second)
			}
			h.ServeHTTP(w, r)
		})
	}
	tests := []struct {
		name       string
		configure  func(*VAFakeAdapter)
		wrap       func(*vaEnv, http.Handler) http.Handler
		opts       EnrollOptions
		otherRoots bool
		wantStep   string
		wantStatus int
		wantCode   string
		wantRules  []string
		wantVerify bool // ErrCertificateNotVerified instead of an adapter refusal
		wantStats  map[string]int
	}{
		{name: "unknown profile", opts: EnrollOptions{Profile: "nope"},
			wantStep: "challenge", wantStatus: 404, wantCode: EnrollCodeUnknownProfile},
		{name: "policy denied", configure: func(f *VAFakeAdapter) { f.Deny = []string{"diskEncryption", "minOsVersion"} },
			opts:     EnrollOptions{Profile: "wifi-v2", KeyType: KeyECDSA},
			wantStep: "enroll", wantStatus: 403, wantCode: EnrollCodePolicyDenied, wantRules: []string{"diskEncryption", "minOsVersion"},
			wantStats: map[string]int{VAOutcomeVerified: 1}},
		{name: "machine enrolled in another domain", opts: EnrollOptions{Profile: "wifi-machine", KeyType: KeyECDSA, DeviceIdentity: "other.example"},
			wantStep: "enroll", wantStatus: 400, wantCode: EnrollCodeBadChallenge,
			wantStats: map[string]int{VAOutcomeIdentityMismatch: 1}},
		{name: "user enrolled as someone else", opts: EnrollOptions{Profile: "wifi-v2", Scope: VAScopeUser, KeyType: KeyECDSA,
			Identity: "alice@example.com", DeviceIdentity: "mallory@example.com"},
			wantStep: "enroll", wantStatus: 400, wantCode: EnrollCodeBadChallenge,
			wantStats: map[string]int{VAOutcomeIdentityMismatch: 1}},
		{name: "tampered response", opts: EnrollOptions{Profile: "wifi-machine", KeyType: KeyECDSA, Tamper: true},
			wantStep: "enroll", wantStatus: 400, wantCode: EnrollCodeBadChallenge,
			wantStats: map[string]int{VAOutcomeInvalid: 1}},
		{name: "tampered SPKAC", opts: EnrollOptions{Profile: "wifi-v2", KeyType: KeyRSA, TamperSPKAC: true},
			wantStep: "enroll", wantStatus: 400, wantCode: EnrollCodeBadChallenge,
			wantStats: map[string]int{VAOutcomeVerified: 1}},
		{name: "expired challenge", wrap: advanceOnEnroll, opts: EnrollOptions{Profile: "wifi-v2", KeyType: KeyECDSA},
			wantStep: "enroll", wantStatus: 400, wantCode: EnrollCodeBadChallenge,
			wantStats: map[string]int{VAOutcomeExpired: 1}},
		{name: "certificate for another key", configure: func(f *VAFakeAdapter) { f.IssueForOtherKey = true },
			opts: EnrollOptions{Profile: "wifi-v2", KeyType: KeyECDSA}, wantVerify: true,
			wantStats: map[string]int{VAOutcomeVerified: 1}},
		{name: "certificate from another CA", otherRoots: true,
			opts: EnrollOptions{Profile: "wifi-machine", KeyType: KeyECDSA}, wantVerify: true,
			wantStats: map[string]int{VAOutcomeVerified: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := newEnrollEnv(t, tc.configure, tc.wrap)
			opts := tc.opts
			if tc.otherRoots {
				opts.Roots = otherCA.pool
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
			if st := env.va.emu.VAStats(); !reflect.DeepEqual(st.Verifies, tc.wantStats) {
				t.Errorf("emulator verifies %v, want %v", st.Verifies, tc.wantStats)
			}
		})
	}
}

// The stand-in adapter refuses a replayed response itself (CHALLENGE_REPLAYED), and Google refuses
// a new answer to a used challenge with a 400, which is BAD_CHALLENGE: this checks the stand-in
// follows the contract the client relies on.
func TestVAFakeAdapterReplay(t *testing.T) {
	t.Parallel()
	env := newEnrollEnv(t, nil, nil)
	ctx := context.Background()
	var ch EnrollChallengeResponse
	if err := postJSON(ctx, env.adapter.Client(), env.adapter.URL+EnrollChallengePath, "challenge",
		EnrollChallengeRequest{Profile: "wifi-v2"}, &ch, adapterRefusal); err != nil {
		t.Fatal(err)
	}
	raw := mustB64(t, ch.Challenge)
	first := env.va.respond(t, VARespondRequest{Challenge: raw, KeyType: KeyECDSA})
	second := env.va.respond(t, VARespondRequest{Challenge: raw, KeyType: KeyECDSA})
	enroll := func(resp []byte) error {
		var out EnrollResponse
		return postJSON(ctx, env.adapter.Client(), env.adapter.URL+EnrollPath, "enroll",
			EnrollRequest{Profile: "wifi-v2", Scope: VAScopeMachine, ChallengeResponse: b64(resp)}, &out, adapterRefusal)
	}
	if err := enroll(first.ChallengeResponse); err != nil {
		t.Fatalf("first enroll: %v", err)
	}
	var aerr *AdapterError
	if err := enroll(first.ChallengeResponse); !errors.As(err, &aerr) || aerr.Code != EnrollCodeChallengeReplayed || aerr.Status != 409 {
		t.Errorf("replay: %v", err)
	}
	if err := enroll(second.ChallengeResponse); !errors.As(err, &aerr) || aerr.Code != EnrollCodeBadChallenge || aerr.Status != 400 {
		t.Errorf("new answer to a used challenge: %v", err)
	}
}

func TestEnrollReportsNonContractAnswers(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	ca := newTestCA(t, "CA")
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer proxy.Close()
	_, err := Enroll(context.Background(), EnrollOptions{AdapterURL: proxy.URL, EmulatorURL: v.srv.URL,
		Profile: "p", Roots: ca.pool})
	var aerr *AdapterError
	if !errors.As(err, &aerr) || aerr.Status != 502 || aerr.Code != "" || !strings.Contains(aerr.Message, "bad gateway") {
		t.Errorf("err = %v", err)
	}

	// A challenge the emulator did not issue: the emulator's refusal is reported as such.
	fakeChallenge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, EnrollChallengeResponse{Challenge: b64(MarshalSignedData([]byte("x"), []byte("y"))), APIVersion: VAv2})
	}))
	defer fakeChallenge.Close()
	_, err = Enroll(context.Background(), EnrollOptions{AdapterURL: fakeChallenge.URL, EmulatorURL: v.srv.URL,
		Profile: "p", Roots: ca.pool})
	if err == nil || errors.As(err, &aerr) || !strings.Contains(err.Error(), "INVALID_ARGUMENT") {
		t.Errorf("err = %v, want the emulator's 400", err)
	}

	for _, o := range []EnrollOptions{{Profile: "p"}, {Roots: ca.pool}, {Profile: "p", Roots: ca.pool, Scope: "device"}} {
		if _, err := Enroll(context.Background(), o); err == nil {
			t.Errorf("Enroll(%+v) accepted bad options", o)
		}
	}
}
