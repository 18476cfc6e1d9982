package emulator

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	cm "google.golang.org/api/chromemanagement/v1"

	"github.com/certprov/certprov-adapter/internal/emulator/devicekey"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend/frontendtest"
	"github.com/certprov/certprov-adapter/internal/process"
)

// verifyWithStdlib checks a device signature independently of the emulator's own helpers.
func verifyWithStdlib(t *testing.T, spkiB64 string, data, sig []byte) bool {
	t.Helper()
	spki, err := base64.StdEncoding.DecodeString(spkiB64)
	if err != nil {
		t.Fatalf("spki base64: %v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		t.Fatalf("spki: %v", err)
	}
	digest := sha256.Sum256(data)
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() != 2048 {
			t.Errorf("rsa key has %d bits, want 2048", k.N.BitLen())
		}
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name != "P-256" {
			t.Errorf("curve %s, want P-256", k.Curve.Params().Name)
		}
		if len(sig) == 64 {
			return ecdsa.Verify(k, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
		}
		return ecdsa.VerifyASN1(k, digest[:], sig)
	default:
		t.Fatalf("unexpected key %T", pub)
		return false
	}
}

func TestFullFlowWithGeneratedClient(t *testing.T) {
	t.Parallel()
	scep := &process.SCEPProfile{
		CommonName: "dev-1", Organization: "Example", OrganizationalUnits: []string{"IT", "Ops"},
		Country: "JP", TemplateName: "Machine",
		SANs:      []process.SAN{{Type: process.SANDNS, Value: "dev-1.example.com"}},
		KeyUsages: []string{process.KeyUsageSigning},
	}
	tests := []struct {
		name    string
		spec    ProcessSpec
		wantRaw bool
	}{
		{name: "device rsa", spec: ProcessSpec{ProfileRef: "device", CARef: "builtin"}},
		{name: "device ec der", spec: ProcessSpec{KeyType: KeyECDSA, ProfileRef: "device", CARef: "builtin", SignDelay: 20 * time.Millisecond}},
		{name: "device ec raw", spec: ProcessSpec{KeyType: KeyECDSA, ECDSARawSignature: true, ProfileRef: "device"}, wantRaw: true},
		{name: "user rsa affiliated", spec: ProcessSpec{Scope: ScopeUser, AffiliatedUser: true, ProfileRef: "user", UserEmail: "alice@example.com"}},
		{name: "user ec", spec: ProcessSpec{Scope: ScopeUser, KeyType: KeyECDSA, ProfileRef: "user"}},
		{name: "scep profile and connection", spec: ProcessSpec{KeyType: KeyECDSA, SCEPProfile: scep, SCEPCAConnection: true, CARef: "ndes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			ca := newTestCA(t, "Test CA")
			name := v.start(t, tc.spec)
			wantID := name[strings.LastIndex(name, "/")+1:]
			if len(wantID) != 32 || strings.ToUpper(wantID) != wantID {
				t.Errorf("process id %q: want 32 upper-case hex characters", wantID)
			}

			got, err := v.api.Get(name).Do()
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			snap := v.snap(t, name)
			if got.Name != name || got.SubjectPublicKeyInfo != base64.StdEncoding.EncodeToString(snap.SPKI) {
				t.Errorf("get: name %q spki %q, want %q and the device spki", got.Name, got.SubjectPublicKeyInfo, name)
			}
			if _, err := time.Parse(time.RFC3339, got.StartTime); err != nil {
				t.Errorf("startTime %q: %v", got.StartTime, err)
			}
			if got.SignData != "" || got.Signature != "" || got.FailureMessage != "" || got.IssuedCertificate != "" {
				t.Errorf("fresh process has late fields: %+v", got)
			}
			checkUnions(t, tc.spec, got)

			data := []byte("certification request info of " + tc.name)
			done := v.signed(t, name, data)
			if done.Error != nil {
				t.Fatalf("operation error: %+v", done.Error)
			}
			var resp cm.GoogleChromeManagementVersionsV1SignDataResponse
			if err := json.Unmarshal(done.Response, &resp); err != nil {
				t.Fatalf("operation response: %v", err)
			}
			rp := resp.CertificateProvisioningProcess
			if rp == nil || rp.Signature == "" {
				t.Fatalf("operation response without signature: %s", done.Response)
			}
			if rp.SignData != base64.StdEncoding.EncodeToString(data) {
				t.Errorf("response signData = %q", rp.SignData)
			}
			sig, err := base64.StdEncoding.DecodeString(rp.Signature)
			if err != nil {
				t.Fatalf("signature base64: %v", err)
			}
			if tc.wantRaw != (len(sig) == 64) {
				t.Errorf("signature length %d, raw wanted: %v", len(sig), tc.wantRaw)
			}
			if !verifyWithStdlib(t, rp.SubjectPublicKeyInfo, data, sig) {
				t.Errorf("device signature does not verify")
			}
			if err := devicekey.Verify(snap.SPKI, data, sig); err != nil {
				t.Errorf("devicekey.Verify: %v", err)
			}
			if s := v.snap(t, name); s.State != StateSigned {
				t.Errorf("state after signing = %s, want %s", s.State, StateSigned)
			}

			leaf := ca.issue(t, snap.PublicKey, "leaf "+tc.name)
			if err := v.upload(name, leaf); err != nil {
				t.Fatalf("upload: %v", err)
			}
			final, err := v.api.Get(name).Do()
			if err != nil {
				t.Fatalf("get after upload: %v", err)
			}
			if final.IssuedCertificate != leaf || final.Signature != rp.Signature {
				t.Errorf("issued process: certificate or signature missing: %+v", final)
			}
			s := v.snap(t, name)
			if !s.Finished() || s.State != StateIssued || s.FinishedAt.IsZero() {
				t.Errorf("snapshot = %s finished %v at %v, want issued", s.State, s.Finished(), s.FinishedAt)
			}
			cert, err := VerifyIssued(s, ca.pool, nil)
			if err != nil {
				t.Fatalf("VerifyIssued: %v", err)
			}
			if cert.Subject.CommonName != "leaf "+tc.name {
				t.Errorf("CN = %q", cert.Subject.CommonName)
			}
			want := map[string]int{MethodGet: 2, MethodClaim: 1, MethodSignData: 1, MethodUploadCertificate: 1}
			for m, n := range want {
				if s.Calls[m] != n {
					t.Errorf("calls[%s] = %d, want %d (all: %v)", m, s.Calls[m], n, s.Calls)
				}
			}
			if s.Calls[MethodOperationsGet] < 1 || s.SignDataCount != 1 {
				t.Errorf("calls = %v, signDataCount = %d", s.Calls, s.SignDataCount)
			}
		})
	}
}

// checkUnions checks the subject, profile and CA connection unions of a fresh process.
func checkUnions(t *testing.T, spec ProcessSpec, got *cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess) {
	t.Helper()
	if spec.Scope == ScopeUser {
		us := got.ChromeOsUserSession
		if us == nil || got.ChromeOsDevice != nil {
			t.Fatalf("user process: chromeOsUserSession %v chromeOsDevice %v", us, got.ChromeOsDevice)
		}
		if us.UserPrimaryEmail == "" || us.UserDirectoryApiId == "" {
			t.Errorf("user session incomplete: %+v", us)
		}
		if spec.UserEmail != "" && us.UserPrimaryEmail != spec.UserEmail {
			t.Errorf("email = %q, want %q", us.UserPrimaryEmail, spec.UserEmail)
		}
		if spec.AffiliatedUser != (us.ChromeOsDevice != nil) {
			t.Errorf("affiliated %v but device %v", spec.AffiliatedUser, us.ChromeOsDevice)
		}
	} else {
		d := got.ChromeOsDevice
		if d == nil || got.ChromeOsUserSession != nil || d.SerialNumber == "" || d.DeviceDirectoryApiId == "" {
			t.Fatalf("device process: chromeOsDevice %+v user session %v", d, got.ChromeOsUserSession)
		}
	}
	if spec.SCEPProfile != nil {
		sp := got.ScepProfile
		if sp == nil || got.GenericProfile != nil || sp.SubjectCommonName != spec.SCEPProfile.CommonName ||
			len(sp.SubjectAltNames) != len(spec.SCEPProfile.SANs) || sp.CertificateTemplateName != spec.SCEPProfile.TemplateName {
			t.Errorf("scepProfile = %+v, genericProfile = %v", sp, got.GenericProfile)
		}
		if got.SignatureAlgorithm != algorithmFor(normalizedKey(spec.KeyType)) {
			t.Errorf("scep process signatureAlgorithm = %q", got.SignatureAlgorithm)
		}
	} else if got.GenericProfile == nil || got.GenericProfile.ProfileAdapterConfigReference != spec.ProfileRef || got.ScepProfile != nil {
		t.Errorf("genericProfile = %+v, want ref %q", got.GenericProfile, spec.ProfileRef)
	}
	if spec.SCEPCAConnection {
		if got.ScepCaConnection == nil || got.GenericCaConnection != nil || got.ScepCaConnection.CaConnectionAdapterConfigReference != spec.CARef {
			t.Errorf("scepCaConnection = %+v", got.ScepCaConnection)
		}
	} else if got.GenericCaConnection == nil || got.ScepCaConnection != nil || got.GenericCaConnection.CaConnectionAdapterConfigReference != spec.CARef {
		t.Errorf("genericCaConnection = %+v", got.GenericCaConnection)
	}
}

func normalizedKey(k string) string {
	if k == "" {
		return KeyRSA
	}
	return k
}

func TestClaim(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		conflict   int // SetClaimConflictStatus; 0 leaves the default
		prepare    func(t *testing.T, v *env, name string)
		instance   string
		wantCode   int
		wantStatus string
		wantOwner  string
	}{
		{name: "first claim", instance: "a", wantCode: 200, wantOwner: "a"},
		{name: "same instance again", prepare: func(t *testing.T, v *env, n string) { v.claim(t, n, "a") },
			instance: "a", wantCode: 200, wantOwner: "a"},
		{name: "other instance", prepare: func(t *testing.T, v *env, n string) { v.claim(t, n, "a") },
			instance: "b", wantCode: 400, wantStatus: "FAILED_PRECONDITION", wantOwner: "a"},
		{name: "other instance via ClaimAs", prepare: func(t *testing.T, v *env, n string) {
			if err := v.emu.ClaimAs(n, "rival"); err != nil {
				t.Fatal(err)
			}
		}, instance: "b", wantCode: 400, wantStatus: "FAILED_PRECONDITION", wantOwner: "rival"},
		{name: "other instance, 409 configured", conflict: 409,
			prepare:  func(t *testing.T, v *env, n string) { v.claim(t, n, "a") },
			instance: "b", wantCode: 409, wantStatus: "ABORTED", wantOwner: "a"},
		{name: "finished process", prepare: func(t *testing.T, v *env, n string) {
			v.claim(t, n, "a")
			if err := v.setFailure(n, "no"); err != nil {
				t.Fatal(err)
			}
		}, instance: "a", wantCode: 400, wantStatus: "FAILED_PRECONDITION", wantOwner: "a"},
		{name: "empty instance id", instance: "", wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			if tc.conflict != 0 {
				v.emu.SetClaimConflictStatus(tc.conflict)
			}
			name := v.start(t, ProcessSpec{})
			if tc.prepare != nil {
				tc.prepare(t, v, name)
			}
			_, err := v.api.Claim(name, &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{
				CallerInstanceId: tc.instance}).Do()
			if tc.wantCode == 200 {
				if err != nil {
					t.Fatalf("claim: %v", err)
				}
			} else {
				frontendtest.WantError(t, err, tc.wantCode, tc.wantStatus)
			}
			if got := v.snap(t, name).ClaimedBy; got != tc.wantOwner {
				t.Errorf("claimed by %q, want %q", got, tc.wantOwner)
			}
		})
	}
}

