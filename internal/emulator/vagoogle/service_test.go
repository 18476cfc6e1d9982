package vagoogle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	va1 "google.golang.org/api/verifiedaccess/v1"
	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/emulator/devicekey"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend/frontendtest"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// vaEnv is a Verified Access service on HTTP with both generated clients pointed at it.
type vaEnv struct {
	emu    *Service
	faults *frontend.Faults
	srv    *httptest.Server
	v1     *va1.Service
	v2     *va2.Service
	clock  *clocktest.Clock
}

func newVAEnv(t *testing.T, lifetime time.Duration) *vaEnv {
	t.Helper()
	ctx := context.Background()
	clock := clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	faults := &frontend.Faults{}
	emu, err := New(Options{Logger: zaptest.NewLogger(t), Clock: clock.Now, ChallengeLifetime: lifetime, Faults: faults})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	mux := http.NewServeMux()
	emu.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	opts := []option.ClientOption{option.WithEndpoint(srv.URL + "/"), option.WithoutAuthentication()}
	s1, err := va1.NewService(ctx, opts...)
	if err != nil {
		t.Fatalf("v1 NewService: %v", err)
	}
	s2, err := va2.NewService(ctx, opts...)
	if err != nil {
		t.Fatalf("v2 NewService: %v", err)
	}
	return &vaEnv{emu: emu, faults: faults, srv: srv, v1: s1, v2: s2, clock: clock}
}

// challenge asks the API version for a challenge and returns the bytes the extension gets.
func (v *vaEnv) challenge(t *testing.T, version string) []byte {
	t.Helper()
	switch version {
	case V1:
		c, err := v.v1.Challenge.Create(&va1.Empty{}).Do()
		if err != nil {
			t.Fatalf("v1 challenge: %v", err)
		}
		if c.Challenge == nil || c.AlternativeChallenge != nil {
			t.Fatalf("v1 challenge = %+v, want challenge only", c)
		}
		return wire.MarshalSignedData(mustB64(t, c.Challenge.Data), mustB64(t, c.Challenge.Signature))
	default:
		c, err := v.v2.Challenge.Generate(&va2.Empty{}).Do()
		if err != nil {
			t.Fatalf("v2 generate: %v", err)
		}
		return mustB64(t, c.Challenge)
	}
}

func (v *vaEnv) respond(t *testing.T, req RespondRequest) RespondResult {
	t.Helper()
	res, err := v.emu.Respond(context.Background(), req)
	if err != nil {
		t.Fatalf("Respond: %v", err)
	}
	return res
}

// verifyResult is the union of the v1 and v2 verify results, so one table covers both.
type verifyResult struct {
	va2.VerifyChallengeResponseResult
	VerificationOutput string // v1 only
}

// verify sends a challenge response through the generated client of the version, as the adapter
// does: v2 passes the bytes, v1 parses the SignedData into data and signature.
func (v *vaEnv) verify(t *testing.T, version string, response []byte, expected string) (*verifyResult, error) {
	t.Helper()
	if version == V1 {
		data, sig, err := wire.UnmarshalSignedData(response)
		if err != nil {
			t.Fatalf("parse response: %v", err)
		}
		r, err := v.v1.Challenge.Verify(&va1.VerifyChallengeResponseRequest{
			ChallengeResponse: &va1.SignedData{Data: frontend.Base64(data), Signature: frontend.Base64(sig)},
			ExpectedIdentity:  expected,
		}).Do()
		if err != nil {
			return nil, err
		}
		return &verifyResult{VerifyChallengeResponseResult: va2.VerifyChallengeResponseResult{
			AttestedDeviceId: r.AttestedDeviceId, DeviceEnrollmentId: r.DeviceEnrollmentId,
			DevicePermanentId: r.DevicePermanentId, SignedPublicKeyAndChallenge: r.SignedPublicKeyAndChallenge,
		}, VerificationOutput: r.VerificationOutput}, nil
	}
	r, err := v.v2.Challenge.Verify(&va2.VerifyChallengeResponseRequest{
		ChallengeResponse: frontend.Base64(response), ExpectedIdentity: expected}).Do()
	if err != nil {
		return nil, err
	}
	r.ServerResponse = googleapi.ServerResponse{}
	return &verifyResult{VerifyChallengeResponseResult: *r}, nil
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("base64 %q: %v", s, err)
	}
	return b
}

