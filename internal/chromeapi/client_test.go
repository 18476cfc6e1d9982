package chromeapi

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/googleauth"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

// fakeProcess answers GET for one process and records the Authorization headers it saw.
type fakeAPI struct {
	mu      sync.Mutex
	auth    []string
	handler http.HandlerFunc
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	f.mu.Unlock()
	f.handler(w, r)
}

const procName = "customers/C0test/certificateProvisioningProcesses/0123456789ABCDEF0123456789ABCDEF"

func processJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{
	  "name": "` + procName + `",
	  "provisioningProfileId": "p1",
	  "subjectPublicKeyInfo": "` + base64.StdEncoding.EncodeToString([]byte{0x30, 0x03, 1, 2, 3}) + `",
	  "signData": "` + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff}) + `",
	  "chromeOsUserSession": {"userPrimaryEmail": "a@example.com", "userDirectoryApiId": "u1",
	    "chromeOsDevice": {"serialNumber": "SN1", "deviceDirectoryApiId": "d1"}},
	  "scepCaConnection": {"caConnectionAdapterConfigReference": "ndes"},
	  "scepProfile": {"subjectCommonName": "cn", "subjectAltNames": [{"type": "DNS_NAME", "value": "x.example.com"}]},
	  "startTime": "2025-03-07T13:38:54.930621Z"
	}`))
}

func newClient(t *testing.T, srvURL string, creds googleauth.Credentials) *Client {
	t.Helper()
	c, err := New(context.Background(), Options{
		Endpoint: srvURL + "/", Credentials: creds,
		RateLimit: RateLimit{RequestsPerSecond: 1000, Burst: 10}, RequestTimeout: 2 * time.Second,
		MaxInlineWait: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func TestGetConvertsEveryUnion(t *testing.T) {
	api := &fakeAPI{handler: processJSON}
	srv := httptest.NewServer(api)
	defer srv.Close()
	p, err := newClient(t, srv.URL, googleauth.Credentials{Type: googleauth.None}).Get(context.Background(), procName)
	if err != nil {
		t.Fatal(err)
	}
	if p.Customer != "C0test" || p.ID != "0123456789ABCDEF0123456789ABCDEF" {
		t.Fatalf("name not split: %+v", p)
	}
	if p.User == nil || p.User.Email != "a@example.com" || p.Device == nil || p.Device.SerialNumber != "SN1" {
		t.Fatalf("affiliated user session not flattened: user %+v device %+v", p.User, p.Device)
	}
	if p.CAConnectionKind != "scep" || p.CAConnectionRef != "ndes" || p.SCEPProfile == nil || p.SCEPProfile.SANs[0].Value != "x.example.com" {
		t.Fatalf("SCEP unions not flattened: %+v %+v", p, p.SCEPProfile)
	}
	if string(p.SPKI) != string([]byte{0x30, 0x03, 1, 2, 3}) || string(p.SignData) != string([]byte{0xfb, 0xff}) {
		t.Fatalf("base64 fields: %x %x", p.SPKI, p.SignData)
	}
	if p.StartTime.IsZero() || !p.SignRequested() || p.Finished() {
		t.Fatalf("derived fields wrong: %+v", p)
	}
}

func writeServiceAccountKey(t *testing.T, tokenURI string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	b, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "p",
		"private_key_id": "kid1",
		"private_key":    string(pemutil.EncodePrivateKey(der)),
		"client_email":   "adapter@p.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      tokenURI,
	})
	path := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCredentials(t *testing.T) {
	var tokenRequests int
	var scopeSeen string
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		tokenRequests++
		// The assertion is a JWT whose claims carry the scope we asked for.
		parts := strings.Split(r.Form.Get("assertion"), ".")
		if len(parts) == 3 {
			claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var c struct {
				Scope string `json:"scope"`
			}
			_ = json.Unmarshal(claims, &c)
			scopeSeen = c.Scope
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok-123","token_type":"Bearer","expires_in":3600}`))
	}))
	defer tokenSrv.Close()
	keyFile := writeServiceAccountKey(t, tokenSrv.URL)

	tests := []struct {
		name  string
		creds googleauth.Credentials
		check func(t *testing.T, auth string)
	}{
		{"none", googleauth.Credentials{Type: googleauth.None}, func(t *testing.T, auth string) {
			if auth != "" {
				t.Fatalf("sent Authorization %q without credentials", auth)
			}
		}},
		{"service account key", googleauth.Credentials{Type: googleauth.ServiceAccountKey, File: keyFile}, func(t *testing.T, auth string) {
			if auth != "Bearer tok-123" {
				t.Fatalf("Authorization %q, want the exchanged token", auth)
			}
			if scopeSeen != Scope {
				t.Fatalf("token requested for scope %q, want %q", scopeSeen, Scope)
			}
		}},
		{"self-signed JWT", googleauth.Credentials{Type: googleauth.SelfSignedJWT, File: keyFile}, func(t *testing.T, auth string) {
			jwt, ok := strings.CutPrefix(auth, "Bearer ")
			if !ok || strings.Count(jwt, ".") != 2 {
				t.Fatalf("Authorization %q is not a bearer JWT", auth)
			}
			claims, err := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[1])
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(claims), Scope) {
				t.Fatalf("self-signed JWT claims %s lack the scope", claims)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := &fakeAPI{handler: processJSON}
			srv := httptest.NewServer(api)
			defer srv.Close()
			if _, err := newClient(t, srv.URL, tc.creds).Get(context.Background(), procName); err != nil {
				t.Fatal(err)
			}
			tc.check(t, api.auth[0])
		})
	}
	if tokenRequests != 1 {
		t.Errorf("token endpoint called %d times, want 1", tokenRequests)
	}
}