func TestUnknownProcessAndPaths(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	_, err := v.api.Get(process.Name("C0demo", "0123456789ABCDEF0123456789ABCDEF")).Do()
	frontendtest.WantError(t, err, 404, "NOT_FOUND")
	name := v.start(t, ProcessSpec{})
	_, err = v.api.Operations.Get(name + "/operations/nope").Do()
	frontendtest.WantError(t, err, 404, "NOT_FOUND")

	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v1/customers/C0demo/certificateProvisioningProcesses"},
		{http.MethodPost, "/v1/" + name + ":frobnicate"},
		{http.MethodGet, "/v1/" + name + ":claim"},
		{http.MethodDelete, "/v1/" + name},
		{http.MethodGet, "/elsewhere"},
	} {
		code, body := rawCall(t, v, tc.method, tc.path, "")
		if code != 404 || frontendtest.Status(body) != "NOT_FOUND" {
			t.Errorf("%s %s = %d %s, want 404 NOT_FOUND envelope", tc.method, tc.path, code, body)
		}
	}
}

func TestMyCustomerAlias(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	name := v.start(t, ProcessSpec{Customer: "C0other"})
	id := name[strings.LastIndex(name, "/")+1:]
	got, err := v.api.Get(process.Name("my_customer", id)).Do()
	if err != nil {
		t.Fatalf("get via my_customer: %v", err)
	}
	if got.Name != name {
		t.Errorf("name = %q, want %q", got.Name, name)
	}
}

