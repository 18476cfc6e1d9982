package verifiedaccess

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/extension"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/googleauth"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// The end-to-end tests run the enrollment server against the real emulator (the Verified Access
// v1 and v2 REST API and its stand-in for enterprise.platformKeys.challengeKey) and the built-in
// CA, with the emulator's reference client playing the extension.

// e2eProfiles: a strict v2 machine profile using every rule type (the emulator's default device
// passes it), a v1 machine profile, a v2 user profile, and one no device passes.
func e2eProfiles() map[string]config.VerifiedAccessProfile {
	return map[string]config.VerifiedAccessProfile{
		"wifi-v2": withCA(config.VerifiedAccessProfile{
			APIVersion: config.VAv2, Scopes: []string{"machine"}, EnrollmentDomain: vagoogle.DefaultDomain,
			Subject:         config.Subject{CommonName: "{{.Signals.SerialNumber}}", Organization: []string{"Example Corp"}},
			SubjectAltNames: config.SANs{DNS: []string{"{{.Signals.Hostname}}.devices.example.com"}, URI: []string{"urn:chromeos:{{.DevicePermanentID}}"}},
			Policy: config.VerifiedAccessPolicy{
				KeyTrustLevels:    []string{"CHROME_OS_VERIFIED_MODE"},
				CustomerIDs:       []string{emulator.DefaultCustomer},
				EnrollmentDomains: []string{vagoogle.DefaultDomain},
				MinOSVersion:      "15000",
				MinBrowserVersion: "100.0.0.0",
				Signals: map[string][]string{
					"diskEncryption":              {"DISK_ENCRYPTION_ENCRYPTED"},
					"osFirewall":                  {"OS_FIREWALL_ENABLED"},
					"screenLockSecured":           {"SCREEN_LOCK_SECURED_ENABLED"},
					"secureBootMode":              {"SECURE_BOOT_MODE_ENABLED"},
					"safeBrowsingProtectionLevel": {"STANDARD", "ENHANCED"},
					"siteIsolationEnabled":        {"true"},
				},
			},
		}),
		"wifi-v1": withCA(config.VerifiedAccessProfile{
			APIVersion: config.VAv1, Scopes: []string{"machine"}, EnrollmentDomain: vagoogle.DefaultDomain,
			Subject: config.Subject{CommonName: "{{.DevicePermanentID}}"},
		}),
		// locked admits no device the emulator reports: its ChromeOS is too old.
		"locked": withCA(config.VerifiedAccessProfile{
			APIVersion: config.VAv2, Scopes: []string{"machine"}, EnrollmentDomain: vagoogle.DefaultDomain,
			Subject: config.Subject{CommonName: "{{.Signals.SerialNumber}}"},
			Policy:  config.VerifiedAccessPolicy{MinOSVersion: "99999"},
		}),
		"users": withCA(config.VerifiedAccessProfile{
			APIVersion: config.VAv2, Scopes: []string{"user"}, UserDomains: []string{"example.com"},
			Subject:         config.Subject{CommonName: "{{.Identity}}"},
			SubjectAltNames: config.SANs{Email: []string{"{{.Identity}}"}},
			Policy: config.VerifiedAccessPolicy{
				KeyTrustLevels:    []string{"CHROME_OS_VERIFIED_MODE"},
				CustomerIDs:       []string{emulator.DefaultCustomer},
				EnrollmentDomains: []string{"example.com"},
				Signals:           map[string][]string{"diskEncryption": {"DISK_ENCRYPTION_ENCRYPTED"}},
			},
		}),
	}
}

type e2e struct {
	t          testing.TB
	emu        *emulator.Emulator
	google     *googleProbe // in front of the emulator's REST API
	emuURL     string
	emuClock   *clocktest.Clock
	adapterURL string
	adapterNow *clocktest.Clock
	ca         *testCA
	client     *Client
	auditPath  string // the audit file of the servers startServer starts
}