// checkSPKAC verifies an SPKAC, decoded with wire's codec, against what ChromeOS
// builds (CreateSPKACInternal): DER structure, the SPKI inside equal to wantSPKI, a challenge that
// is the hex of challengeBytes random bytes (not the Verified Access challenge), NULL algorithm
// parameters for RSA and ECDSA alike, and the signature by that key — DER, or raw r||s if raw.
func checkSPKAC(t *testing.T, spkacB64 string, wantSPKI []byte, challengeBytes int, raw bool) {
	t.Helper()
	outer, inner, err := wire.UnmarshalSPKAC(mustB64(t, spkacB64))
	if err != nil {
		t.Fatal(err)
	}
	if c := inner.Challenge; c.Class != asn1.ClassUniversal || c.Tag != asn1.TagIA5String {
		t.Fatalf("spkac challenge of tag %d, want an IA5String", c.Tag)
	}
	if !bytes.Equal(inner.SPKI.FullBytes, wantSPKI) {
		t.Errorf("spkac SPKI differs from the simulated key's")
	}
	if ch := string(inner.Challenge.Bytes); len(ch) != 2*challengeBytes || strings.ToLower(ch) != ch || !isHex(ch) {
		t.Errorf("spkac challenge %q: want the lower-case hex of %d random bytes", ch, challengeBytes)
	}
	if p := outer.Algorithm.Parameters; p.Tag != asn1.TagNull || len(p.Bytes) != 0 || !bytes.Equal(p.FullBytes, []byte{0x05, 0x00}) {
		t.Errorf("spkac algorithm parameters %x, want NULL", p.FullBytes)
	}
	pub, err := x509.ParsePKIXPublicKey(wantSPKI)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(outer.PublicKeyAndChallenge.FullBytes)
	sig := outer.Signature.Bytes
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if !outer.Algorithm.Algorithm.Equal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}) {
			t.Errorf("rsa spkac algorithm %v", outer.Algorithm.Algorithm)
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig); err != nil {
			t.Errorf("spkac signature: %v", err)
		}
	case *ecdsa.PublicKey:
		if !outer.Algorithm.Algorithm.Equal(asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}) {
			t.Errorf("ecdsa spkac algorithm %v", outer.Algorithm.Algorithm)
		}
		if raw {
			if len(sig) != 64 || !ecdsa.Verify(k, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
				t.Errorf("spkac signature is not a valid raw r||s (%d bytes)", len(sig))
			}
		} else if !ecdsa.VerifyASN1(k, digest[:], sig) {
			t.Errorf("spkac signature is not a valid DER signature")
		}
	default:
		t.Fatalf("key %T", pub)
	}
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// wantVAError checks a Google error envelope: 400 INVALID_ARGUMENT with a BadRequest detail,
// and the substring in the message (for people: clients branch on the status).
func wantVAError(t *testing.T, err error, substr string) {
	t.Helper()
	gerr := frontendtest.WantError(t, err, 400, "INVALID_ARGUMENT")
	if !strings.Contains(gerr.Message, substr) {
		t.Errorf("message %q lacks %q", gerr.Message, substr)
	}
	if !strings.Contains(gerr.Body, `"details":[{"@type":"type.googleapis.com/google.rpc.BadRequest"`) {
		t.Errorf("envelope without its BadRequest detail: %s", gerr.Body)
	}
}

// fullSignals sets every DeviceSignals field of the v2 API; a test checks none is left zero, so a
// field added to the client library shows up here.
func fullSignals() *va2.DeviceSignals {
	return &va2.DeviceSignals{
		AllowScreenLock:                  true,
		Antivirus:                        &va2.Antivirus{State: "ENABLED"},
		BrowserVersion:                   "107.0.5286.0",
		BuiltInDnsClientEnabled:          true,
		ChromeRemoteDesktopAppBlocked:    true,
		CrowdStrikeAgent:                 &va2.CrowdStrikeAgent{AgentId: "agent-1", CustomerId: "cs-cust"},
		DeviceAffiliationIds:             []string{"aff-1", "aff-2"},
		DeviceEnrollmentDomain:           "corp.example",
		DeviceManufacturer:               "Acme",
		DeviceModel:                      "Book 14",
		DiskEncryption:                   "DISK_ENCRYPTION_DISABLED",
		DisplayName:                      "Alice's laptop",
		Hostname:                         "alice-laptop",
		Imei:                             []string{"490154203237518"},
		MacAddresses:                     []string{"02:00:00:00:00:01", "02:00:00:00:00:02"},
		Meid:                             []string{"A0000000000001"},
		OperatingSystem:                  "WINDOWS",
		OsFirewall:                       "OS_FIREWALL_DISABLED",
		OsVersion:                        "10.0.19045.1",
		PasswordProtectionWarningTrigger: "PASSWORD_PROTECTION_OFF",
		ProfileAffiliationIds:            []string{"aff-3"},
		ProfileEnrollmentDomain:          "users.example",
		RealtimeUrlCheckMode:             "REALTIME_URL_CHECK_MODE_DISABLED",
		SafeBrowsingProtectionLevel:      "INACTIVE",
		ScreenLockSecured:                "SCREEN_LOCK_SECURED_DISABLED",
		SecureBootMode:                   "SECURE_BOOT_MODE_DISABLED",
		SerialNumber:                     "SN-42",
		SiteIsolationEnabled:             true,
		SystemDnsServers:                 []string{"10.0.0.53"},
		ThirdPartyBlockingEnabled:        true,
		Trigger:                          "TRIGGER_LOGIN_SCREEN",
		WindowsMachineDomain:             "AD.CORP",
		WindowsUserDomain:                "USERS.CORP",
	}
}

func TestFullSignalsSetsEveryField(t *testing.T) {
	t.Parallel()
	v := reflect.ValueOf(*fullSignals())
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Name == "ForceSendFields" || f.Name == "NullFields" {
			continue
		}
		if v.Field(i).IsZero() {
			t.Errorf("fullSignals leaves %s unset", f.Name)
		}
	}
}