func TestHostileValuesRoundTrip(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	spec := ProcessSpec{
		Scope: ScopeUser, AffiliatedUser: true,
		Serial:            "SN\"/../<script>\n\u202e",
		DeviceDirectoryID: "dev/../../etc/passwd",
		UserEmail:         "a\"b,CN=evil@example.com",
		UserDirectoryID:   "{{.Secret}}\x00",
		ProfileRef:        "${USER_EMAIL}",
		CARef:             "ca\"ref",
	}
	name := v.start(t, spec)
	got, err := v.api.Get(name).Do()
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	us := got.ChromeOsUserSession
	if us.UserPrimaryEmail != spec.UserEmail || us.UserDirectoryApiId != spec.UserDirectoryID ||
		us.ChromeOsDevice.SerialNumber != spec.Serial || us.ChromeOsDevice.DeviceDirectoryApiId != spec.DeviceDirectoryID ||
		got.GenericProfile.ProfileAdapterConfigReference != spec.ProfileRef ||
		got.GenericCaConnection.CaConnectionAdapterConfigReference != spec.CARef {
		t.Errorf("hostile values changed in transit: %+v / %+v", us, us.ChromeOsDevice)
	}
}

func TestSignDataRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		spec        ProcessSpec
		claim       bool
		first       bool   // a first, valid signData before the one under test
		body        string // raw body of the call under test; "" => a valid request
		wantCode    int
		wantStatus  string
		wantState   string
		wantFailure string // substring of the failure message
		wantOpError bool   // the first operation ends with an error
	}{
		{name: "before claim", wantCode: 400, wantStatus: "FAILED_PRECONDITION", wantState: StatePending},
		{name: "valid", claim: true, spec: ProcessSpec{Behaviour: BehaviourNeverSign}, wantCode: 200, wantState: StateSigning},
		{name: "second request fails the process", claim: true, first: true,
			wantCode: 400, wantStatus: "FAILED_PRECONDITION", wantState: StateFailed,
			wantFailure: MessageSignDataTwice, wantOpError: true},
		{name: "second request after signing still fails", claim: true, first: true, spec: ProcessSpec{},
			wantCode: 400, wantStatus: "FAILED_PRECONDITION", wantState: StateFailed, wantFailure: MessageSignDataTwice},
		{name: "bad base64", claim: true, body: `{"signData":"%%%","signatureAlgorithm":"SIGNATURE_ALGORITHM_RSA_PKCS1_V1_5_SHA256"}`,
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateClaimed},
		{name: "empty data", claim: true, body: `{"signatureAlgorithm":"SIGNATURE_ALGORITHM_RSA_PKCS1_V1_5_SHA256"}`,
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateClaimed},
		{name: "unknown algorithm", claim: true, body: `{"signData":"AAEC","signatureAlgorithm":"SIGNATURE_ALGORITHM_UNSPECIFIED"}`,
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateClaimed},
		{name: "unknown field", claim: true, body: `{"signData":"AAEC","signatureAlgorithm":"SIGNATURE_ALGORITHM_RSA_PKCS1_V1_5_SHA256","x":1}`,
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateClaimed},
		{name: "malformed json", claim: true, body: `{"signData":`,
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateClaimed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			name := v.start(t, tc.spec)
			if tc.claim {
				v.claim(t, name, "a")
			}
			var firstOp string
			if tc.first {
				op, err := v.signData(name, []byte("first"), process.AlgorithmRSAPKCS1SHA256)
				if err != nil {
					t.Fatalf("first signData: %v", err)
				}
				firstOp = op.Name
				if tc.spec.Behaviour == "" && !tc.wantOpError {
					v.waitOp(t, firstOp)
				}
			}
			var err error
			if tc.body == "" {
				_, err = v.signData(name, []byte("data"), process.AlgorithmRSAPKCS1SHA256)
			} else {
				code, body := rawCall(t, v, http.MethodPost, "/v1/"+name+":signData", tc.body)
				if code != tc.wantCode || frontendtest.Status(body) != tc.wantStatus {
					t.Fatalf("signData = %d %s, want %d %s", code, body, tc.wantCode, tc.wantStatus)
				}
			}
			if tc.body == "" {
				if tc.wantCode == 200 {
					if err != nil {
						t.Fatalf("signData: %v", err)
					}
				} else {
					frontendtest.WantError(t, err, tc.wantCode, tc.wantStatus)
				}
			}
			s := v.snap(t, name)
			if s.State != tc.wantState || !strings.Contains(s.FailureMessage, tc.wantFailure) {
				t.Errorf("state %s failure %q, want %s %q", s.State, s.FailureMessage, tc.wantState, tc.wantFailure)
			}
			if tc.wantOpError {
				op := v.waitOp(t, firstOp)
				if op.Error == nil || op.Error.Code != 3 || !strings.Contains(op.Error.Message, MessageSignDataTwice) {
					t.Errorf("operation error = %+v", op.Error)
				}
			}
		})
	}
}