func TestErrorClassificationAndRetries(t *testing.T) {
	envelope := func(code int, status string) string {
		return fmt.Sprintf(`{"error":{"code":%d,"message":"m","status":%q}}`, code, status)
	}
	tests := []struct {
		name       string
		codes      []int // answered in order, then 200
		retryAfter string
		method     func(c *Client) error
		wantErr    func(error) bool
		wantCalls  int
	}{
		{"429 then success", []int{429, 429}, "0", func(c *Client) error { _, err := c.Get(context.Background(), procName); return err }, nil, 3},
		{"503 exhausts attempts", []int{503, 503, 503, 503, 503}, "", func(c *Client) error { _, err := c.Get(context.Background(), procName); return err }, retryable, 4},
		{"404 not retried", []int{404}, "", func(c *Client) error { _, err := c.Get(context.Background(), procName); return err }, func(err error) bool { return errors.Is(err, process.ErrNotFound) }, 1},
		{"claim 400 is another owner", []int{400}, "", func(c *Client) error { return c.Claim(context.Background(), procName, "me") },
			func(err error) bool { return errors.Is(err, process.ErrClaimedByOther) }, 1},
		{"claim 409 is another owner", []int{409}, "", func(c *Client) error { return c.Claim(context.Background(), procName, "me") },
			func(err error) bool { return errors.Is(err, process.ErrClaimedByOther) }, 1},
		{"signData never retried inline", []int{503}, "", func(c *Client) error {
			_, err := c.SignData(context.Background(), procName, []byte("x"), "SIGNATURE_ALGORITHM_ECDSA_SHA256")
			return err
		}, retryable, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			api := &fakeAPI{handler: func(w http.ResponseWriter, r *http.Request) {
				calls++
				if calls <= len(tc.codes) {
					if tc.retryAfter != "" {
						w.Header().Set("Retry-After", tc.retryAfter)
					}
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tc.codes[calls-1])
					_, _ = w.Write([]byte(envelope(tc.codes[calls-1], "FAILED_PRECONDITION")))
					return
				}
				if strings.Contains(r.URL.Path, ":") {
					_, _ = w.Write([]byte(`{"name":"` + procName + `/operations/1"}`))
					return
				}
				processJSON(w, r)
			}}
			srv := httptest.NewServer(api)
			defer srv.Close()
			err := tc.method(newClient(t, srv.URL, googleauth.Credentials{Type: googleauth.None}))
			if tc.wantErr == nil && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.wantErr != nil && (err == nil || !tc.wantErr(err)) {
				t.Fatalf("error %v not classified as expected", err)
			}
			if calls != tc.wantCalls {
				t.Fatalf("%d calls, want %d", calls, tc.wantCalls)
			}
		})
	}
}

func TestBackoffHonoursRetryAfterUpToCeiling(t *testing.T) {
	for attempt := range 10 {
		if d := backoff(attempt, 0, time.Second); d <= 0 || d > time.Second {
			t.Fatalf("attempt %d: %v outside (0, 1s]", attempt, d)
		}
		if d := backoff(attempt, 3*time.Second, 10*time.Second); d < 3*time.Second {
			t.Fatalf("attempt %d: %v shorter than Retry-After", attempt, d)
		}
		if d := backoff(attempt, time.Hour, 10*time.Second); d != 10*time.Second {
			t.Fatalf("attempt %d: %v not capped", attempt, d)
		}
	}
}

// TestNewRefusesMissingLimits: the client has no defaults of its own for what the configuration
// sets (package config holds them), so a rate limit or timeout left out is an error, not a
// silent choice, and a reload with one keeps the limit in force.
func TestNewRefusesMissingLimits(t *testing.T) {
	base := Options{
		Endpoint: "http://127.0.0.1:1/", Credentials: googleauth.Credentials{Type: googleauth.None},
		RateLimit: RateLimit{RequestsPerSecond: 5, Burst: 2}, RequestTimeout: time.Second,
	}
	for _, tc := range []struct {
		name   string
		change func(*Options)
		want   string
	}{
		{"no rate", func(o *Options) { o.RateLimit.RequestsPerSecond = 0 }, "rate limit"},
		{"no burst", func(o *Options) { o.RateLimit.Burst = 0 }, "rate limit"},
		{"no timeout", func(o *Options) { o.RequestTimeout = 0 }, "request timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.change(&o)
			if _, err := New(context.Background(), o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error about the %s", err, tc.want)
			}
		})
	}
	c, err := New(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetRateLimit(RateLimit{RequestsPerSecond: 0, Burst: 3}); err == nil {
		t.Fatal("SetRateLimit accepted a zero rate")
	}
	if c.limiter.Limit() != 5 || c.limiter.Burst() != 2 {
		t.Fatalf("limit %v burst %d after a refused change, want 5 and 2", c.limiter.Limit(), c.limiter.Burst())
	}
}