func TestVAVerifyReportsConfiguredDevice(t *testing.T) {
	t.Parallel()
	custom := &Device{
		DevicePermanentID: "PERM-1", DeviceEnrollmentID: "enr-1", AttestedDeviceID: "ADID-1",
		CustomerID: "C0custom", VirtualDeviceID: "vdev-1", KeyTrustLevel: "CHROME_OS_DEVELOPER_MODE",
		DeviceSignals: fullSignals(),
	}
	tests := []struct {
		name     string
		version  string
		scope    string
		keyType  string
		identity string
		device   *Device
	}{
		{name: "v1 machine rsa default device", version: V1, scope: ScopeMachine, keyType: devicekey.RSA},
		{name: "v1 user ecdsa", version: V1, scope: ScopeUser, keyType: devicekey.ECDSA, identity: "alice@corp.example"},
		{name: "v1 machine custom device", version: V1, scope: ScopeMachine, keyType: devicekey.ECDSA, identity: "corp.example", device: custom},
		{name: "v2 machine rsa default device", version: V2, scope: ScopeMachine, keyType: devicekey.RSA},
		{name: "v2 machine ecdsa default device", version: V2, keyType: devicekey.ECDSA, identity: "corp.example"},
		{name: "v2 user rsa default device", version: V2, scope: ScopeUser, keyType: devicekey.RSA},
		{name: "v2 machine every signal", version: V2, scope: ScopeMachine, keyType: devicekey.ECDSA, identity: "corp.example", device: custom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newVAEnv(t, 0)
			ch := v.challenge(t, tc.version)
			res := v.respond(t, RespondRequest{Challenge: ch, APIVersion: tc.version, Scope: tc.scope,
				KeyType: tc.keyType, Identity: tc.identity, Device: tc.device})
			if res.APIVersion != tc.version || res.KeyType != tc.keyType || res.KeyID == "" {
				t.Errorf("respond result version %q key %q id %q", res.APIVersion, res.KeyType, res.KeyID)
			}
			priv, err := x509.ParsePKCS8PrivateKey(res.PrivateKeyPKCS8)
			if err != nil {
				t.Fatalf("pkcs8: %v", err)
			}
			if spki, _ := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public()); !bytes.Equal(spki, res.SPKI) {
				t.Errorf("private key does not belong to the SPKI")
			}

			identity := tc.identity
			scope := tc.scope
			if scope == "" {
				scope = ScopeMachine
			}
			if identity == "" {
				identity = map[string]string{ScopeMachine: DefaultDomain, ScopeUser: DefaultUser}[scope]
			}
			// Google compares the expected identity case-insensitively.
			got, err := v.verify(t, tc.version, res.ChallengeResponse, strings.ToUpper(identity))
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			checkSPKAC(t, got.SignedPublicKeyAndChallenge, res.SPKI, 32, false)

			want := DefaultDevice(scope, res.KeyID, identity)
			if tc.device != nil {
				want = *tc.device
			}
			wantResult := va2.VerifyChallengeResponseResult{
				AttestedDeviceId: want.AttestedDeviceID, DeviceEnrollmentId: want.DeviceEnrollmentID,
				DevicePermanentId: want.DevicePermanentID, SignedPublicKeyAndChallenge: got.SignedPublicKeyAndChallenge,
			}
			if tc.version == V2 {
				wantResult.CustomerId = want.CustomerID
				wantResult.VirtualDeviceId = want.VirtualDeviceID
				wantResult.KeyTrustLevel = want.KeyTrustLevel
				wantResult.DeviceSignals = want.DeviceSignals
				sigJSON, _ := json.Marshal(want.DeviceSignals)
				wantResult.DeviceSignal = string(sigJSON)
			}
			if !reflect.DeepEqual(got.VerifyChallengeResponseResult, wantResult) {
				gj, _ := json.MarshalIndent(got.VerifyChallengeResponseResult, "", " ")
				wj, _ := json.MarshalIndent(wantResult, "", " ")
				t.Errorf("verify result\n got %s\nwant %s", gj, wj)
			}
			if tc.version == V1 {
				wantOut := got.SignedPublicKeyAndChallenge
				if scope == ScopeMachine {
					wantOut = want.DevicePermanentID
				}
				if got.VerificationOutput != wantOut {
					t.Errorf("verificationOutput = %q, want %q", got.VerificationOutput, wantOut)
				}
			}
			if scope == ScopeMachine && tc.device == nil && (got.DevicePermanentId == "" || got.DeviceEnrollmentId == "") {
				t.Errorf("machine default lacks devicePermanentId or deviceEnrollmentId: %+v", got)
			}
			if scope == ScopeUser && (got.DevicePermanentId != "" || got.DeviceEnrollmentId != "") {
				t.Errorf("user response carries machine-only ids: %+v", got)
			}

			st := v.emu.Stats()
			if st.Challenges[tc.version] != 1 || st.Responses != 1 || st.VerifyCalls[tc.version] != 1 ||
				st.Verifies[OutcomeVerified] != 1 {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

// TestVAAnswersAsChromeOS: the simulated device answers as ChromeOS does, for both TPM versions
// and both key types, ECDSA signing in DER or raw r||s: the answer is SignedData{ChallengeResponse
// {challenge = the SignedData handed out, nonce, encrypted key info}, signature by the key}, the
// SPKAC (random hex challenge, NULL parameters) travels only inside the encrypted key info, and
// challenge:verify hands it out.
func TestVAAnswersAsChromeOS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		tpm        string
		challenge  int
		keyType    string
		raw        bool
		wantSigLen int // 0 = DER
	}{
		{TPM20, 32, devicekey.RSA, false, 256}, {TPM12, 20, devicekey.RSA, false, 256},
		{TPM20, 32, devicekey.ECDSA, false, 0}, {TPM12, 20, devicekey.ECDSA, false, 0},
		{TPM20, 32, devicekey.ECDSA, true, 64}, {TPM12, 20, devicekey.ECDSA, true, 64},
	} {
		name := fmt.Sprintf("TPM %s %s raw=%v", tc.tpm, tc.keyType, tc.raw)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			v := newVAEnv(t, 0)
			for _, version := range []string{V1, V2} {
				ch := v.challenge(t, version)
				res := v.respond(t, RespondRequest{Challenge: ch, KeyType: tc.keyType, TPMVersion: tc.tpm, RawSignatures: tc.raw})
				data, sig, err := wire.UnmarshalSignedData(res.ChallengeResponse)
				if err != nil {
					t.Fatal(err)
				}
				cr, err := parseChallengeResponse(data)
				if err != nil {
					t.Fatalf("the answer is not a ChallengeResponse: %v", err)
				}
				if !bytes.Equal(cr.challenge, ch) || len(cr.nonce) == 0 || len(cr.encryptedKeyInfo.wrappedKey) != 256 ||
					len(cr.encryptedKeyInfo.mac) != 64 || len(cr.encryptedKeyInfo.iv) != 16 {
					t.Errorf("ChallengeResponse: challenge equal %v, nonce %d bytes, encrypted key info %+v",
						bytes.Equal(cr.challenge, ch), len(cr.nonce), cr.encryptedKeyInfo)
				}
				if tc.wantSigLen != 0 && len(sig) != tc.wantSigLen {
					t.Errorf("answer signature of %d bytes, want %d", len(sig), tc.wantSigLen)
				}
				if err := devicekey.Verify(res.SPKI, data, sig); err != nil {
					t.Errorf("the answer is not signed by the registered key: %v", err)
				}
				got, err := v.verify(t, version, res.ChallengeResponse, "")
				if err != nil {
					t.Fatalf("verify %s: %v", version, err)
				}
				checkSPKAC(t, got.SignedPublicKeyAndChallenge, res.SPKI, tc.challenge, tc.raw && tc.keyType == devicekey.ECDSA)
				if bytes.Contains(res.ChallengeResponse, mustB64(t, got.SignedPublicKeyAndChallenge)) {
					t.Error("the SPKAC is readable in the answer; ChromeOS encrypts it for Google")
				}
			}
		})
	}
}