func TestWrongAlgorithmFailsThroughLRO(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ key, alg string }{
		{KeyRSA, process.AlgorithmECDSASHA256},
		{KeyECDSA, process.AlgorithmRSAPKCS1SHA256},
	} {
		t.Run(tc.key, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			name := v.start(t, ProcessSpec{KeyType: tc.key})
			v.claim(t, name, "a")
			op, err := v.signData(name, []byte("data"), tc.alg)
			if err != nil {
				t.Fatalf("signData is accepted by Google even with the wrong algorithm: %v", err)
			}
			done := v.waitOp(t, op.Name)
			if done.Error == nil || done.Error.Code != 3 || done.Response != nil {
				t.Fatalf("operation = %+v, want error code 3", done)
			}
			id := name[strings.LastIndex(name, "/")+1:]
			if !strings.Contains(done.Error.Message, "The requested SignData LRO failed because") ||
				!strings.Contains(done.Error.Message, "cppId="+id) {
				t.Errorf("error message = %q", done.Error.Message)
			}
			if s := v.snap(t, name); s.State != StateFailed {
				t.Errorf("state = %s, want failed", s.State)
			}
		})
	}
}

func TestUploadCertificate(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "Upload CA")
	tests := []struct {
		name       string
		spec       ProcessSpec
		sign       bool
		pem        func(t *testing.T, s Snapshot) string
		wantCode   int
		wantStatus string
		wantState  string
	}{
		{name: "leaf for the device key", sign: true, pem: func(t *testing.T, s Snapshot) string { return ca.issue(t, s.PublicKey, "ok") },
			wantCode: 200, wantState: StateIssued},
		{name: "leaf with surrounding whitespace", sign: true,
			pem:      func(t *testing.T, s Snapshot) string { return "\n  " + ca.issue(t, s.PublicKey, "ok") + "\n\n" },
			wantCode: 200, wantState: StateIssued},
		{name: "wrong key", sign: true, pem: func(t *testing.T, s Snapshot) string { return ca.issue(t, otherKey(t), "x") },
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateSigned},
		{name: "chain", sign: true, pem: func(t *testing.T, s Snapshot) string { return ca.issue(t, s.PublicKey, "x") + ca.pem },
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateSigned},
		{name: "trailing garbage", sign: true, pem: func(t *testing.T, s Snapshot) string { return ca.issue(t, s.PublicKey, "x") + "junk" },
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateSigned},
		{name: "not pem", sign: true, pem: func(*testing.T, Snapshot) string { return "hello" },
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateSigned},
		{name: "wrong block type", sign: true, pem: func(*testing.T, Snapshot) string {
			return "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
		}, wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateSigned},
		{name: "empty", sign: true, pem: func(*testing.T, Snapshot) string { return "" },
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateSigned},
		{name: "before the device signed", spec: ProcessSpec{Behaviour: BehaviourNeverSign},
			pem:      func(t *testing.T, s Snapshot) string { return ca.issue(t, s.PublicKey, "x") },
			wantCode: 400, wantStatus: "FAILED_PRECONDITION", wantState: StateSigning},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			name := v.start(t, tc.spec)
			if tc.sign {
				v.signed(t, name, []byte("x"))
			} else {
				v.claim(t, name, "a")
				if _, err := v.signData(name, []byte("x"), process.AlgorithmRSAPKCS1SHA256); err != nil {
					t.Fatal(err)
				}
			}
			err := v.upload(name, tc.pem(t, v.snap(t, name)))
			if tc.wantCode == 200 {
				if err != nil {
					t.Fatalf("upload: %v", err)
				}
			} else {
				frontendtest.WantError(t, err, tc.wantCode, tc.wantStatus)
			}
			if s := v.snap(t, name); s.State != tc.wantState || s.Calls[MethodUploadCertificate] != 1 {
				t.Errorf("state %s calls %v, want %s", s.State, s.Calls, tc.wantState)
			}
		})
	}
}

