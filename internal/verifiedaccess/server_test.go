package verifiedaccess

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/googleauth"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/tlstest"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// testCA is the built-in CA in a temporary directory.
type testCA struct {
	conn  *local.Connector
	roots *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	dir := t.TempDir()
	certPath, keyPath, err := local.CreateCA(dir, "ecdsa", "VA test CA", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := local.New(ca.Settings{"certificateFile": certPath, "keyFile": keyPath}, ca.Env{Name: "builtin"})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(conn.Certificate())
	return &testCA{conn: conn, roots: roots}
}

// testProfiles are the enrollment profiles of the unit tests.
func testProfiles() map[string]config.VerifiedAccessProfile {
	return map[string]config.VerifiedAccessProfile{
		"wifi": withCA(config.VerifiedAccessProfile{
			APIVersion: config.VAv2, Scopes: []string{"machine"}, EnrollmentDomain: "example.com",
			Subject:         config.Subject{CommonName: "{{.Signals.SerialNumber}}", Organization: []string{"Example Corp"}},
			SubjectAltNames: config.SANs{DNS: []string{"{{.Signals.Hostname}}.devices.example.com"}, URI: []string{"urn:device:{{.DevicePermanentID}}"}},
			Policy: config.VerifiedAccessPolicy{
				KeyTrustLevels: []string{"CHROME_OS_VERIFIED_MODE"},
				CustomerIDs:    []string{"C0abc123"},
				MinOSVersion:   "15000",
				Signals: map[string][]string{
					"diskEncryption":    {"DISK_ENCRYPTION_ENCRYPTED"},
					"screenLockSecured": {"SCREEN_LOCK_SECURED_ENABLED"},
				},
			},
		}),
		"legacy": withCA(config.VerifiedAccessProfile{
			APIVersion: config.VAv1, Scopes: []string{"machine"}, EnrollmentDomain: "example.com",
			Subject: config.Subject{CommonName: "{{.DevicePermanentID}}"},
		}),
		"users": withCA(config.VerifiedAccessProfile{
			APIVersion: config.VAv2, Scopes: []string{"user"}, EnrollmentDomain: "example.com",
			UserDomains:     []string{"example.com", "corp.example.com"},
			Subject:         config.Subject{CommonName: "{{.Identity}}"},
			SubjectAltNames: config.SANs{Email: []string{"{{.Identity}}"}},
			Policy:          config.VerifiedAccessPolicy{CustomerIDs: []string{"C0abc123"}},
		}),
		"bysignals": withCA(config.VerifiedAccessProfile{
			APIVersion: config.VAv2, Scopes: []string{"machine"}, EnrollmentDomain: "example.com",
			Subject:         config.Subject{CommonName: "{{.AttestedDeviceID}}", OrganizationalUnit: []string{"{{.Signals.CrowdStrikeAgent.AgentId}}"}},
			SubjectAltNames: config.SANs{URI: []string{"urn:mac:{{.Signals.MacAddresses.First | lower}}", "urn:affiliation:{{.Signals.DeviceAffiliationIds.Join \"+\"}}"}},
			Policy: config.VerifiedAccessPolicy{Signals: map[string][]string{
				"deviceAffiliationIds": {"aff-corp"}, "systemDnsServers": {"10.0.0.0/8"},
				"crowdStrikeAgent.customerId": {"FEDCBA9876543210FEDCBA9876543210"},
			}},
		}),
		"badnames": withCA(config.VerifiedAccessProfile{
			APIVersion: config.VAv2, Scopes: []string{"machine"}, EnrollmentDomain: "example.com",
			Subject:         config.Subject{CommonName: "x"},
			SubjectAltNames: config.SANs{DNS: []string{"{{.Signals.Hostname}}"}},
		}),
	}
}

// harness is an enrollment server against the fake Google API and the built-in CA.
type harness struct {
	t       *testing.T
	api     *fakeAPI
	ca      *testCA
	srv     *Server
	http    *httptest.Server
	logs    *observer.ObservedLogs
	reg     *prometheus.Registry
	metrics *metrics.VerifiedAccess
	clock   *clocktest.Clock
	// auditPath is the file the server writes its audit events to.
	auditPath string
}

type harnessOptions struct {
	// recorder wraps the audit log, to inject faults.
	recorder   func(*audit.Log) Recorder
	issuer     func(h *harness) ca.PublicKeyIssuer // replaces the built-in CA
	maxTracked int
	// limits holds the limit keys; nil lifts them (noLimits).
	limits *config.VerifiedAccess
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, api: newFakeAPI(t), ca: newTestCA(t), clock: clocktest.New(time.Now()), reg: prometheus.NewRegistry()}
	h.metrics = metrics.NewVerifiedAccess(h.reg)
	core, logs := observer.New(zapcore.DebugLevel)
	h.logs = logs
	log := zap.New(core)
	client, err := NewClient(context.Background(), ClientOptions{
		Endpoint: h.api.srv.URL + "/", Credentials: googleauth.Credentials{Type: googleauth.None},
		RequestTimeout: 5 * time.Second, Logger: log, Registerer: h.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	var issuer ca.Connector = h.ca.conn
	if o.issuer != nil {
		issuer = o.issuer(h).(ca.Connector)
	}
	cfg := &config.Config{VerifiedAccess: config.VerifiedAccess{APIVersion: config.VAv2, Profiles: testProfiles()}}
	profiles, err := Profiles(cfg, map[string]CAConnection{"builtin": {Type: "local", Connector: issuer, Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatalf("Profiles: %v", err)
	}
	va := noLimits()
	if o.limits != nil {
		va = *o.limits
	}
	va.Insecure, va.ChallengeLifetime = true, time.Minute
	h.auditPath = filepath.Join(t.TempDir(), "audit.jsonl")
	auditLog, err := audit.Open(h.auditPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = auditLog.Close() })
	var recorder Recorder = auditLog
	if o.recorder != nil {
		recorder = o.recorder(auditLog)
	}
	h.srv, err = NewServer(ServerOptions{
		Config: va, Profiles: profiles, Google: client, Logger: log, Now: h.clock.Now, MaxTracked: o.maxTracked, Registerer: h.reg,
		Audit: recorder, InstanceID: "va-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	h.http = httptest.NewServer(h.srv.Handler())
	t.Cleanup(h.http.Close)
	return h
}

// post sends body (JSON-encoded unless it is a string) and returns the status and the decoded
// answer.
func (h *harness) post(path string, body any) (int, map[string]any) {
	h.t.Helper()
	var b []byte
	if s, ok := body.(string); ok {
		b = []byte(s)
	} else {
		var err error
		if b, err = json.Marshal(body); err != nil {
			h.t.Fatal(err)
		}
	}
	resp, err := http.Post(h.http.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		h.t.Errorf("Content-Type %q", ct)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		h.t.Fatalf("answer is not JSON: %v", err)
	}
	return resp.StatusCode, out
}

// challenge asks for a challenge and returns it (base64).
func (h *harness) challenge(profile string) string {
	h.t.Helper()
	status, out := h.post(wire.ChallengePath, map[string]string{"profile": profile})
	if status != http.StatusOK {
		h.t.Fatalf("challenge: %d %v", status, out)
	}
	return out["challenge"].(string)
}

// respond gets a challenge for profile and has d answer it.
func (h *harness) respond(profile string, d *fakeDevice) string {
	h.t.Helper()
	version := testProfiles()[profile].APIVersion
	return d.respond(h.t, h.api, h.challenge(profile), version)
}

func enrollBody(profile, scope, response, identity string) map[string]string {
	b := map[string]string{"profile": profile, "scope": scope, "challengeResponse": response}
	if identity != "" {
		b["identity"] = identity
	}
	return b
}

// mustIssue checks a successful answer: a certificate for the device key that chains to the CA.
func (h *harness) mustIssue(status int, out map[string]any, key crypto.Signer) *x509.Certificate {
	h.t.Helper()
	if status != http.StatusOK {
		h.t.Fatalf("enroll: %d %v", status, out)
	}
	block, rest := pem.Decode([]byte(out["certificate"].(string)))
	if block == nil || len(bytes.TrimSpace(rest)) > 0 {
		h.t.Fatalf("certificate is not one PEM block: %q", out["certificate"])
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		h.t.Fatal(err)
	}
	if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		h.t.Error("certificate is not for the device key")
	}
	inter := x509.NewCertPool()
	for _, c := range out["chain"].([]any) {
		b, _ := pem.Decode([]byte(c.(string)))
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			h.t.Fatal(err)
		}
		inter.AddCert(cert)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: h.ca.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		h.t.Errorf("certificate does not chain to the CA: %v", err)
	}
	return leaf
}

// mustRefuse checks an error answer's status and code, and that nothing was issued.
func (h *harness) mustRefuse(status int, out map[string]any, code Code) map[string]any {
	h.t.Helper()
	e, _ := out["error"].(map[string]any)
	if status != code.Status() || e == nil || e["code"] != string(code) {
		h.t.Fatalf("got %d %v; want %d %s", status, out, code.Status(), code)
	}
	if msg, _ := e["message"].(string); msg == "" {
		h.t.Error("error without a message")
	}
	if n := h.ca.conn.IssuedTotal(); n != 0 {
		h.t.Errorf("%d certificates issued on a refusal", n)
	}
	return e
}

// auditLines returns the enrollment lines of the operational log so far.
func (h *harness) auditLines() []observer.LoggedEntry {
	return h.logs.FilterLoggerName("enrollment").All()
}

// events returns the audit events written so far.
func (h *harness) events() []audit.Event {
	h.t.Helper()
	return readEvents(h.t, h.auditPath)
}

func TestEnrollIssues(t *testing.T) {
	testKeys(t)
	tests := []struct {
		name, profile, scope, identity string
		device                         *fakeDevice
		wantCN                         string
		wantDNS                        []string
		wantEmail                      []string
		wantExpected                   string
		wantOU, wantURI                []string
	}{
		{name: "v2 machine, ECDSA", profile: "wifi", scope: "machine", device: &fakeDevice{key: ecKey, identity: "example.com"},
			wantCN: "5CD0001", wantDNS: []string{"chromebook-1.devices.example.com"}, wantExpected: "example.com"},
		{name: "v2 machine, RSA", profile: "wifi", scope: "machine", device: &fakeDevice{key: rsaKey, identity: "example.com"},
			wantCN: "5CD0001", wantDNS: []string{"chromebook-1.devices.example.com"}, wantExpected: "example.com"},
		{name: "v2 machine, identity equal to the domain tolerated", profile: "wifi", scope: "machine", identity: "EXAMPLE.com",
			device: &fakeDevice{key: ecKey, identity: "example.com"}, wantCN: "5CD0001", wantDNS: []string{"chromebook-1.devices.example.com"}, wantExpected: "example.com"},
		{name: "v1 machine", profile: "legacy", scope: "machine", device: &fakeDevice{key: rsaKey, identity: "example.com"},
			wantCN: "5CD0001", wantExpected: "example.com"},
		{name: "v2 user", profile: "users", scope: "user", identity: "alice@corp.example.com",
			device: &fakeDevice{key: ecKey, identity: "alice@corp.example.com"}, wantCN: "alice@corp.example.com",
			wantEmail: []string{"alice@corp.example.com"}, wantExpected: "alice@corp.example.com"},
		{name: "v2 machine, policy and names from the list and object signals", profile: "bysignals", scope: "machine",
			device: &fakeDevice{key: rsaKey, identity: "example.com", result: listSignalsDevice()},
			wantCN: "5CD0001", wantExpected: "example.com",
			wantOU: []string{"0123456789abcdef0123456789abcdef"}, wantURI: []string{"urn:mac:02:00:5e:10:00:01", "urn:affiliation:aff-corp+aff-lab"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			resp := h.respond(tt.profile, tt.device)
			status, out := h.post(wire.EnrollPath, enrollBody(tt.profile, tt.scope, resp, tt.identity))
			leaf := h.mustIssue(status, out, tt.device.key)
			if leaf.Subject.CommonName != tt.wantCN || !slices.Equal(leaf.DNSNames, tt.wantDNS) || !slices.Equal(leaf.EmailAddresses, tt.wantEmail) {
				t.Errorf("names: CN %q DNS %v email %v", leaf.Subject.CommonName, leaf.DNSNames, leaf.EmailAddresses)
			}
			var uris []string
			for _, u := range leaf.URIs {
				uris = append(uris, u.String())
			}
			if tt.wantURI != nil && (!slices.Equal(uris, tt.wantURI) || !slices.Equal(leaf.Subject.OrganizationalUnit, tt.wantOU)) {
				t.Errorf("names from the signals: URI %v OU %v", uris, leaf.Subject.OrganizationalUnit)
			}
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 24*time.Hour {
				t.Errorf("validity %s", got)
			}
			if got := h.api.identities; !slices.Equal(got, []string{tt.wantExpected}) {
				t.Errorf("expectedIdentity sent to Google: %q", got)
			}
			lines := h.auditLines()
			if len(lines) != 1 || lines[0].ContextMap()["outcome"] != "issued" || lines[0].ContextMap()["serial"] != leaf.SerialNumber.Text(16) {
				t.Errorf("audit: %+v", lines)
			}
			evs := h.events()
			if len(evs) != 1 {
				t.Fatalf("%d audit events for one enrollment", len(evs))
			}
			spki, _ := x509.MarshalPKIXPublicKey(tt.device.key.Public())
			ev, c := evs[0], evs[0].Certificate
			wantCustomer := "C0abc123"
			if tt.profile == "legacy" {
				wantCustomer = "" // v1 does not say
			}
			if ev.Kind != audit.KindEnrollment || ev.Outcome != "issued" || ev.Profile != tt.profile || ev.Scope != tt.scope ||
				ev.CAConnection != "builtin" || ev.InstanceID != "va-test" || ev.Customer != wantCustomer || ev.Failure != "" ||
				ev.SPKISHA256 != audit.SPKISHA256(spki) || len(ev.ID) != 32 || ev.ID != lines[0].ContextMap()["enrollment_id"] {
				t.Errorf("event %+v", ev)
			}
			if c == nil || c.Serial != leaf.SerialNumber.Text(16) || c.Issuer != leaf.Issuer.String() || c.Subject != leaf.Subject.String() ||
				!c.NotAfter.Equal(leaf.NotAfter) || c.SPKISHA256 != ev.SPKISHA256 {
				t.Errorf("event certificate %+v, issued serial %s", c, leaf.SerialNumber.Text(16))
			}
			if n := h.ca.conn.IssuedTotal(); n != 1 {
				t.Errorf("CA issued %d", n)
			}
			version := "v2"
			if tt.profile == "legacy" {
				version = "v1"
			}
			challenge := map[string]string{"v1": "v1/challenge", "v2": "v2/challenge:generate"}[version]
			for family, want := range map[string]map[string]float64{
				"certprov_verifiedaccess_enrollments_total": {"code=OK,outcome=issued,profile=" + tt.profile: 1},
				"certprov_verifiedaccess_challenges_total":  {"code=OK,outcome=issued,profile=" + tt.profile: 1},
				"certprov_ca_requests_total":                {"ca_connection=builtin,operation=issue_for_key,outcome=ok": 1},
				"certprov_google_api_requests_total": {
					"api=verifiedaccess,code=200,method=" + challenge:                     1,
					"api=verifiedaccess,code=200,method=" + version + "/challenge:verify": 1,
				},
			} {
				if got := series(t, h.reg, family); !maps.Equal(got, want) {
					t.Errorf("%s = %v, want %v", family, got, want)
				}
			}
		})
	}
}

func TestChallenge(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, p := range []struct{ name, version string }{{"wifi", "v2"}, {"legacy", "v1"}} {
		status, out := h.post(wire.ChallengePath, map[string]string{"profile": p.name})
		if status != http.StatusOK || out["apiVersion"] != p.version || out["expiresInSeconds"] != 60.0 {
			t.Fatalf("%s: %d %v", p.name, status, out)
		}
		b, err := base64.StdEncoding.DecodeString(out["challenge"].(string))
		if err != nil {
			t.Fatal(err)
		}
		// Both versions hand the extension a serialized SignedData.
		if data, sig, err := wire.UnmarshalSignedData(b); err != nil || len(data) != 32 || string(sig) != "google-sig" {
			t.Errorf("%s: challenge %x: %v", p.name, b, err)
		}
	}
	h.refuse(CodeUnknownProfile)(h.post(wire.ChallengePath, map[string]string{"profile": "nope"}))
}

// issued adapts harness.mustIssue to the two results of post.
func (h *harness) issued(key crypto.Signer) func(int, map[string]any) *x509.Certificate {
	return func(status int, out map[string]any) *x509.Certificate {
		h.t.Helper()
		return h.mustIssue(status, out, key)
	}
}

// refuse adapts harness.mustRefuse to the two results of post.
func (h *harness) refuse(code Code) func(int, map[string]any) map[string]any {
	return func(status int, out map[string]any) map[string]any {
		h.t.Helper()
		return h.mustRefuse(status, out, code)
	}
}

func TestChallengeErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.refuse(CodeUnknownProfile)(h.post(wire.ChallengePath, map[string]string{"profile": "nope"}))
	h.refuse(CodeBadRequest)(h.post(wire.ChallengePath, map[string]string{}))
	h.refuse(CodeBadRequest)(h.post(wire.ChallengePath, `{"profile": "wifi", "extra": 1}`))
	h.api.failNextCall(http.StatusServiceUnavailable, "backend down")
	h.refuse(CodeUnavailable)(h.post(wire.ChallengePath, map[string]string{"profile": "wifi"}))
	h.api.failNextCall(http.StatusForbidden, "no permission")
	h.refuse(CodeMisconfigured)(h.post(wire.ChallengePath, map[string]string{"profile": "legacy"}))
	h.api.failNextCall(http.StatusTooManyRequests, "quota")
	h.refuse(CodeUnavailable)(h.post(wire.ChallengePath, map[string]string{"profile": "legacy"}))
}

func TestEnrollRefusals(t *testing.T) {
	testKeys(t)
	good := func() *fakeDevice { return &fakeDevice{key: ecKey, identity: "example.com"} }
	type step func(h *harness) (int, map[string]any)
	enroll := func(profile, scope, identity string, d *fakeDevice) step {
		return func(h *harness) (int, map[string]any) {
			resp := h.respond(profile, d)
			return h.post(wire.EnrollPath, enrollBody(profile, scope, resp, identity))
		}
	}
	raw := func(body string) step {
		return func(h *harness) (int, map[string]any) { return h.post(wire.EnrollPath, body) }
	}
	withResult := func(edit func(m map[string]any)) *fakeDevice {
		d := good()
		d.result = healthyDevice()
		edit(d.result)
		return d
	}
	signals := func(m map[string]any) map[string]any { return m["deviceSignals"].(map[string]any) }
	tests := []struct {
		name        string
		do          step
		code        Code
		msg         string
		failedRules []string
		verifies    int // calls to Google's verify; -1 = don't care
	}{
		{name: "malformed JSON", do: raw(`{"profile":`), code: CodeBadRequest, msg: "malformed JSON"},
		{name: "not an object", do: raw(`[1]`), code: CodeBadRequest, msg: "malformed JSON"},
		{name: "unknown field", do: raw(`{"profile":"wifi","scope":"machine","challengeResponse":"AA==","device":"x"}`), code: CodeBadRequest, msg: `unknown field "device"`},
		{name: "wrong type", do: raw(`{"profile":1}`), code: CodeBadRequest, msg: `field "profile"`},
		{name: "trailing data", do: raw(`{"profile":"wifi","scope":"machine","challengeResponse":"AA=="} {}`), code: CodeBadRequest, msg: "data after"},
		{name: "body too large", do: raw(`{"profile":"wifi","scope":"machine","challengeResponse":"` + strings.Repeat("A", maxRequestBody) + `"}`), code: CodeBadRequest, msg: "larger than"},
		{name: "missing profile", do: raw(`{"scope":"machine","challengeResponse":"AA=="}`), code: CodeBadRequest, msg: "profile is required"},
		{name: "missing scope", do: raw(`{"profile":"wifi","challengeResponse":"AA=="}`), code: CodeBadRequest, msg: "scope is required"},
		{name: "unknown scope", do: raw(`{"profile":"wifi","scope":"device","challengeResponse":"AA=="}`), code: CodeBadRequest, msg: `unknown scope "device"`},
		{name: "missing response", do: raw(`{"profile":"wifi","scope":"machine"}`), code: CodeBadRequest, msg: "challengeResponse is required"},
		{name: "bad base64", do: raw(`{"profile":"wifi","scope":"machine","challengeResponse":"not base64!"}`), code: CodeBadRequest, msg: "not base64"},
		{name: "user without identity", do: raw(`{"profile":"users","scope":"user","challengeResponse":"AA=="}`), code: CodeBadRequest, msg: "identity"},
		{name: "user identity not an e-mail", do: raw(`{"profile":"users","scope":"user","challengeResponse":"AA==","identity":"alice"}`), code: CodeBadRequest, msg: "e-mail"},
		{name: "machine with another identity", do: raw(`{"profile":"wifi","scope":"machine","challengeResponse":"AA==","identity":"other.com"}`), code: CodeBadRequest, msg: "only sent for the user scope"},
		{name: "unknown profile", do: raw(`{"profile":"nope","scope":"machine","challengeResponse":"AA=="}`), code: CodeUnknownProfile, msg: `"nope"`},

		{name: "scope not allowed", do: raw(`{"profile":"wifi","scope":"user","challengeResponse":"AA==","identity":"a@example.com"}`),
			code: CodePolicyDenied, failedRules: []string{"scopes: got user, want one of [machine]"}},
		{name: "user domain not allowed", do: raw(`{"profile":"users","scope":"user","challengeResponse":"AA==","identity":"eve@evil.example"}`),
			code: CodePolicyDenied, failedRules: []string{"userDomains: got evil.example, want one of [example.com, corp.example.com]"}},

		{name: "not a challenge response", do: raw(`{"profile":"wifi","scope":"machine","challengeResponse":"AAAA"}`), code: CodeBadChallenge, msg: "not an answer"},
		{name: "v1 response not a SignedData", do: raw(`{"profile":"legacy","scope":"machine","challengeResponse":"AAAA"}`), code: CodeBadChallenge, msg: "not an answer"},
		{name: "response without its challenge", do: raw(`{"profile":"wifi","scope":"machine","challengeResponse":"` +
			base64.StdEncoding.EncodeToString(wire.MarshalSignedData([]byte{0x12, 0x01, 0x00}, []byte("sig"))) + `"}`), code: CodeBadChallenge, msg: "no challenge"},
		{name: "answer to a challenge the adapter did not hand out", do: func(h *harness) (int, map[string]any) {
			foreign := base64.StdEncoding.EncodeToString(wire.MarshalSignedData(randomBytes(t, 32), []byte("google-sig")))
			resp := (&fakeDevice{key: ecKey, identity: "example.com"}).respond(h.t, h.api, foreign, "v2")
			return h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, ""))
		}, code: CodeBadChallenge, msg: "did not hand out"},
		{name: "Google refuses the response", do: enroll("wifi", "machine", "", &fakeDevice{key: ecKey, identity: "example.com", unregistered: true}), code: CodeBadChallenge, msg: "refused", verifies: 1},
		{name: "identity mismatch, machine", do: enroll("wifi", "machine", "", &fakeDevice{key: ecKey, identity: "other.com"}), code: CodeBadChallenge, msg: `for "example.com"`, verifies: 1},
		{name: "identity mismatch, user", do: enroll("users", "user", "alice@example.com", &fakeDevice{key: ecKey, identity: "mallory@example.com"}), code: CodeBadChallenge, msg: `for "alice@example.com"`, verifies: 1},

		{name: "no SPKAC", do: enroll("wifi", "machine", "", &fakeDevice{key: ecKey, identity: "example.com", noSPKAC: true}), code: CodeBadChallenge, msg: "registerKey", verifies: 1},
		{name: "tampered SPKAC", do: enroll("wifi", "machine", "", &fakeDevice{key: ecKey, identity: "example.com", spkac: spkacSpec{tamper: true}}), code: CodeBadChallenge, msg: "does not verify", verifies: 1},
		{name: "MD5 SPKAC", do: enroll("legacy", "machine", "", &fakeDevice{key: rsaKey, identity: "example.com", spkac: spkacSpec{alg: oidMD5WithRSA, params: asn1.NullRawValue, hash: crypto.MD5}}), code: CodeBadChallenge, msg: "MD5", verifies: 1},
		{name: "SHA-1 SPKAC", do: enroll("wifi", "machine", "", &fakeDevice{key: rsaKey, identity: "example.com", spkac: spkacSpec{alg: oidSHA1WithRSA, params: asn1.NullRawValue, hash: crypto.SHA1}}), code: CodeBadChallenge, msg: "SHA-1", verifies: 1},
		{name: "ECDSA SHA-1 SPKAC", do: enroll("wifi", "machine", "", &fakeDevice{key: ecKey, identity: "example.com", spkac: spkacSpec{alg: oidECDSAWithSHA1, params: asn1.NullRawValue, hash: crypto.SHA1}}), code: CodeBadChallenge, msg: "SHA-1", verifies: 1},
		{name: "P-384 SPKAC", do: enroll("wifi", "machine", "", &fakeDevice{key: ec384Key, identity: "example.com"}), code: CodeBadChallenge, msg: "want P-256", verifies: 1},
		{name: "RSA-1024 SPKAC", do: enroll("wifi", "machine", "", &fakeDevice{key: rsaSmall, identity: "example.com"}), code: CodeBadChallenge, msg: "at least 2048", verifies: 1},

		{name: "policy: developer mode, unencrypted, old OS", do: enroll("wifi", "machine", "", withResult(func(m map[string]any) {
			m["keyTrustLevel"] = "CHROME_OS_DEVELOPER_MODE"
			signals(m)["diskEncryption"] = "DISK_ENCRYPTION_DISABLED"
			signals(m)["osVersion"] = "14000.1"
		})), code: CodePolicyDenied, verifies: 1, failedRules: []string{
			"keyTrustLevels: got CHROME_OS_DEVELOPER_MODE, want one of [CHROME_OS_VERIFIED_MODE]",
			"minOsVersion: got 14000.1, want at least 15000",
			"signals.diskEncryption: got DISK_ENCRYPTION_DISABLED, want one of [DISK_ENCRYPTION_ENCRYPTED]",
		}},
		{name: "policy: foreign customer", do: enroll("wifi", "machine", "", withResult(func(m map[string]any) { m["customerId"] = "C0evil99" })),
			code: CodePolicyDenied, verifies: 1, failedRules: []string{"customerIds: got C0evil99, want one of [C0abc123]"}},
		{name: "policy: list signals", do: enroll("bysignals", "machine", "", &fakeDevice{key: ecKey, identity: "example.com", result: func() map[string]any {
			m := listSignalsDevice()
			sig := m["deviceSignals"].(map[string]any)
			sig["systemDnsServers"] = []string{"10.0.0.53", "8.8.8.8"}
			delete(sig, "crowdStrikeAgent")
			return m
		}()}), code: CodePolicyDenied, verifies: 1, failedRules: []string{
			"signals.crowdStrikeAgent.customerId: got nothing, want one of [FEDCBA9876543210FEDCBA9876543210]",
			"signals.systemDnsServers: got [10.0.0.53, 8.8.8.8], want each in [10.0.0.0/8]",
		}},
		{name: "template needs devicePermanentId, which Google did not return", do: enroll("wifi", "machine", "", withResult(func(m map[string]any) { delete(m, "devicePermanentId") })),
			code: CodeCAFailure, msg: "subjectAltNames.uri[0] needs .DevicePermanentID,", verifies: 1},
		{name: "template needs devicePermanentId: why", do: enroll("wifi", "machine", "", withResult(func(m map[string]any) { delete(m, "devicePermanentId") })),
			code: CodeCAFailure, msg: "needs .DevicePermanentID, which Google did not return: Google returns devicePermanentId for machine keys only, and only to a service account it has allowlisted for it", verifies: 1},
		{name: "template needs a MAC address Google did not report", do: enroll("bysignals", "machine", "", &fakeDevice{key: ecKey, identity: "example.com", result: func() map[string]any {
			m := listSignalsDevice()
			delete(m["deviceSignals"].(map[string]any), "macAddresses")
			return m
		}()}), code: CodeCAFailure, msg: "Google reported no macAddresses for this device", verifies: 1},

		{name: "names that cannot go in a certificate", do: enroll("badnames", "machine", "", withResult(func(m map[string]any) { signals(m)["hostname"] = "bad host" })),
			code: CodeCAFailure, msg: "subjectAltNames.dns[0]", verifies: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			e := h.refuse(tt.code)(tt.do(h))
			if msg, _ := e["message"].(string); !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q; want it to mention %q", msg, tt.msg)
			}
			var rules []string
			if rs, ok := e["failedRules"].([]any); ok {
				for _, r := range rs {
					rules = append(rules, r.(string))
				}
			}
			if !slices.Equal(rules, tt.failedRules) {
				t.Errorf("failedRules:\n got %q\nwant %q", rules, tt.failedRules)
			}
			if tt.verifies >= 0 && h.api.verifyCalls() != tt.verifies {
				t.Errorf("Google verify called %d times; want %d", h.api.verifyCalls(), tt.verifies)
			}
			lines := h.auditLines()
			if len(lines) != 1 || lines[0].ContextMap()["outcome"] != string(tt.code) {
				t.Errorf("audit lines: %v", lines)
			}
			// Counted once, under its code, and under a profile only when one is configured.
			got := series(t, h.reg, "certprov_verifiedaccess_enrollments_total")
			outcome := "refused"
			if tt.code.Status() >= 500 {
				outcome = "failed"
			}
			matched := 0
			for k, v := range got {
				if strings.HasPrefix(k, "code="+string(tt.code)+",outcome="+outcome+",profile=") && v == 1 {
					matched++
					if p := strings.TrimPrefix(k, "code="+string(tt.code)+",outcome="+outcome+",profile="); p != "" && testProfiles()[p].CAConnection == "" {
						t.Errorf("enrollment counted under profile %q, which is not configured", p)
					}
				}
			}
			if len(got) != 1 || matched != 1 {
				t.Errorf("enrollments counted %v, want one with code %s", got, tt.code)
			}
			evs := h.events()
			if len(evs) != 1 || evs[0].Outcome != string(tt.code) || evs[0].Failure != e["message"] ||
				!slices.Equal(evs[0].FailedRules, tt.failedRules) || evs[0].Certificate != nil {
				t.Errorf("audit events %+v; want one %s with the message %q", evs, tt.code, e["message"])
			}
		})
	}
}