// TestVAVerifiesAnswersItDidNotMake: an answer built outside the emulator — as the sample
// extension's stand-in for chrome.enterprise does with WebCrypto — from the published service
// key verifies, and is reported as the default device of its key and identity.
func TestVAVerifiesAnswersItDidNotMake(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	resp, err := http.Get(v.srv.URL + ServiceKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	var sk ServiceKey
	if err := json.NewDecoder(resp.Body).Decode(&sk); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	pub, err := x509.ParsePKIXPublicKey(sk.PublicKey)
	if err != nil || sk.KeyID == "" {
		t.Fatalf("service key %v %q", err, sk.KeyID)
	}
	key, err := devicekey.New(devicekey.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	answer := func(ch []byte, keyType uint64, identity string, tamper bool) []byte {
		spkac, err := buildSPKAC(key, "00112233445566778899aabbccddeeff00112233", true)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := encryptKeyInfo(pub.(*rsa.PublicKey), []byte(sk.KeyID), keyInfo{keyType: keyType, domain: identity, spkac: spkac}.marshal())
		if err != nil {
			t.Fatal(err)
		}
		data := challengeResponse{challenge: ch, nonce: []byte("nonce-from-outside"), encryptedKeyInfo: enc}.marshal()
		sig, err := key.Sign(data, true)
		if err != nil {
			t.Fatal(err)
		}
		if tamper {
			enc.mac[0] ^= 1
			data = challengeResponse{challenge: ch, nonce: []byte("nonce-from-outside"), encryptedKeyInfo: enc}.marshal()
		}
		return wire.MarshalSignedData(data, sig)
	}
	got, err := v.verify(t, V2, answer(v.challenge(t, V2), keyTypeEUK, "carol@corp.example", false), "carol@corp.example")
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	checkSPKAC(t, got.SignedPublicKeyAndChallenge, key.SPKI, 20, true)
	if got.DeviceSignals == nil || got.DeviceSignals.ProfileEnrollmentDomain != "corp.example" || got.DevicePermanentId != "" {
		t.Errorf("an outside user answer reported as %+v", got)
	}
	_, err = v.verify(t, V2, answer(v.challenge(t, V2), keyTypeEMK, "corp.example", true), "corp.example")
	wantVAError(t, err, "MAC does not verify")
}

func TestVAVerifyRefusals(t *testing.T) {
	t.Parallel()
	type setup struct {
		v       *vaEnv
		version string
	}
	tests := []struct {
		name        string
		lifetime    time.Duration
		run         func(t *testing.T, s setup) error // returns the error of the verify under test
		wantMessage string
		wantOutcome string
	}{
		{
			name: "expired after the default 60s",
			run: func(t *testing.T, s setup) error {
				res := s.v.respond(t, RespondRequest{Challenge: s.v.challenge(t, s.version), KeyType: devicekey.ECDSA})
				s.v.clock.Advance(DefaultChallengeLifetime + time.Nanosecond)
				_, err := s.v.verify(t, s.version, res.ChallengeResponse, "")
				return err
			},
			wantMessage: vaMessageExpired, wantOutcome: OutcomeExpired,
		},
		{
			name:     "expired after a short configured lifetime",
			lifetime: 2 * time.Second,
			run: func(t *testing.T, s setup) error {
				res := s.v.respond(t, RespondRequest{Challenge: s.v.challenge(t, s.version), KeyType: devicekey.ECDSA})
				s.v.clock.Advance(3 * time.Second)
				_, err := s.v.verify(t, s.version, res.ChallengeResponse, "")
				return err
			},
			wantMessage: vaMessageExpired, wantOutcome: OutcomeExpired,
		},
		{
			name: "same response verified twice",
			run: func(t *testing.T, s setup) error {
				res := s.v.respond(t, RespondRequest{Challenge: s.v.challenge(t, s.version), KeyType: devicekey.ECDSA})
				if _, err := s.v.verify(t, s.version, res.ChallengeResponse, ""); err != nil {
					t.Fatalf("first verify: %v", err)
				}
				_, err := s.v.verify(t, s.version, res.ChallengeResponse, "")
				return err
			},
			wantMessage: vaMessageAlreadyUsed, wantOutcome: OutcomeAlreadyUsed,
		},
		{
			name: "second response to a used challenge",
			run: func(t *testing.T, s setup) error {
				ch := s.v.challenge(t, s.version)
				first := s.v.respond(t, RespondRequest{Challenge: ch, KeyType: devicekey.ECDSA})
				second := s.v.respond(t, RespondRequest{Challenge: ch, KeyType: devicekey.ECDSA})
				if _, err := s.v.verify(t, s.version, first.ChallengeResponse, ""); err != nil {
					t.Fatalf("first verify: %v", err)
				}
				_, err := s.v.verify(t, s.version, second.ChallengeResponse, "")
				return err
			},
			wantMessage: vaMessageAlreadyUsed, wantOutcome: OutcomeAlreadyUsed,
		},
		{
			name: "unknown response",
			run: func(t *testing.T, s setup) error {
				_, err := s.v.verify(t, s.version, wire.MarshalSignedData([]byte("not a response"), []byte("sig")), "")
				return err
			},
			wantMessage: vaMessageInvalid, wantOutcome: OutcomeInvalid,
		},
		{
			name: "response from another emulator",
			run: func(t *testing.T, s setup) error {
				other := newVAEnv(t, 0)
				res := other.respond(t, RespondRequest{Challenge: other.challenge(t, s.version), KeyType: devicekey.ECDSA})
				_, err := s.v.verify(t, s.version, res.ChallengeResponse, "")
				return err
			},
			wantMessage: vaMessageInvalid, wantOutcome: OutcomeInvalid,
		},
		{
			name: "tampered response",
			run: func(t *testing.T, s setup) error {
				res := s.v.respond(t, RespondRequest{Challenge: s.v.challenge(t, s.version), KeyType: devicekey.RSA, Tamper: true})
				_, err := s.v.verify(t, s.version, res.ChallengeResponse, "")
				return err
			},
			wantMessage: vaMessageInvalid, wantOutcome: OutcomeInvalid,
		},
		{
			name: "identity mismatch",
			run: func(t *testing.T, s setup) error {
				res := s.v.respond(t, RespondRequest{Challenge: s.v.challenge(t, s.version), Scope: ScopeUser,
					KeyType: devicekey.ECDSA, Identity: "mallory@example.com"})
				_, err := s.v.verify(t, s.version, res.ChallengeResponse, "alice@example.com")
				return err
			},
			wantMessage: vaMessageIdentityMismatch, wantOutcome: OutcomeIdentityMismatch,
		},
		{
			name: "challenge of the other API version",
			run: func(t *testing.T, s setup) error {
				other := V1
				if s.version == V1 {
					other = V2
				}
				res := s.v.respond(t, RespondRequest{Challenge: s.v.challenge(t, other), KeyType: devicekey.ECDSA})
				_, err := s.v.verify(t, s.version, res.ChallengeResponse, "")
				return err
			},
			wantMessage: vaMessageInvalid, wantOutcome: OutcomeInvalid,
		},
	}
	for _, tc := range tests {
		for _, version := range []string{V1, V2} {
			t.Run(version+" "+tc.name, func(t *testing.T) {
				t.Parallel()
				v := newVAEnv(t, tc.lifetime)
				err := tc.run(t, setup{v: v, version: version})
				wantVAError(t, err, tc.wantMessage)
				if got := v.emu.Stats().Verifies[tc.wantOutcome]; got != 1 {
					t.Errorf("Verifies[%s] = %d, want 1 (%+v)", tc.wantOutcome, got, v.emu.Stats())
				}
			})
		}
	}
}

func TestVAExpiryBoundary(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	res := v.respond(t, RespondRequest{Challenge: v.challenge(t, V2), KeyType: devicekey.ECDSA})
	v.clock.Advance(DefaultChallengeLifetime)
	if _, err := v.verify(t, V2, res.ChallengeResponse, ""); err != nil {
		t.Errorf("verify exactly at the lifetime: %v", err)
	}
}

// A response that fails verification must not use up the challenge; an authentic one that fails
// the identity check does, because the challenge was genuinely answered.
func TestVAChallengeConsumption(t *testing.T) {
	t.Parallel()
	for _, version := range []string{V1, V2} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			v := newVAEnv(t, 0)
			ch := v.challenge(t, version)
			bad := v.respond(t, RespondRequest{Challenge: ch, KeyType: devicekey.ECDSA, Tamper: true})
			_, err := v.verify(t, version, bad.ChallengeResponse, "")
			wantVAError(t, err, vaMessageInvalid)
			good := v.respond(t, RespondRequest{Challenge: ch, KeyType: devicekey.ECDSA, KeyID: bad.KeyID})
			if _, err := v.verify(t, version, good.ChallengeResponse, ""); err != nil {
				t.Fatalf("verify after a tampered attempt: %v", err)
			}

			ch2 := v.challenge(t, version)
			r1 := v.respond(t, RespondRequest{Challenge: ch2, KeyType: devicekey.ECDSA})
			_, err = v.verify(t, version, r1.ChallengeResponse, "other.example")
			wantVAError(t, err, vaMessageIdentityMismatch)
			r2 := v.respond(t, RespondRequest{Challenge: ch2, KeyType: devicekey.ECDSA})
			_, err = v.verify(t, version, r2.ChallengeResponse, DefaultDomain)
			wantVAError(t, err, vaMessageAlreadyUsed)
		})
	}
}