func TestMutationsAfterEnd(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "End CA")
	ends := map[string]func(t *testing.T, v *env, name string){
		"issued": func(t *testing.T, v *env, name string) {
			v.signed(t, name, []byte("x"))
			if err := v.upload(name, ca.issue(t, v.snap(t, name).PublicKey, "x")); err != nil {
				t.Fatal(err)
			}
		},
		"failed": func(t *testing.T, v *env, name string) {
			v.claim(t, name, "a")
			if err := v.setFailure(name, "CA said no"); err != nil {
				t.Fatal(err)
			}
		},
	}
	for endName, end := range ends {
		t.Run(endName, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			name := v.start(t, ProcessSpec{})
			end(t, v, name)
			before := v.snap(t, name)
			again := ca.issue(t, before.PublicKey, "again")
			calls := map[string]func() error{
				"claim": func() error {
					_, err := v.api.Claim(name, &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{CallerInstanceId: "a"}).Do()
					return err
				},
				"signData":   func() error { _, err := v.signData(name, []byte("y"), process.AlgorithmRSAPKCS1SHA256); return err },
				"upload":     func() error { return v.upload(name, again) },
				"setFailure": func() error { return v.setFailure(name, "late") },
			}
			for m, call := range calls {
				t.Run(m, func(t *testing.T) { frontendtest.WantError(t, call(), 400, "FAILED_PRECONDITION") })
			}
			after := v.snap(t, name)
			if after.State != before.State || after.FailureMessage != before.FailureMessage || after.CertificatePEM != before.CertificatePEM {
				t.Errorf("process changed after it ended: %+v -> %+v", before, after)
			}
			if _, err := v.api.Get(name).Do(); err != nil {
				t.Errorf("get still works: %v", err)
			}
		})
	}
}

func TestSetFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		claim      bool
		sign       bool
		msg        string
		wantCode   int
		wantStatus string
		wantState  string
	}{
		{name: "unclaimed", msg: "x", wantCode: 400, wantStatus: "FAILED_PRECONDITION", wantState: StatePending},
		{name: "empty message", claim: true, msg: " ", wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantState: StateClaimed},
		{name: "claimed", claim: true, msg: "profile unknown", wantCode: 200, wantState: StateFailed},
		{name: "while signing", claim: true, sign: true, msg: "CA down too long", wantCode: 200, wantState: StateFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			name := v.start(t, ProcessSpec{Behaviour: BehaviourNeverSign})
			if tc.claim {
				v.claim(t, name, "a")
			}
			var opName string
			if tc.sign {
				op, err := v.signData(name, []byte("x"), process.AlgorithmRSAPKCS1SHA256)
				if err != nil {
					t.Fatal(err)
				}
				opName = op.Name
			}
			err := v.setFailure(name, tc.msg)
			if tc.wantCode == 200 {
				if err != nil {
					t.Fatalf("setFailure: %v", err)
				}
			} else {
				frontendtest.WantError(t, err, tc.wantCode, tc.wantStatus)
			}
			s := v.snap(t, name)
			if s.State != tc.wantState {
				t.Errorf("state = %s, want %s", s.State, tc.wantState)
			}
			if tc.wantState == StateFailed {
				got, err := v.api.Get(name).Do()
				if err != nil || got.FailureMessage != tc.msg {
					t.Errorf("get: failureMessage %q err %v, want %q", got.FailureMessage, err, tc.msg)
				}
			}
			if opName != "" {
				op, err := v.api.Operations.Get(opName).Do()
				if err != nil || !op.Done || op.Error == nil || !strings.Contains(op.Error.Message, tc.msg) {
					t.Errorf("operation after failure = %+v, %v", op, err)
				}
			}
		})
	}
}