// listSignalsDevice is healthyDevice with the list and object signals the "bysignals" profile
// reads and demands.
func listSignalsDevice() map[string]any {
	m := healthyDevice()
	sig := m["deviceSignals"].(map[string]any)
	sig["deviceAffiliationIds"] = []string{"aff-corp", "aff-lab"}
	sig["macAddresses"] = []string{"02:00:5E:10:00:01"}
	sig["systemDnsServers"] = []string{"10.0.0.53", "10.1.0.53"}
	sig["crowdStrikeAgent"] = map[string]any{"agentId": "0123456789abcdef0123456789abcdef", "customerId": "FEDCBA9876543210FEDCBA9876543210"}
	return m
}

// TestErrorCodes pins the contract's table of codes and statuses.
func TestErrorCodes(t *testing.T) {
	want := map[Code]int{
		CodeBadRequest: 400, CodeUnknownProfile: 404, CodeBadChallenge: 400, CodeChallengeExpired: 400,
		CodeChallengeReplayed: 409, CodePolicyDenied: 403, CodeCAFailure: 502,
		CodeUnavailable: 503, CodeMisconfigured: 500, CodeRateLimited: 429, CodeBusy: 503,
	}
	for code, status := range want {
		if code.Status() != status {
			t.Errorf("%s: %d, want %d", code, code.Status(), status)
		}
	}
	if CodeOf(fmt.Errorf("plain")) != CodeUnavailable || CodeOf(fmt.Errorf("wrapped: %w", fail(CodeBadChallenge, nil, "x"))) != CodeBadChallenge {
		t.Error("CodeOf")
	}
}