// TamperSPKAC leaves Google's check passing and breaks only the SPKAC signature.
func TestVATamperSPKAC(t *testing.T) {
	t.Parallel()
	for _, keyType := range []string{devicekey.RSA, devicekey.ECDSA} {
		t.Run(keyType, func(t *testing.T) {
			t.Parallel()
			v := newVAEnv(t, 0)
			res := v.respond(t, RespondRequest{Challenge: v.challenge(t, V2), KeyType: keyType, TamperSPKAC: true})
			got, err := v.verify(t, V2, res.ChallengeResponse, "")
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			// The adapter's parser, the one place SPKACs are verified, finds the structure
			// intact and only the signature wrong.
			if _, err := verifiedaccess.ParseSPKAC(mustB64(t, got.SignedPublicKeyAndChallenge)); err == nil || !strings.Contains(err.Error(), "does not verify") {
				t.Errorf("ParseSPKAC of a tampered SPKAC: %v, want a signature that does not verify", err)
			}

		})
	}
}

func TestVAKeyReuse(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	first := v.respond(t, RespondRequest{Challenge: v.challenge(t, V2), KeyType: devicekey.ECDSA, KeyID: "laptop-1"})
	again := v.respond(t, RespondRequest{Challenge: v.challenge(t, V1), KeyID: "laptop-1"})
	other := v.respond(t, RespondRequest{Challenge: v.challenge(t, V2), KeyType: devicekey.ECDSA})
	if first.KeyID != "laptop-1" || again.KeyID != "laptop-1" || again.KeyType != devicekey.ECDSA {
		t.Errorf("key ids %q %q type %q", first.KeyID, again.KeyID, again.KeyType)
	}
	if !bytes.Equal(first.SPKI, again.SPKI) {
		t.Errorf("reused key id has a different key")
	}
	if bytes.Equal(first.SPKI, other.SPKI) || other.KeyID == first.KeyID {
		t.Errorf("a request without key id reused a key")
	}
	// The default device is stable per key: the same key reports the same device ids.
	r1, err := v.verify(t, V2, first.ChallengeResponse, "")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := v.verify(t, V1, again.ChallengeResponse, "")
	if err != nil {
		t.Fatal(err)
	}
	if r1.DevicePermanentId == "" || r1.DevicePermanentId != r2.DevicePermanentId {
		t.Errorf("devicePermanentId %q then %q", r1.DevicePermanentId, r2.DevicePermanentId)
	}
	_, err = v.emu.Respond(context.Background(), RespondRequest{Challenge: v.challenge(t, V2),
		KeyType: devicekey.RSA, KeyID: "laptop-1"})
	var aerr *frontend.Error
	if !errors.As(err, &aerr) || aerr.Code != 400 {
		t.Errorf("reusing an ecdsa key id as rsa: %v, want a 400 error", err)
	}
}