// rawCall sends a request with an arbitrary body and returns status and body.
func rawCall(t *testing.T, v *env, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, v.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer whatever")
	req.Header.Set("Content-Type", "application/json")
	resp, err := v.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return resp.StatusCode, string(bytes.TrimSpace(b))
}

// rawJSON fetches path with GET and decodes the JSON into a generic map.
func rawJSON(t *testing.T, v *env, path string) map[string]any {
	t.Helper()
	code, body := rawCall(t, v, http.MethodGet, path, "")
	if code != 200 {
		t.Fatalf("GET %s = %d %s", path, code, body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return m
}

func TestLROShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		variant     LROVariant
		behaviour   string
		setFailure  bool
		wantDone    bool
		wantType    bool
		wantSig     bool
		wantErrCode float64
	}{
		{name: "in progress", behaviour: BehaviourNeverSign, wantType: true},
		{name: "done", wantDone: true, wantType: true, wantSig: true},
		{name: "done without @type", variant: LROVariant{OmitType: true}, wantDone: true, wantSig: true},
		{name: "done without signature", variant: LROVariant{OmitSignatureInResponse: true}, wantDone: true, wantType: true},
		{name: "failed", behaviour: BehaviourNeverSign, setFailure: true, wantDone: true, wantType: true, wantErrCode: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			v.emu.SetLROVariant(tc.variant)
			name := v.start(t, ProcessSpec{Behaviour: tc.behaviour})
			v.claim(t, name, "a")
			op, err := v.signData(name, []byte("x"), process.AlgorithmRSAPKCS1SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(op.Name, name+"/operations/") || op.Done {
				t.Errorf("signData operation = %+v", op)
			}
			if tc.setFailure {
				if err := v.setFailure(name, "gave up"); err != nil {
					t.Fatal(err)
				}
			}
			if tc.wantDone {
				v.waitOp(t, op.Name)
			}
			m := rawJSON(t, v, "/v1/"+op.Name)
			if m["name"] != op.Name {
				t.Errorf("name = %v", m["name"])
			}
			meta, _ := m["metadata"].(map[string]any)
			if _, err := time.Parse(time.RFC3339, asString(meta["startTime"])); err != nil {
				t.Errorf("metadata.startTime: %v (%v)", err, meta)
			}
			if hasType := meta["@type"] == typeSignDataMetadata; hasType != tc.wantType {
				t.Errorf("metadata @type = %v, want present %v", meta["@type"], tc.wantType)
			}
			if done, _ := m["done"].(bool); done != tc.wantDone {
				t.Errorf("done = %v, want %v", m["done"], tc.wantDone)
			}
			if tc.wantErrCode != 0 {
				e, _ := m["error"].(map[string]any)
				if e["code"] != tc.wantErrCode || !strings.Contains(asString(e["message"]), "gave up") || m["response"] != nil {
					t.Errorf("error = %v, response = %v", m["error"], m["response"])
				}
				return
			}
			resp, _ := m["response"].(map[string]any)
			if !tc.wantDone {
				if resp != nil || m["error"] != nil {
					t.Errorf("in-progress operation has response %v error %v", resp, m["error"])
				}
				return
			}
			if (resp["@type"] == typeSignDataResponse) != tc.wantType {
				t.Errorf("response @type = %v", resp["@type"])
			}
			p, _ := resp["certificateProvisioningProcess"].(map[string]any)
			if p["name"] != name || p["signData"] == nil || p["signatureAlgorithm"] != process.AlgorithmRSAPKCS1SHA256 {
				t.Errorf("response process = %v", p)
			}
			if _, has := p["signature"]; has != tc.wantSig {
				t.Errorf("response signature present %v, want %v", has, tc.wantSig)
			}
			// The process itself always shows the signature.
			if g := rawJSON(t, v, "/v1/"+name); g["signature"] == nil {
				t.Errorf("get after signing lacks signature: %v", g)
			}
		})
	}
}

func asString(v any) string {
	s, _ := v.(string)
	return s
}