func newE2E(t testing.TB) *e2e {
	t.Helper()
	log := zaptest.NewLogger(t)
	x := &e2e{t: t, emuClock: clocktest.New(time.Now()), adapterNow: clocktest.New(time.Now()), ca: newTestCA(t),
		auditPath: filepath.Join(t.TempDir(), "audit.jsonl")}
	emu, err := emulator.New(context.Background(), emulator.Options{Project: "va", Logger: log.Named("emulator"), Clock: x.emuClock.Now})
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	x.google = &googleProbe{next: emu.Handler()}
	rest := httptest.NewServer(x.google)
	t.Cleanup(rest.Close)
	x.emu, x.emuURL = emu, rest.URL
	x.client, err = NewClient(context.Background(), ClientOptions{
		Endpoint: rest.URL + "/", Credentials: googleauth.Credentials{Type: googleauth.None},
		RequestTimeout: 10 * time.Second, Logger: log.Named("client"),
	})
	if err != nil {
		t.Fatal(err)
	}
	x.adapterURL = x.newServer()
	return x
}

// unlimitedRate lifts the per-client rate limit for tests about enrollment, not limits: they
// send many requests from one address on a clock that stands still.
var unlimitedRate = config.RateLimit{RequestsPerSecond: 1e6, Burst: 1e6}

// noLimits lifts the rate limit and the per-client share of slots, for tests that are not about
// them (limit_test.go is).
func noLimits() config.VerifiedAccess {
	return config.VerifiedAccess{RateLimit: unlimitedRate, MaxConcurrentChallenges: 1000, MaxConcurrentEnrollments: 1000, MaxConcurrentPerClient: 999}
}

// newServer starts an enrollment server (fresh replay state) on the shared emulator and CA.
func (x *e2e) newServer() string {
	x.t.Helper()
	url, _ := x.startServer(serverSetup{limits: noLimits()})
	return url
}

// serverSetup varies the enrollment servers of startServer.
type serverSetup struct {
	limits config.VerifiedAccess // the limit keys; the rest is set by startServer
	google Google                // default x.client
	log    *zap.Logger           // default the test's
	// registerer receives the server's metrics (default none).
	registerer prometheus.Registerer
	// challenges is the replay store; nil keeps one in the server's memory.
	challenges ChallengeStore
	// realClock runs the server on time.Now instead of the test's clock (a rate limit that
	// must refill).
	realClock bool
}