// postRaw sends a raw JSON body and returns the status and body.
func postRaw(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestVARespondEndpointRoundTrip(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	ch := v.challenge(t, V2)
	device := Device{
		DevicePermanentID: "PERM-9", DeviceEnrollmentID: "enr-9", AttestedDeviceID: "ADID-9",
		CustomerID: "C0json", VirtualDeviceID: "vdev-9", KeyTrustLevel: "CHROME_OS_VERIFIED_MODE",
		DeviceSignals: fullSignals(),
	}
	deviceJSON, err := json.Marshal(device)
	if err != nil {
		t.Fatal(err)
	}
	// URL-safe unpadded base64 is accepted as well as the standard form.
	body := `{"challenge":"` + base64.RawURLEncoding.EncodeToString(ch) + `","apiVersion":"v2","scope":"machine",` +
		`"keyType":"ecdsa","keyId":"json-key","identity":"corp.example","device":` + string(deviceJSON) + `,"tamper":false}`
	code, raw := postRaw(t, v.srv.URL+RespondPath, body)
	if code != 200 {
		t.Fatalf("respond: %d %s", code, raw)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"challengeResponse", "spki", "privateKeyPkcs8", "keyId", "keyType", "apiVersion"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("respond answer lacks %q: %s", k, raw)
		}
	}
	var res RespondResult
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	if res.KeyID != "json-key" || res.APIVersion != V2 || res.KeyType != devicekey.ECDSA {
		t.Errorf("respond answer %+v", res)
	}
	got, err := v.verify(t, V2, res.ChallengeResponse, "corp.example")
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	var gotDevice Device
	gotJSON, _ := json.Marshal(got.VerifyChallengeResponseResult)
	if err := json.Unmarshal(gotJSON, &gotDevice); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotDevice, device) {
		t.Errorf("verify reported\n%+v\nwant\n%+v", gotDevice, device)
	}
	checkSPKAC(t, got.SignedPublicKeyAndChallenge, res.SPKI, 32, false)

	// The Go request type encodes to the same contract.
	req := RespondRequest{Challenge: ch, APIVersion: V2, Scope: ScopeUser, KeyType: devicekey.RSA, KeyID: "k",
		Identity: "a@b", Device: &device, Tamper: true, TPMVersion: TPM12, RawSignatures: true}
	enc, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var back RespondRequest
	if err := json.Unmarshal(enc, &back); err != nil {
		t.Fatalf("decode %s: %v", enc, err)
	}
	if !reflect.DeepEqual(back, req) {
		t.Errorf("round trip\n%+v\nwant\n%+v", back, req)
	}
}