// TestGoogleRefusals: each answer Google can give to challenge:verify maps to its documented
// code by its HTTP status, never by its message (the messages below say the opposite of the
// status on purpose); a refusal Google never judged leaves the challenge usable, one it judged
// uses it up.
func TestGoogleRefusals(t *testing.T) {
	testKeys(t)
	tests := []struct {
		name           string
		fail           fakeFailure
		code           Code
		msg            string
		wantRetryAfter string
		reason         string // the ErrorInfo reason logged
		sameAnswerOK   bool   // the same answer enrolls once Google is back
	}{
		{name: "400", fail: fakeFailure{status: 400, message: "service unavailable, try again"}, code: CodeBadChallenge, msg: "refused"},
		{name: "400 saying expired", fail: fakeFailure{status: 400, message: "challenge expired"}, code: CodeBadChallenge, msg: "refused"},
		{name: "401", fail: fakeFailure{status: 401, message: "invalid challenge response"}, code: CodeMisconfigured, msg: "credentials", sameAnswerOK: true},
		{name: "403", fail: fakeFailure{status: 403, message: "challenge already used"}, code: CodeMisconfigured,
			msg: "service account is not allowed", reason: "SERVICE_DISABLED", sameAnswerOK: true},
		{name: "404", fail: fakeFailure{status: 404, message: "identity mismatch"}, code: CodeMisconfigured, msg: "cannot reach", sameAnswerOK: true},
		{name: "429 with Retry-After", fail: fakeFailure{status: 429, message: "invalid challenge response", retryAfter: "7"}, code: CodeUnavailable,
			msg: "try again later", wantRetryAfter: "7", reason: "RATE_LIMIT_EXCEEDED", sameAnswerOK: true},
		{name: "500", fail: fakeFailure{status: 500, message: "identity mismatch"}, code: CodeUnavailable, msg: "try again later", sameAnswerOK: true},
		{name: "503 with Retry-After", fail: fakeFailure{status: 503, message: "challenge expired", retryAfter: "2"}, code: CodeUnavailable,
			msg: "try again later", wantRetryAfter: "2", sameAnswerOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			resp := h.respond("wifi", &fakeDevice{key: ecKey, identity: "example.com"})
			f := tt.fail
			h.api.mu.Lock()
			h.api.failNext = append(h.api.failNext, f)
			h.api.mu.Unlock()
			b, _ := json.Marshal(enrollBody("wifi", "machine", resp, ""))
			r, err := http.Post(h.http.URL+wire.EnrollPath, "application/json", bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			var out map[string]any
			_ = json.NewDecoder(r.Body).Decode(&out)
			r.Body.Close()
			e := h.mustRefuse(r.StatusCode, out, tt.code)
			if msg, _ := e["message"].(string); !strings.Contains(msg, tt.msg) || strings.Contains(msg, f.message) {
				t.Errorf("message %q; want it to mention %q and not Google's text", msg, tt.msg)
			}
			if got := r.Header.Get("Retry-After"); got != tt.wantRetryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.wantRetryAfter)
			}
			if tt.reason != "" {
				var logged bool
				for _, l := range h.logs.All() {
					logged = logged || l.ContextMap()["reason"] == tt.reason
				}
				if !logged {
					t.Errorf("no log line with reason %s", tt.reason)
				}
			}
			status, out := h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, ""))
			if tt.sameAnswerOK {
				h.issued(ecKey)(status, out)
			} else if e, _ := out["error"].(map[string]any); status != http.StatusConflict || e["code"] != string(CodeChallengeReplayed) {
				t.Errorf("the answer Google judged was accepted again: %d %v", status, out)
			}
		})
	}
}