// startServer starts an enrollment server on the shared emulator and CA and returns its URL.
func (x *e2e) startServer(o serverSetup) (string, *Server) {
	x.t.Helper()
	cfg := &config.Config{VerifiedAccess: config.VerifiedAccess{Profiles: e2eProfiles()}}
	profiles, err := Profiles(cfg, map[string]CAConnection{"builtin": {Type: "local", Connector: x.ca.conn, Timeout: 10 * time.Second}})
	if err != nil {
		x.t.Fatalf("profiles: %v", err)
	}
	if o.google == nil {
		o.google = x.client
	}
	if o.log == nil {
		o.log = zaptest.NewLogger(x.t).Named("adapter")
	}
	va := o.limits
	va.Insecure, va.ChallengeLifetime = true, time.Minute
	now := x.adapterNow.Now
	if o.realClock {
		now = time.Now
	}
	auditLog, err := audit.Open(x.auditPath, nil)
	if err != nil {
		x.t.Fatal(err)
	}
	x.t.Cleanup(func() { _ = auditLog.Close() })
	srv, err := NewServer(ServerOptions{
		Config: va, Profiles: profiles, Google: o.google, Logger: o.log, Now: now, Registerer: o.registerer,
		Audit: auditLog, InstanceID: "va-e2e", Challenges: o.challenges,
	})
	if err != nil {
		x.t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	x.t.Cleanup(hs.Close)
	return hs.URL, srv
}

func (x *e2e) enroll(o extension.EnrollOptions) (*extension.EnrollResult, error) {
	x.t.Helper()
	o.AdapterURL, o.EmulatorURL, o.Roots = x.adapterURL, x.emuURL, x.ca.roots
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return extension.Enroll(ctx, o)
}

// refused asserts that err is the adapter's refusal with code, and that the CA issued nothing
// more than before.
func (x *e2e) refused(err error, code Code, issuedBefore int) *extension.AdapterError {
	x.t.Helper()
	var aerr *extension.AdapterError
	if !errors.As(err, &aerr) {
		x.t.Fatalf("err %v; want the adapter's refusal %s", err, code)
	}
	if aerr.Code != code || aerr.Status != code.Status() {
		x.t.Fatalf("refusal %d %s (%s); want %d %s", aerr.Status, aerr.Code, aerr.Message, code.Status(), code)
	}
	if n := x.ca.conn.IssuedTotal(); n != issuedBefore {
		x.t.Errorf("CA issued %d certificates; want %d", n, issuedBefore)
	}
	return aerr
}

// challenge, respond and post run the extension's steps one at a time, for tests that act in
// between.
func (x *e2e) challenge(adapterURL, profile string) wire.ChallengeResponse {
	x.t.Helper()
	var out wire.ChallengeResponse
	if status := x.postJSON(adapterURL+wire.ChallengePath, wire.ChallengeRequest{Profile: profile}, &out); status != http.StatusOK {
		x.t.Fatalf("challenge: HTTP %d", status)
	}
	return out
}

func (x *e2e) respond(ch wire.ChallengeResponse, req vagoogle.RespondRequest) vagoogle.RespondResult {
	x.t.Helper()
	b, err := base64.StdEncoding.DecodeString(ch.Challenge)
	if err != nil {
		x.t.Fatal(err)
	}
	req.Challenge, req.APIVersion = b, ch.APIVersion
	res, err := x.emu.VerifiedAccess().Respond(context.Background(), req)
	if err != nil {
		x.t.Fatalf("respond: %v", err)
	}
	return res
}

// postEnroll returns the status and the error code ("" on success).
func (x *e2e) postEnroll(adapterURL string, req wire.EnrollRequest) (int, wire.ErrorBody) {
	x.t.Helper()
	var out wire.ErrorBody
	status := x.postJSON(adapterURL+wire.EnrollPath, req, &out)
	return status, out
}

func (x *e2e) postJSON(url string, in, out any) int {
	x.t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		x.t.Fatal(err)
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		x.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		x.t.Fatalf("decode answer: %v", err)
	}
	return resp.StatusCode
}

func TestE2EIssues(t *testing.T) {
	x := newE2E(t)
	tests := []struct {
		name    string
		opts    extension.EnrollOptions
		wantCN  string
		wantSAN func(t *testing.T, r *extension.EnrollResult)
	}{
		{name: "v2 machine, RSA", opts: extension.EnrollOptions{Profile: "wifi-v2", KeyType: emulator.KeyRSA}},
		{name: "v2 machine, ECDSA", opts: extension.EnrollOptions{Profile: "wifi-v2", KeyType: emulator.KeyECDSA}},
		{name: "v1 machine, RSA", opts: extension.EnrollOptions{Profile: "wifi-v1", KeyType: emulator.KeyRSA}},
		{name: "v1 machine, ECDSA", opts: extension.EnrollOptions{Profile: "wifi-v1", KeyType: emulator.KeyECDSA}},
		{name: "v2 user", opts: extension.EnrollOptions{Profile: "users", Scope: "user", Identity: "alice@example.com", KeyType: emulator.KeyECDSA},
			wantCN: "alice@example.com"},
		{name: "v2 user, TPM 1.2, raw ECDSA signatures", opts: extension.EnrollOptions{
			Profile: "users", Scope: "user", Identity: "bob@example.com", KeyType: emulator.KeyECDSA,
			TPMVersion: vagoogle.TPM12, RawSignatures: true,
		}, wantCN: "bob@example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, eventsBefore := x.ca.conn.IssuedTotal(), len(readEvents(t, x.auditPath))
			res, err := x.enroll(tt.opts)
			if err != nil {
				t.Fatalf("enroll: %v", err)
			}
			// Enroll verified that the leaf carries the simulated key and chains to the CA.
			if len(res.Verified) < 2 || !res.Verified[len(res.Verified)-1].Equal(x.ca.conn.Certificate()) {
				t.Errorf("verified path %v", res.Verified)
			}
			if !bytes.Equal(res.Certificate.RawSubjectPublicKeyInfo, res.SPKI) {
				t.Error("the certificate does not carry the simulated key")
			}
			if tt.wantCN != "" && res.Certificate.Subject.CommonName != tt.wantCN {
				t.Errorf("CN %q", res.Certificate.Subject.CommonName)
			}
			if tt.opts.Scope == "user" && !slices.Equal(res.Certificate.EmailAddresses, []string{tt.wantCN}) {
				t.Errorf("e-mail SANs %v", res.Certificate.EmailAddresses)
			}
			if tt.opts.Profile == "wifi-v2" {
				c := res.Certificate
				if c.Subject.CommonName == "" || len(c.DNSNames) != 1 || !strings.HasSuffix(c.DNSNames[0], ".devices.example.com") || len(c.URIs) != 1 {
					t.Errorf("names from the device signals: CN %q DNS %v URI %v", c.Subject.CommonName, c.DNSNames, c.URIs)
				}
			}
			if n := x.ca.conn.IssuedTotal(); n != before+1 {
				t.Errorf("CA issued %d, want 1", n-before)
			}
			// One enrollment, one audit event, naming the certificate the extension received.
			evs := readEvents(t, x.auditPath)
			if len(evs) != eventsBefore+1 {
				t.Fatalf("%d audit events for one enrollment", len(evs)-eventsBefore)
			}
			ev := evs[len(evs)-1]
			if ev.Outcome != "issued" || ev.Profile != tt.opts.Profile || ev.InstanceID != "va-e2e" || ev.Certificate == nil ||
				ev.Certificate.Serial != res.Certificate.SerialNumber.Text(16) || ev.SPKISHA256 != audit.SPKISHA256(res.SPKI) {
				t.Errorf("audit event %+v", ev)
			}
		})
	}
	st := x.emu.VerifiedAccess().Stats()
	if st.Verifies[vagoogle.OutcomeVerified] != len(tests) || st.Challenges["v1"] != 2 || st.Challenges["v2"] != 4 {
		t.Errorf("emulator saw %+v", st)
	}
}