func TestVARespondEndpointRefusals(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	ch := frontend.Base64(v.challenge(t, V1))
	forged := frontend.Base64(wire.MarshalSignedData([]byte("data"), []byte("not the emulator's mac")))
	tests := []struct {
		name, body string
		wantCode   int
	}{
		{name: "unknown key", body: `{"challenge":"` + ch + `","colour":"red"}`, wantCode: 400},
		{name: "unknown device key", body: `{"challenge":"` + ch + `","device":{"serial":"x"}}`, wantCode: 400},
		{name: "unknown signal key", body: `{"challenge":"` + ch + `","device":{"deviceSignals":{"colour":"red"}}}`, wantCode: 400},
		{name: "not json", body: `challenge`, wantCode: 400},
		{name: "bad base64", body: `{"challenge":"***"}`, wantCode: 400},
		{name: "no challenge", body: `{}`, wantCode: 400},
		{name: "challenge not issued here", body: `{"challenge":"` + forged + `"}`, wantCode: 400},
		{name: "bad scope", body: `{"challenge":"` + ch + `","scope":"device"}`, wantCode: 400},
		{name: "bad key type", body: `{"challenge":"` + ch + `","keyType":"dsa"}`, wantCode: 400},
		{name: "bad api version", body: `{"challenge":"` + ch + `","apiVersion":"v3"}`, wantCode: 400},
		{name: "api version of the other kind", body: `{"challenge":"` + ch + `","apiVersion":"v2"}`, wantCode: 400},
		{name: "bad tpm version", body: `{"challenge":"` + ch + `","tpmVersion":"3.0"}`, wantCode: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, raw := postRaw(t, v.srv.URL+RespondPath, tc.body)
			if code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", code, tc.wantCode, raw)
			}
			if frontendtest.Status(string(raw)) != "INVALID_ARGUMENT" {
				t.Errorf("body %s lacks the envelope", raw)
			}
		})
	}
	if st := v.emu.Stats(); st.Responses != 0 {
		t.Errorf("refused requests counted as responses: %+v", st)
	}
	resp, err := http.Get(v.srv.URL + RespondPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET respond: %d", resp.StatusCode)
	}
}

func TestVARESTShapes(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	tests := []struct {
		name, method, path, body string
		wantCode                 int
		wantStatus               string
	}{
		{name: "GET v1 challenge", method: http.MethodGet, path: PathChallengeV1, wantCode: 404, wantStatus: "NOT_FOUND"},
		{name: "v1 challenge with a field", method: http.MethodPost, path: PathChallengeV1, body: `{"x":1}`, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "v2 verify with an unknown field", method: http.MethodPost, path: PathVerifyV2, body: `{"response":"AA=="}`, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "v2 verify empty", method: http.MethodPost, path: PathVerifyV2, body: `{}`, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "v1 verify empty", method: http.MethodPost, path: PathVerifyV1, body: `{}`, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "v2 verify not SignedData", method: http.MethodPost, path: PathVerifyV2, body: `{"challengeResponse":"/////w=="}`, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "v1 challenge, empty body", method: http.MethodPost, path: PathChallengeV1, wantCode: 200},
		{name: "v2 generate", method: http.MethodPost, path: PathGenerateV2, body: `{}`, wantCode: 200},
		{name: "stats", method: http.MethodGet, path: StatsPath, wantCode: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, v.srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantCode, raw)
			}
			if tc.wantStatus != "" && frontendtest.Status(string(raw)) != tc.wantStatus {
				t.Errorf("body %s, want status %s", raw, tc.wantStatus)
			}
		})
	}
	var st Stats
	resp, err := http.Get(v.srv.URL + StatsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st, v.emu.Stats()) || st.Challenges[V1] != 1 || st.Challenges[V2] != 1 ||
		st.Verifies[OutcomeMalformed] != 1 || st.Verifies[OutcomeInvalid] != 3 {
		t.Errorf("stats endpoint %+v, emulator %+v", st, v.emu.Stats())
	}
}

func inject(t *testing.T, faults *frontend.Faults, f frontend.Fault) {
	t.Helper()
	if err := faults.Inject(f); err != nil {
		t.Fatal(err)
	}
}

