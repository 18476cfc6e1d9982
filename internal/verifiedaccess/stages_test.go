package verifiedaccess

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// The stages of an enrollment, each on its own: what each accepts, and the code and message of
// what it refuses. The end-to-end tests run them together against the emulator.

// wantRefusal fails t unless err is an *Error with code whose message, or a failed rule of
// which, contains msg.
func wantRefusal(t *testing.T, err error, code Code, msg string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Code != code ||
		!strings.Contains(err.Error(), msg) && !slices.ContainsFunc(e.FailedRules, func(r string) bool { return strings.Contains(r, msg) }) {
		t.Fatalf("err = %v, want %s containing %q", err, code, msg)
	}
}

func TestParseEnrollRequest(t *testing.T) {
	tests := []struct {
		name, body string
		code       Code
		msg        string
	}{
		{"complete", `{"profile":"wifi","scope":"user","challengeResponse":"AA==","identity":"a@example.com"}`, "", ""},
		{"not JSON", `{`, CodeBadRequest, "JSON"},
		{"unknown field", `{"profile":"wifi","scope":"machine","challengeResponse":"AA==","x":1}`, CodeBadRequest, `unknown field "x"`},
		{"no profile", `{"scope":"machine","challengeResponse":"AA=="}`, CodeBadRequest, "profile is required"},
		{"no scope", `{"profile":"wifi","challengeResponse":"AA=="}`, CodeBadRequest, "scope is required"},
		{"unknown scope", `{"profile":"wifi","scope":"device","challengeResponse":"AA=="}`, CodeBadRequest, `unknown scope "device"`},
		{"no response", `{"profile":"wifi","scope":"machine"}`, CodeBadRequest, "challengeResponse is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := parseEnrollRequest(httptest.NewRequest("POST", wire.EnrollPath, strings.NewReader(tc.body)))
			if tc.code == "" {
				if err != nil || req.Profile != "wifi" || req.Scope != "user" || req.Identity != "a@example.com" {
					t.Fatalf("parse = %+v, %v", req, err)
				}
				return
			}
			wantRefusal(t, err, tc.code, tc.msg)
		})
	}
}

func TestExpectedIdentity(t *testing.T) {
	p := &Profile{Name: "p", Scopes: []string{config.VAScopeMachine, config.VAScopeUser}, EnrollmentDomain: "example.com",
		UserDomains: []string{"example.com", "corp.example.com"}}
	machineOnly := &Profile{Name: "m", Scopes: []string{config.VAScopeMachine}, EnrollmentDomain: "example.com"}
	tests := []struct {
		name     string
		p        *Profile
		req      wire.EnrollRequest
		identity string
		code     Code
		msg      string
	}{
		{"machine", p, wire.EnrollRequest{Scope: config.VAScopeMachine}, "example.com", "", ""},
		{"machine naming its own domain", p, wire.EnrollRequest{Scope: config.VAScopeMachine, Identity: "EXAMPLE.com"}, "example.com", "", ""},
		{"machine naming another", p, wire.EnrollRequest{Scope: config.VAScopeMachine, Identity: "other.com"}, "", CodeBadRequest, "only sent for the user scope"},
		{"user", p, wire.EnrollRequest{Scope: config.VAScopeUser, Identity: "alice@corp.example.com"}, "alice@corp.example.com", "", ""},
		{"user without identity", p, wire.EnrollRequest{Scope: config.VAScopeUser}, "", CodeBadRequest, "required for the user scope"},
		{"user not an address", p, wire.EnrollRequest{Scope: config.VAScopeUser, Identity: "alice"}, "", CodeBadRequest, "identity:"},
		{"user of another domain", p, wire.EnrollRequest{Scope: config.VAScopeUser, Identity: "eve@evil.example"}, "eve@evil.example", CodePolicyDenied, "userDomains"},
		{"scope not allowed", machineOnly, wire.EnrollRequest{Scope: config.VAScopeUser, Identity: "a@example.com"}, "", CodePolicyDenied, "scopes: got user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := expectedIdentity(tc.p, tc.req)
			if got != tc.identity {
				t.Errorf("identity %q, want %q", got, tc.identity)
			}
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantRefusal(t, err, tc.code, tc.msg)
		})
	}
}

func TestProofOfPossession(t *testing.T) {
	testKeys(t)
	good := makeSPKAC(t, chromeOSSPKAC(ecKey, chromeOSChallenge(t, 32), false))
	tampered := makeSPKAC(t, spkacSpec{key: rsaKey, challenge: "c", tamper: true})
	b64 := base64.StdEncoding.EncodeToString
	spkac, der, err := proofOfPossession(&Result{SignedPublicKeyAndChallenge: b64(good)})
	if err != nil || !bytes.Equal(der, good) || spkac.PublicKey == nil {
		t.Fatalf("proofOfPossession = %+v, %v", spkac, err)
	}
	for name, tc := range map[string]struct {
		spkac, msg string
	}{
		"no key registered": {"", "registerKey"},
		"not base64":        {"not base64!", "not base64"},
		"bad signature":     {b64(tampered), "does not verify"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := proofOfPossession(&Result{SignedPublicKeyAndChallenge: tc.spkac})
			wantRefusal(t, err, CodeBadChallenge, tc.msg)
		})
	}
}

func TestCertificateRequest(t *testing.T) {
	compile := func(p config.VerifiedAccessProfile) *Profile {
		t.Helper()
		p.APIVersion, p.Scopes, p.EnrollmentDomain = config.VAv2, []string{config.VAScopeMachine}, "example.com"
		prof, err := CompileProfile("wifi", withCA(p))
		if err != nil {
			t.Fatal(err)
		}
		return prof
	}
	p := compile(config.VerifiedAccessProfile{Subject: config.Subject{CommonName: "{{.DevicePermanentID}}"},
		SubjectAltNames: config.SANs{URI: []string{"urn:device:{{.DevicePermanentID}}"}}})
	req, err := certificateRequest(p, config.VAScopeMachine, "example.com", &Result{DevicePermanentID: "SN-1"})
	if err != nil || req.Subject.CommonName != "SN-1" || len(req.URIs) != 1 || req.URIs[0].String() != "urn:device:SN-1" {
		t.Fatalf("certificateRequest = %+v, %v", req, err)
	}
	_, err = certificateRequest(p, config.VAScopeMachine, "example.com", &Result{})
	wantRefusal(t, err, CodeCAFailure, "the certificate cannot be built for this device")
}