func TestReplay(t *testing.T) {
	testKeys(t)
	t.Run("same response twice", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		d := &fakeDevice{key: ecKey, identity: "example.com"}
		resp := h.respond("wifi", d)
		h.issued(ecKey)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
		status, out := h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, ""))
		if e, _ := out["error"].(map[string]any); status != http.StatusConflict || e["code"] != string(CodeChallengeReplayed) {
			t.Fatalf("replay: %d %v", status, out)
		}
		if h.api.verifyCalls() != 1 {
			t.Errorf("the replay reached Google (%d verify calls)", h.api.verifyCalls())
		}
		if h.ca.conn.IssuedTotal() != 1 {
			t.Errorf("issued %d", h.ca.conn.IssuedTotal())
		}
	})
	t.Run("same response in another encoding", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		d := &fakeDevice{key: ecKey, identity: "example.com"}
		resp := h.respond("wifi", d)
		h.issued(ecKey)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
		b, _ := base64.StdEncoding.DecodeString(resp)
		status, out := h.post(wire.EnrollPath, enrollBody("wifi", "machine", base64.RawURLEncoding.EncodeToString(b), ""))
		if status != http.StatusConflict {
			t.Fatalf("%d %v", status, out)
		}
	})
	t.Run("a second answer to the same challenge", func(t *testing.T) {
		// A device may answer one challenge twice, with two keys: each answer is new, its
		// challenge is not.
		h := newHarness(t, harnessOptions{})
		chal := h.challenge("wifi")
		d := &fakeDevice{key: ecKey, identity: "example.com"}
		h.issued(ecKey)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", d.respond(t, h.api, chal, "v2"), "")))
		other := &fakeDevice{key: newECKey(t), identity: "example.com"}
		status, out := h.post(wire.EnrollPath, enrollBody("wifi", "machine", other.respond(t, h.api, chal, "v2"), ""))
		if e, _ := out["error"].(map[string]any); status != http.StatusConflict || e["code"] != string(CodeChallengeReplayed) {
			t.Fatalf("%d %v", status, out)
		}
		if h.ca.conn.IssuedTotal() != 1 || h.api.verifyCalls() != 1 {
			t.Errorf("issued %d, verify calls %d", h.ca.conn.IssuedTotal(), h.api.verifyCalls())
		}
	})
	t.Run("concurrent duplicates issue once", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		resp := h.respond("wifi", &fakeDevice{key: ecKey, identity: "example.com"})
		var wg sync.WaitGroup
		statuses := make(chan int, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, _ := json.Marshal(enrollBody("wifi", "machine", resp, ""))
				r, err := http.Post(h.http.URL+wire.EnrollPath, "application/json", bytes.NewReader(b))
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, r.Body)
				r.Body.Close()
				statuses <- r.StatusCode
			}()
		}
		wg.Wait()
		close(statuses)
		var ok, conflict int
		for s := range statuses {
			switch s {
			case http.StatusOK:
				ok++
			case http.StatusConflict:
				conflict++
			}
		}
		if ok != 1 || conflict != 7 || h.ca.conn.IssuedTotal() != 1 {
			t.Errorf("ok %d conflict %d issued %d", ok, conflict, h.ca.conn.IssuedTotal())
		}
	})
	t.Run("a response Google never judged may be sent again", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		d := &fakeDevice{key: ecKey, identity: "example.com"}
		resp := h.respond("wifi", d)
		h.api.failNextCall(http.StatusServiceUnavailable, "down")
		status, out := h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, ""))
		if status != http.StatusServiceUnavailable {
			t.Fatalf("%d %v", status, out)
		}
		h.issued(ecKey)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
	})
	t.Run("a refused response stays used", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		resp := h.respond("wifi", &fakeDevice{key: ecKey, identity: "other.com"})
		h.refuse(CodeBadChallenge)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
		h.refuse(CodeChallengeReplayed)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
	})
	t.Run("challenges are remembered until long after they expired", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		resp := h.respond("wifi", &fakeDevice{key: ecKey, identity: "other.com"})
		h.refuse(CodeBadChallenge)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
		h.clock.Advance(time.Minute + replayGrace - time.Second)
		h.refuse(CodeChallengeReplayed)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
		h.clock.Advance(2 * time.Second)
		h.srv.purgeChallenges(context.Background())
		if n := h.srv.challenges.(*MemoryChallenges).Len(); n != 0 {
			t.Errorf("%d challenges kept after their lifetime", n)
		}
		// Forgotten now: the adapter no longer knows it handed it out, and Google is not asked.
		e := h.refuse(CodeBadChallenge)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
		if !strings.Contains(e["message"].(string), "did not hand out") || h.api.verifyCalls() != 1 {
			t.Errorf("%v, %d verify calls", e, h.api.verifyCalls())
		}
	})
	t.Run("a full store refuses new challenges instead of forgetting", func(t *testing.T) {
		h := newHarness(t, harnessOptions{maxTracked: 1})
		resp := h.respond("wifi", &fakeDevice{key: ecKey, identity: "example.com"})
		h.refuse(CodeUnavailable)(h.post(wire.ChallengePath, map[string]string{"profile": "wifi"}))
		h.issued(ecKey)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
		if status, out := h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")); status != http.StatusConflict {
			t.Errorf("replay of a remembered challenge: %d %v", status, out)
		}
	})
}