func TestVAFaultInjection(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	inject(t, v.faults, frontend.Fault{Method: MethodGenerateV2, Times: 1, Status: 503, RetryAfter: 2 * time.Second})
	_, err := v.v2.Challenge.Generate(&va2.Empty{}).Do()
	frontendtest.WantError(t, err, 503, "UNAVAILABLE")

	res := v.respond(t, RespondRequest{Challenge: v.challenge(t, V1), KeyType: devicekey.ECDSA})
	inject(t, v.faults, frontend.Fault{Method: MethodVerifyV1, Times: 1, Status: 429})
	_, err = v.verify(t, V1, res.ChallengeResponse, "")
	if gerr := frontendtest.WantError(t, err, 429, "RESOURCE_EXHAUSTED"); !strings.Contains(gerr.Body, `"reason":"RATE_LIMIT_EXCEEDED"`) {
		t.Errorf("429 without its ErrorInfo: %s", gerr.Body)
	}

	// A lost response was applied: the retry finds the challenge used.
	inject(t, v.faults, frontend.Fault{Method: MethodVerifyV1, Times: 1, AfterApply: true})
	_, err = v.verify(t, V1, res.ChallengeResponse, "")
	frontendtest.WantError(t, err, 503, "UNAVAILABLE")
	_, err = v.verify(t, V1, res.ChallengeResponse, "")
	wantVAError(t, err, vaMessageAlreadyUsed)

	st := v.emu.Stats()
	want := map[string]int{OutcomeInjected: 1, OutcomeVerified: 1, OutcomeAlreadyUsed: 1}
	if !reflect.DeepEqual(st.Verifies, want) || st.VerifyCalls[V1] != 3 || st.Challenges[V2] != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestVAConcurrentEnrollments(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			version := []string{V1, V2}[i%2]
			// Half the requests share one key id, racing to create it.
			keyID := ""
			if i%4 < 2 {
				keyID = "shared"
			}
			var ch []byte
			if version == V1 {
				c, err := v.v1.Challenge.Create(&va1.Empty{}).Do()
				if err != nil {
					errs[i] = err
					return
				}
				d, _ := base64.StdEncoding.DecodeString(c.Challenge.Data)
				s, _ := base64.StdEncoding.DecodeString(c.Challenge.Signature)
				ch = wire.MarshalSignedData(d, s)
			} else {
				c, err := v.v2.Challenge.Generate(&va2.Empty{}).Do()
				if err != nil {
					errs[i] = err
					return
				}
				ch, _ = base64.StdEncoding.DecodeString(c.Challenge)
			}
			res, err := v.emu.Respond(context.Background(), RespondRequest{Challenge: ch, KeyType: devicekey.ECDSA, KeyID: keyID})
			if err != nil {
				errs[i] = err
				return
			}
			if version == V1 {
				d, s, _ := wire.UnmarshalSignedData(res.ChallengeResponse)
				_, errs[i] = v.v1.Challenge.Verify(&va1.VerifyChallengeResponseRequest{
					ChallengeResponse: &va1.SignedData{Data: frontend.Base64(d), Signature: frontend.Base64(s)}}).Do()
			} else {
				_, errs[i] = v.v2.Challenge.Verify(&va2.VerifyChallengeResponseRequest{
					ChallengeResponse: frontend.Base64(res.ChallengeResponse)}).Do()
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("enrollment %d: %v", i, err)
		}
	}
	st := v.emu.Stats()
	if st.Challenges[V1] != n/2 || st.Challenges[V2] != n/2 || st.Responses != n || st.Verifies[OutcomeVerified] != n {
		t.Errorf("stats = %+v", st)
	}
}

func TestVAOldChallengesAreForgotten(t *testing.T) {
	t.Parallel()
	v := newVAEnv(t, 0)
	res := v.respond(t, RespondRequest{Challenge: v.challenge(t, V2), KeyType: devicekey.ECDSA})
	v.clock.Advance(DefaultChallengeLifetime + vaRetention + time.Second)
	v.challenge(t, V2) // issuing purges
	_, err := v.verify(t, V2, res.ChallengeResponse, "")
	wantVAError(t, err, vaMessageInvalid)
}

func TestNewRejectsNegativeLifetime(t *testing.T) {
	t.Parallel()
	if _, err := New(Options{ChallengeLifetime: -time.Second}); err == nil {
		t.Fatal("New accepted a negative challenge lifetime")
	}
}

func TestPatchVADevice(t *testing.T) {
	t.Parallel()
	base := DefaultDevice(ScopeMachine, "k", "corp.example")
	tests := []struct {
		name    string
		patch   string
		check   func(d Device) bool
		wantErr bool
	}{
		{name: "change one signal", patch: `{"deviceSignals":{"diskEncryption":"DISK_ENCRYPTION_DISABLED"}}`,
			check: func(d Device) bool {
				return d.DeviceSignals.DiskEncryption == "DISK_ENCRYPTION_DISABLED" &&
					d.DeviceSignals.OsFirewall == base.DeviceSignals.OsFirewall && d.CustomerID == base.CustomerID
			}},
		{name: "remove a field", patch: `{"keyTrustLevel":null,"deviceSignals":{"macAddresses":null}}`,
			check: func(d Device) bool {
				return d.KeyTrustLevel == "" && d.DeviceSignals.MacAddresses == nil && d.DevicePermanentID == base.DevicePermanentID
			}},
		{name: "replace a list", patch: `{"deviceSignals":{"deviceAffiliationIds":["x"]}}`,
			check: func(d Device) bool { return reflect.DeepEqual(d.DeviceSignals.DeviceAffiliationIds, []string{"x"}) }},
		{name: "misspelt key", patch: `{"deviceSignal":{"diskEncryption":"X"}}`, wantErr: true},
		{name: "not an object", patch: `[1]`, wantErr: true},
		{name: "not json", patch: `{`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PatchDevice(base, []byte(tc.patch))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && !tc.check(got) {
				t.Errorf("patched device %+v", got)
			}
		})
	}
	if base.DeviceSignals.DiskEncryption != "DISK_ENCRYPTION_ENCRYPTED" || base.KeyTrustLevel == "" {
		t.Errorf("patching changed the base device")
	}
}
