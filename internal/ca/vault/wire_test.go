package vault

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// TestFakeRefusesWhatVaultRefuses sends requests that real Vault refuses straight to the fake,
// so that the connector's tests cannot pass against a fake laxer than Vault. Each answer must
// carry Vault's status and its {"errors": [...]} envelope.
func TestFakeRefusesWhatVaultRefuses(t *testing.T) {
	f := newFakeVault(t)
	good := f.newToken([]string{"default", "certprov"}, time.Hour, 0, true)
	short := f.newToken([]string{"default", "certprov"}, time.Minute, 0, true)
	narrow := f.newToken([]string{"default"}, time.Hour, 0, true)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "WIRE")
	csrPEM := string(pemutil.EncodeCSR(req.CSRDER))
	bad := bytes.Clone(req.CSRDER)
	bad[len(bad)-1] ^= 0xff
	badPEM := string(pemutil.EncodeCSR(bad))
	signBody := func(csr string) string {
		b, _ := json.Marshal(map[string]any{"csr": csr, "common_name": req.CSR.Subject.CommonName, "exclude_cn_from_sans": true})
		return string(b)
	}
	client := f.srv.Client()
	send := func(method, path, token, ns, body string) (int, http.Header, map[string]any) {
		t.Helper()
		r, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			r.Header.Set("X-Vault-Token", token)
		}
		if ns != "" {
			r.Header.Set("X-Vault-Namespace", ns)
		}
		resp, err := client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		raw, _ := io.ReadAll(resp.Body)
		var env map[string]any
		_ = json.Unmarshal(raw, &env)
		return resp.StatusCode, resp.Header, env
	}
	tests := []struct {
		name                 string
		method, path, token  string
		ns, body             string
		setup                func()
		wantStatus           int
		wantError            string // in errors[0]; "" for a success with data
		wantNoErrorsEnvelope bool
	}{
		{name: "the accepted request, for contrast", method: "PUT", path: "/v1/pki/sign/devices", token: good, body: signBody(csrPEM), wantStatus: 200},
		{name: "POST is a write too", method: "POST", path: "/v1/pki/sign/devices", token: good, body: signBody(csrPEM), wantStatus: 200},
		{name: "no token", method: "PUT", path: "/v1/pki/sign/devices", body: signBody(csrPEM), wantStatus: 403, wantError: "permission denied"},
		{name: "unknown token", method: "PUT", path: "/v1/pki/sign/devices", token: "hvs.nosuchtoken", body: signBody(csrPEM), wantStatus: 403, wantError: "permission denied"},
		{name: "expired token", method: "PUT", path: "/v1/pki/sign/devices", token: short, body: signBody(csrPEM),
			setup: func() { f.clock.Advance(2 * time.Minute) }, wantStatus: 403, wantError: "permission denied"},
		{name: "policy does not grant the path", method: "PUT", path: "/v1/pki/sign/devices", token: narrow, body: signBody(csrPEM), wantStatus: 403, wantError: "permission denied"},
		{name: "read where only update is granted", method: "GET", path: "/v1/pki/sign/devices", token: good, wantStatus: 403, wantError: "permission denied"},
		{name: "token used in another namespace", method: "PUT", path: "/v1/pki/sign/devices", token: good, ns: "team-b", body: signBody(csrPEM), wantStatus: 403, wantError: "permission denied"},
		{name: "no /v1 prefix", method: "PUT", path: "/pki/sign/devices", token: good, body: signBody(csrPEM), wantStatus: 404, wantNoErrorsEnvelope: true},
		{name: "unknown mount", method: "PUT", path: "/v1/pkx/sign/devices", token: f.newToken([]string{"root"}, 0, 0, false), body: signBody(csrPEM), wantStatus: 404, wantError: "no handler for route"},
		{name: "body that is not JSON", method: "PUT", path: "/v1/pki/sign/devices", token: good, body: "csr=" + csrPEM, wantStatus: 400, wantError: "failed to parse JSON input"},
		{name: "no csr", method: "PUT", path: "/v1/pki/sign/devices", token: good, body: `{"common_name":"x"}`, wantStatus: 400, wantError: "csr is required"},
		{name: "csr with a bad signature", method: "PUT", path: "/v1/pki/sign/devices", token: good, body: signBody(badPEM), wantStatus: 400, wantError: "request signature invalid"},
		{name: "unsupported method", method: "PATCH", path: "/v1/pki/sign/devices", token: good, body: "{}", wantStatus: 405},
		{name: "login with a wrong secret", method: "PUT", path: "/v1/auth/approle/login", body: `{"role_id":"role-id-0001","secret_id":"nope"}`, wantStatus: 400, wantError: "invalid role or secret ID"},
		{name: "renewal of a token that is not renewable", method: "PUT", path: "/v1/auth/token/renew-self",
			token: f.newToken([]string{"default"}, time.Hour, 0, false), body: `{"increment":3600}`, wantStatus: 400, wantError: "lease is not renewable"},
		{name: "health of a sealed Vault", method: "GET", path: "/v1/sys/health", setup: func() { f.sealed = true }, wantStatus: 503, wantNoErrorsEnvelope: true},
		{name: "health with sealedcode, as the SDK asks", method: "GET", path: "/v1/sys/health?sealedcode=299", wantStatus: 299, wantNoErrorsEnvelope: true},
		{name: "a sealed Vault refuses the rest", method: "PUT", path: "/v1/pki/sign/devices", token: good, body: signBody(csrPEM), wantStatus: 503, wantError: "Vault is sealed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				f.mu.Lock()
				tt.setup()
				f.mu.Unlock()
			}
			before := f.issuedCount()
			code, _, env := send(tt.method, tt.path, tt.token, tt.ns, tt.body)
			if code != tt.wantStatus {
				t.Fatalf("HTTP %d, want %d (%v)", code, tt.wantStatus, env)
			}
			if code == 200 {
				data, _ := env["data"].(map[string]any)
				if _, ok := data["certificate"].(string); !ok || f.issuedCount() != before+1 {
					t.Errorf("a 200 without a stored certificate: %v", env)
				}
				return
			}
			if f.issuedCount() != before {
				t.Error("a refused request issued a certificate")
			}
			if tt.wantNoErrorsEnvelope || tt.wantError == "" {
				return
			}
			errs, _ := env["errors"].([]any)
			if len(errs) == 0 || !strings.Contains(errs[0].(string), tt.wantError) {
				t.Errorf("errors %v, want %q", env["errors"], tt.wantError)
			}
		})
	}
}