// TestAdapterSideExpiry: an answer to a challenge older than the adapter's lifetime is refused
// although Google (whose clock has not moved) would accept it. The SPKAC carries ChromeOS's
// random challenge, so only the challenge response says how old the answer is.
func TestAdapterSideExpiry(t *testing.T) {
	testKeys(t)
	for _, tt := range []struct {
		profile string
		key     crypto.Signer
	}{{"wifi", ecKey}, {"legacy", rsaKey}} {
		t.Run(tt.profile, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			resp := h.respond(tt.profile, &fakeDevice{key: tt.key, identity: "example.com"})
			h.clock.Advance(time.Minute + time.Second)
			e := h.refuse(CodeChallengeExpired)(h.post(wire.EnrollPath, enrollBody(tt.profile, "machine", resp, "")))
			if !strings.Contains(e["message"].(string), "older than 1m0s") || h.api.verifyCalls() != 0 {
				t.Errorf("message %q, %d verify calls", e["message"], h.api.verifyCalls())
			}
		})
	}
	t.Run("within the lifetime", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		resp := h.respond("wifi", &fakeDevice{key: ecKey, identity: "example.com"})
		h.clock.Advance(time.Minute)
		h.issued(ecKey)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
	})
}

// otherKeyCA issues with the real CA, but for another key than asked.
type otherKeyCA struct{ inner *local.Connector }