// TestE2EChromeOSShapes: answers shaped exactly as ChromeOS makes them — an SPKAC with a random
// hex challenge of 20 (TPM 1.2) or 32 (TPM 2.0) bytes and NULL algorithm parameters, RSA and
// ECDSA keys, ECDSA signatures in DER and raw r||s, inside an encrypted KeyInfo — enroll end to
// end through both API versions, and each certificate carries its device's key.
func TestE2EChromeOSShapes(t *testing.T) {
	x := newE2E(t)
	for _, profile := range []string{"wifi-v1", "wifi-v2"} {
		for _, tpm := range []string{vagoogle.TPM12, vagoogle.TPM20} {
			for _, k := range []struct {
				keyType string
				raw     bool
			}{{emulator.KeyRSA, false}, {emulator.KeyECDSA, false}, {emulator.KeyECDSA, true}} {
				t.Run(fmt.Sprintf("%s, TPM %s, %s, raw %v", profile, tpm, k.keyType, k.raw), func(t *testing.T) {
					before := x.ca.conn.IssuedTotal()
					res, err := x.enroll(extension.EnrollOptions{Profile: profile, KeyType: k.keyType, TPMVersion: tpm, RawSignatures: k.raw})
					if err != nil {
						t.Fatalf("a ChromeOS-shaped answer was refused: %v", err)
					}
					if !bytes.Equal(res.Certificate.RawSubjectPublicKeyInfo, res.SPKI) || x.ca.conn.IssuedTotal() != before+1 {
						t.Errorf("certificate for the device key %v, issued %d", bytes.Equal(res.Certificate.RawSubjectPublicKeyInfo, res.SPKI), x.ca.conn.IssuedTotal()-before)
					}
				})
			}
		}
	}
}