func (c otherKeyCA) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	return c.inner.Issue(ctx, req)
}

func (c otherKeyCA) IssueForKey(ctx context.Context, req *ca.KeyRequest) (*ca.Issued, error) {
	r := *req
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	r.PublicKey = k.Public()
	return c.inner.IssueForKey(ctx, &r)
}

// craftedCA issues from a CA of its own, letting the test edit each certificate before it is
// signed, and reports roots (its own certificate unless the test replaces them).
type craftedCA struct {
	key   *ecdsa.PrivateKey
	cert  *x509.Certificate
	roots *x509.CertPool
	edit  func(*x509.Certificate)
}

func newCraftedCA(t *testing.T, edit func(*x509.Certificate)) *craftedCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "crafted CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &craftedCA{key: key, cert: cert, roots: roots, edit: edit}
}

func (c *craftedCA) Issue(context.Context, *ca.Request) (*ca.Issued, error) {
	return nil, ca.Permanentf("not used")
}

func (c *craftedCA) IssueForKey(_ context.Context, req *ca.KeyRequest) (*ca.Issued, error) {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: req.Subject, NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if c.edit != nil {
		c.edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, req.PublicKey, c.key)
	if err != nil {
		return nil, ca.Permanentf("crafted: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, ca.Permanentf("crafted: %v", err)
	}
	return &ca.Issued{Leaf: leaf, Roots: c.roots}, nil
}

// failingCA refuses everything.
type failingCA struct{ err error }

func (c failingCA) Issue(context.Context, *ca.Request) (*ca.Issued, error) { return nil, c.err }
func (c failingCA) IssueForKey(context.Context, *ca.KeyRequest) (*ca.Issued, error) {
	return nil, c.err
}

func TestCAFailures(t *testing.T) {
	testKeys(t)
	tests := []struct {
		name   string
		issuer func(h *harness) ca.PublicKeyIssuer
		msg    string
	}{
		{"refused", func(*harness) ca.PublicKeyIssuer {
			return failingCA{ca.Permanentf("subject refused by policy module at https://secret.internal")}
		}, "could not issue"},
		{"pending", func(*harness) ca.PublicKeyIssuer { return failingCA{&ca.PendingError{Ticket: "t"}} }, "approval"},
		{"certificate for another key", func(h *harness) ca.PublicKeyIssuer { return otherKeyCA{h.ca.conn} }, "different key"},
		{"a CA certificate", func(h *harness) ca.PublicKeyIssuer {
			return newCraftedCA(t, func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = true, true })
		}, "a CA certificate, not a leaf"},
		{"expired", func(h *harness) ca.PublicKeyIssuer {
			return newCraftedCA(t, func(c *x509.Certificate) {
				c.NotBefore, c.NotAfter = h.clock.Now().Add(-2*time.Hour), h.clock.Now().Add(-time.Hour)
			})
		}, "it expired at"},
		{"from a CA the connection does not trust", func(h *harness) ca.PublicKeyIssuer {
			c := newCraftedCA(t, nil)
			c.roots = h.ca.roots
			return c
		}, "does not chain"},
	}
	rules := map[string]string{"certificate for another key": "key", "a CA certificate": "ca", "expired": "validity", "from a CA the connection does not trust": "chain"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{issuer: tt.issuer})
			defer func() {
				if rule := rules[tt.name]; rule != "" {
					if got := count(h.metrics.CertificatesRejected.WithLabelValues("builtin", rule)); got != 1 {
						t.Errorf("ca_certificates_rejected_total{builtin,%s} = %d", rule, got)
					}
				}
			}()
			resp := h.respond("wifi", &fakeDevice{key: ecKey, identity: "example.com"})
			status, out := h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, ""))
			e, _ := out["error"].(map[string]any)
			if status != http.StatusBadGateway || e["code"] != string(CodeCAFailure) || !strings.Contains(e["message"].(string), tt.msg) {
				t.Fatalf("%d %v", status, out)
			}
			if strings.Contains(fmt.Sprint(out), "secret.internal") {
				t.Error("the CA's own message reached the client")
			}
			if _, ok := out["certificate"]; ok {
				t.Error("certificate in a refusal")
			}
		})
	}
}

func TestAuditNeverLogsTheResponse(t *testing.T) {
	testKeys(t)
	h := newHarness(t, harnessOptions{})
	resp := h.respond("wifi", &fakeDevice{key: ecKey, identity: "example.com"})
	h.issued(ecKey)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
	for _, e := range h.logs.All() {
		if strings.Contains(fmt.Sprint(e.ContextMap()), resp) || strings.Contains(e.Message, resp) {
			t.Errorf("log line carries the challenge response: %s", e.Message)
		}
	}
	m := h.auditLines()[0].ContextMap()
	for _, k := range []string{"profile", "scope", "api_version", "identity", "device_permanent_id", "customer_id", "key_trust_level", "spki_sha256", "serial", "remote_addr"} {
		if m[k] == nil || m[k] == "" {
			t.Errorf("audit line lacks %s: %v", k, m)
		}
	}
}

func TestServerTLS(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	certFile, keyFile := tlstest.WriteServerCert(t, dir, 1)
	api := newFakeAPI(t)
	client, err := NewClient(context.Background(), ClientOptions{Endpoint: api.srv.URL + "/", Credentials: googleauth.Credentials{Type: googleauth.None}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(ServerOptions{Config: config.VerifiedAccess{}, Google: client}); err == nil {
		t.Error("a server without TLS and without insecure started")
	}
	if _, err := NewServer(ServerOptions{Config: config.VerifiedAccess{TLS: config.ServerTLS{CertFile: certFile, KeyFile: filepath.Join(dir, "missing")}}, Google: client}); err == nil {
		t.Error("a server with a missing key started")
	}
	cfg := &config.Config{VerifiedAccess: config.VerifiedAccess{Profiles: map[string]config.VerifiedAccessProfile{"wifi": testProfiles()["wifi"]}}}
	profiles, err := Profiles(cfg, map[string]CAConnection{"builtin": {Connector: newTestCA(t).conn}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerOptions{
		Config:   config.VerifiedAccess{Listen: "127.0.0.1:0", TLS: config.ServerTLS{CertFile: certFile, KeyFile: keyFile}},
		Profiles: profiles, Google: client,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenLoopback(t)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()

	roots := x509.NewCertPool()
	pemBytes, _ := readFile(certFile)
	roots.AppendCertsFromPEM(pemBytes)
	hc := tlsClient(roots)
	resp, err := hc.Post("https://"+ln.Addr().String()+wire.ChallengePath, "application/json", strings.NewReader(`{"profile":"wifi"}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Errorf("status %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	// Plain HTTP on the TLS port is not served.
	if r, err := http.Post("http://"+ln.Addr().String()+wire.ChallengePath, "application/json", strings.NewReader(`{"profile":"wifi"}`)); err == nil {
		if r.StatusCode == http.StatusOK {
			t.Error("plain HTTP served on the TLS listener")
		}
		r.Body.Close()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func TestRunListenError(t *testing.T) {
	api := newFakeAPI(t)
	client, _ := NewClient(context.Background(), ClientOptions{Endpoint: api.srv.URL + "/", Credentials: googleauth.Credentials{Type: googleauth.None}})
	srv, err := NewServer(ServerOptions{Config: config.VerifiedAccess{Insecure: true, Listen: "256.0.0.1:1"}, Google: client})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run: %v", err)
	}
}

func TestNewServerChecksProfiles(t *testing.T) {
	api := newFakeAPI(t)
	client, _ := NewClient(context.Background(), ClientOptions{Endpoint: api.srv.URL + "/", Credentials: googleauth.Credentials{Type: googleauth.None}})
	if _, err := NewServer(ServerOptions{Config: config.VerifiedAccess{Insecure: true}, Google: client, Profiles: map[string]*Profile{"x": {Name: "x"}}}); err == nil {
		t.Error("an unbound profile was accepted")
	}
	if _, err := NewServer(ServerOptions{Config: config.VerifiedAccess{Insecure: true}}); err == nil {
		t.Error("a server without a Google client was accepted")
	}
}