func TestE2ERefusals(t *testing.T) {
	x := newE2E(t)
	strict := vagoogle.DefaultDevice(vagoogle.ScopeMachine, "weak", vagoogle.DefaultDomain)
	weak, err := vagoogle.PatchDevice(strict, []byte(`{"keyTrustLevel":"CHROME_OS_DEVELOPER_MODE","deviceSignals":{"diskEncryption":"DISK_ENCRYPTION_DISABLED","browserVersion":"99.0.4844.51"}}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		opts        extension.EnrollOptions
		code        Code
		failedRules []string
		outcome     string // the emulator's verify outcome, "" when verify must not be called
	}{
		{name: "unknown profile", opts: extension.EnrollOptions{Profile: "nope"}, code: CodeUnknownProfile},
		{name: "identity mismatch, machine v2", opts: extension.EnrollOptions{Profile: "wifi-v2", DeviceIdentity: "other.example"},
			code: CodeBadChallenge, outcome: vagoogle.OutcomeIdentityMismatch},
		{name: "identity mismatch, machine v1", opts: extension.EnrollOptions{Profile: "wifi-v1", DeviceIdentity: "other.example"},
			code: CodeBadChallenge, outcome: vagoogle.OutcomeIdentityMismatch},
		{name: "identity mismatch, user", opts: extension.EnrollOptions{Profile: "users", Scope: "user", Identity: "alice@example.com", DeviceIdentity: "mallory@example.com"},
			code: CodeBadChallenge, outcome: vagoogle.OutcomeIdentityMismatch},
		{name: "tampered SPKAC, v2", opts: extension.EnrollOptions{Profile: "wifi-v2", TamperSPKAC: true}, code: CodeBadChallenge, outcome: vagoogle.OutcomeVerified},
		{name: "tampered SPKAC, v1", opts: extension.EnrollOptions{Profile: "wifi-v1", TamperSPKAC: true, KeyType: emulator.KeyECDSA}, code: CodeBadChallenge, outcome: vagoogle.OutcomeVerified},
		{name: "tampered response", opts: extension.EnrollOptions{Profile: "wifi-v2", Tamper: true}, code: CodeBadChallenge, outcome: vagoogle.OutcomeInvalid},
		{name: "policy denied", opts: extension.EnrollOptions{Profile: "wifi-v2", Device: &weak}, code: CodePolicyDenied, outcome: vagoogle.OutcomeVerified,
			failedRules: []string{
				"keyTrustLevels: got CHROME_OS_DEVELOPER_MODE, want one of [CHROME_OS_VERIFIED_MODE]",
				"minBrowserVersion: got 99.0.4844.51, want at least 100.0.0.0",
				"signals.diskEncryption: got DISK_ENCRYPTION_DISABLED, want one of [DISK_ENCRYPTION_ENCRYPTED]",
			}},
		{name: "user from another domain", opts: extension.EnrollOptions{Profile: "users", Scope: "user", Identity: "eve@evil.example"},
			code: CodePolicyDenied, failedRules: []string{"userDomains: got evil.example, want one of [example.com]"}},
		{name: "user scope on a machine profile", opts: extension.EnrollOptions{Profile: "wifi-v2", Scope: "user", Identity: "alice@example.com"},
			code: CodePolicyDenied, failedRules: []string{"scopes: got user, want one of [machine]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := x.ca.conn.IssuedTotal()
			statsBefore := x.emu.VerifiedAccess().Stats()
			res, err := x.enroll(tt.opts)
			if res != nil {
				t.Fatalf("issued %v", res.Certificate.Subject)
			}
			aerr := x.refused(err, tt.code, before)
			if !slices.Equal(aerr.FailedRules, tt.failedRules) {
				t.Errorf("failedRules:\n got %q\nwant %q", aerr.FailedRules, tt.failedRules)
			}
			st := x.emu.VerifiedAccess().Stats()
			calls := st.VerifyCalls["v1"] + st.VerifyCalls["v2"] - statsBefore.VerifyCalls["v1"] - statsBefore.VerifyCalls["v2"]
			switch {
			case tt.outcome == "" && calls != 0:
				t.Errorf("Google's verify was called %d times", calls)
			case tt.outcome != "" && (calls != 1 || st.Verifies[tt.outcome] != statsBefore.Verifies[tt.outcome]+1):
				t.Errorf("verify calls %d, outcomes %v; want one %s", calls, st.Verifies, tt.outcome)
			}
		})
	}
	t.Run("unknown profile at enroll", func(t *testing.T) {
		status, out := x.postEnroll(x.adapterURL, wire.EnrollRequest{Profile: "nope", Scope: "machine", ChallengeResponse: "AAAA"})
		if status != http.StatusNotFound || out.Error.Code != CodeUnknownProfile {
			t.Errorf("%d %+v", status, out)
		}
	})
}

func TestE2EExpired(t *testing.T) {
	for _, version := range []string{"wifi-v1", "wifi-v2"} {
		t.Run("Google says expired, "+version, func(t *testing.T) {
			// Google's 400 does not say why it refused (expired, used, forged, another identity):
			// BAD_CHALLENGE, whatever its message.
			x := newE2E(t)
			ch := x.challenge(x.adapterURL, version)
			if ch.ExpiresInSeconds != 60 {
				t.Errorf("expiresInSeconds %d", ch.ExpiresInSeconds)
			}
			resp := x.respond(ch, vagoogle.RespondRequest{})
			x.emuClock.Advance(61 * time.Second)
			status, out := x.postEnroll(x.adapterURL, wire.EnrollRequest{Profile: version, Scope: "machine",
				ChallengeResponse: base64.StdEncoding.EncodeToString(resp.ChallengeResponse)})
			if status != http.StatusBadRequest || out.Error.Code != CodeBadChallenge {
				t.Fatalf("%d %+v", status, out)
			}
			if x.ca.conn.IssuedTotal() != 0 || x.emu.VerifiedAccess().Stats().Verifies[vagoogle.OutcomeExpired] != 1 {
				t.Errorf("issued %d, emulator %v", x.ca.conn.IssuedTotal(), x.emu.VerifiedAccess().Stats().Verifies)
			}
		})
	}
	t.Run("older than the adapter's lifetime", func(t *testing.T) {
		x := newE2E(t)
		ch := x.challenge(x.adapterURL, "wifi-v2")
		resp := x.respond(ch, vagoogle.RespondRequest{})
		x.adapterNow.Advance(61 * time.Second) // Google's clock has not moved: only the adapter knows
		status, out := x.postEnroll(x.adapterURL, wire.EnrollRequest{Profile: "wifi-v2", Scope: "machine",
			ChallengeResponse: base64.StdEncoding.EncodeToString(resp.ChallengeResponse)})
		if status != http.StatusBadRequest || out.Error.Code != CodeChallengeExpired || x.ca.conn.IssuedTotal() != 0 {
			t.Fatalf("%d %+v, issued %d", status, out, x.ca.conn.IssuedTotal())
		}
	})
}

func TestE2EReplayed(t *testing.T) {
	x := newE2E(t)
	ch := x.challenge(x.adapterURL, "wifi-v2")
	resp := x.respond(ch, vagoogle.RespondRequest{KeyType: emulator.KeyECDSA})
	req := wire.EnrollRequest{Profile: "wifi-v2", Scope: "machine", ChallengeResponse: base64.StdEncoding.EncodeToString(resp.ChallengeResponse)}
	if status, out := x.postEnroll(x.adapterURL, req); status != http.StatusOK {
		t.Fatalf("first enrollment: %d %+v", status, out)
	}
	t.Run("same adapter", func(t *testing.T) {
		status, out := x.postEnroll(x.adapterURL, req)
		if status != http.StatusConflict || out.Error.Code != CodeChallengeReplayed {
			t.Fatalf("%d %+v", status, out)
		}
		if calls := x.emu.VerifiedAccess().Stats().VerifyCalls["v2"]; calls != 1 {
			t.Errorf("the replay reached Google: %d verify calls", calls)
		}
	})
	t.Run("a replica that does not share the store", func(t *testing.T) {
		other := x.newServer() // its own memory: it never handed this challenge out
		status, out := x.postEnroll(other, req)
		if status != http.StatusBadRequest || out.Error.Code != CodeBadChallenge {
			t.Fatalf("%d %+v", status, out)
		}
		if calls := x.emu.VerifiedAccess().Stats().VerifyCalls["v2"]; calls != 1 {
			t.Errorf("the answer reached Google: %d verify calls", calls)
		}
	})
	if n := x.ca.conn.IssuedTotal(); n != 1 {
		t.Errorf("CA issued %d certificates for one challenge", n)
	}
}
