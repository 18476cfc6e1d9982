package stepca

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/csr"
)

// Tests against fakeCA and of the settings: no step-ca needed.

func TestNewSettings(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("pw", "secret\n")
	write("empty", "\n\n")
	write("public.jwk", `{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}`)
	write("private.jwk", `{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE","kid":"k1"}`)
	write("garbage.jwk", "eyJhbGciOiJQQkVTMi1IUzI1NitBMTI4S1ciLCJlbmMiOiJBMjU2R0NNIn0.x.y.z.w")
	fp := strings.Repeat("0f", 32)
	base := func() ca.Settings {
		return ca.Settings{"url": "https://ca.example.com:9000", "rootFingerprint": fp, "provisioner": "adapter", "provisionerPasswordFile": "pw"}
	}
	tests := []struct {
		name   string
		change func(ca.Settings)
		wants  []string // empty: valid
	}{
		{"minimal", func(ca.Settings) {}, nil},
		{"key file instead of password", func(s ca.Settings) {
			delete(s, "provisionerPasswordFile")
			s["provisionerKeyFile"] = "private.jwk"
		}, nil},
		{"caFile instead of fingerprint", func(s ca.Settings) {
			delete(s, "rootFingerprint")
			s["tls"] = map[string]any{"caFile": "pw"} // not PEM: the tls block reports it
		}, []string{"tls.caFile", "no PEM certificates"}},
		{"unknown key", func(s ca.Settings) { s["provisionerPassword"] = "x" }, []string{"provisionerPassword"}},
		{"no url", func(s ca.Settings) { delete(s, "url") }, []string{"url: required"}},
		{"http url", func(s ca.Settings) { s["url"] = "http://ca:9000" }, []string{"must be https"}},
		{"url with a path", func(s ca.Settings) { s["url"] = "https://ca:9000/step" }, []string{"a path is not supported"}},
		{"bad fingerprint", func(s ca.Settings) { s["rootFingerprint"] = "abc" }, []string{`rootFingerprint: "abc"`, "64 hex digits"}},
		{"no fingerprint, no caFile", func(s ca.Settings) { delete(s, "rootFingerprint") }, []string{"rootFingerprint: required unless tls.caFile"}},
		{"no provisioner", func(s ca.Settings) { delete(s, "provisioner") }, []string{"provisioner: required"}},
		{"no key material", func(s ca.Settings) { delete(s, "provisionerPasswordFile") }, []string{"provisionerPasswordFile, provisionerKeyFile or x5cCertFile/x5cKeyFile: one is required"}},
		{"both", func(s ca.Settings) { s["provisionerKeyFile"] = "private.jwk" }, []string{"set only one"}},
		{"missing password file", func(s ca.Settings) { s["provisionerPasswordFile"] = "nope" }, []string{`provisionerPasswordFile: "nope"`, "no such file"}},
		{"empty password file", func(s ca.Settings) { s["provisionerPasswordFile"] = "empty" }, []string{`provisionerPasswordFile: "empty"`, "empty"}},
		{"public key file", func(s ca.Settings) {
			delete(s, "provisionerPasswordFile")
			s["provisionerKeyFile"] = "public.jwk"
		}, []string{`provisionerKeyFile: "public.jwk"`, "only a public key"}},
		{"encrypted key file", func(s ca.Settings) {
			delete(s, "provisionerPasswordFile")
			s["provisionerKeyFile"] = "garbage.jwk"
		}, []string{`provisionerKeyFile: "garbage.jwk"`, "needs provisionerPasswordFile"}},
		{"several problems at once", func(s ca.Settings) {
			delete(s, "url")
			delete(s, "provisioner")
		}, []string{"url: required", "provisioner: required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.change(s)
			c, err := ca.New(Type, s, ca.Env{Name: "step", BaseDir: dir})
			if len(tc.wants) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if _, ok := c.(*Connector); !ok {
					t.Fatalf("got %T", c)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tc.wants, `stepca connector "step"`) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the password leaks: %v", err)
			}
		})
	}
}

// TestToken checks every claim step-ca relies on, for each kind of provisioner key, and that the
// connector bootstraps once and never sends the same token twice.
func TestToken(t *testing.T) {
	for _, pk := range provisionerKeys(t) {
		t.Run(pk.name, func(t *testing.T) {
			f := newFakeCA(t, pk.key, pk.alg)
			c := f.connector(t)
			ctx := ctxTimeout(t, time.Minute)
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "TOKEN0000000000000000000000000001")
			req.Validity = 36 * time.Hour
			const calls = 3
			for range calls {
				issued, err := c.Issue(ctx, req)
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				catest.CheckIssued(t, req, issued, f.issuerRoots)
				catest.CheckRoots(t, issued)
			}
			roots, pages, tokens := f.counts()
			if roots != 1 || pages != 2 || tokens != calls {
				t.Fatalf("root fetched %d times, provisioner pages %d, tokens %d; want 1, 2, %d", roots, pages, tokens, calls)
			}
			jtis := map[string]bool{}
			for i, tok := range f.tokens {
				cl := tok.claims
				if tok.header.KeyID != f.provKey.KeyID || tok.header.Algorithm != string(pk.want) {
					t.Errorf("token %d: kid %q alg %q, want %q %q", i, tok.header.KeyID, tok.header.Algorithm, f.provKey.KeyID, pk.want)
				}
				if typ := tok.header.ExtraHeaders[jose.HeaderType]; typ != "JWT" {
					t.Errorf("token %d: typ %v", i, typ)
				}
				if cl.Issuer != fakeProvisioner {
					t.Errorf("token %d: iss %q", i, cl.Issuer)
				}
				if want := f.srv.URL + "/1.0/sign"; !slices.Equal([]string(cl.Audience), []string{want}) {
					t.Errorf("token %d: aud %v, want %s", i, cl.Audience, want)
				}
				if cl.Subject != req.CSR.Subject.CommonName {
					t.Errorf("token %d: sub %q, want the CSR's CN %q", i, cl.Subject, req.CSR.Subject.CommonName)
				}
				wantSANs := append(slices.Clone(req.CSR.DNSNames), req.CSR.EmailAddresses...)
				if !slices.Equal(cl.SANs, wantSANs) {
					t.Errorf("token %d: sans %v, want %v", i, cl.SANs, wantSANs)
				}
				if cl.SHA != f.fingerprint {
					t.Errorf("token %d: sha %q, want the root fingerprint", i, cl.SHA)
				}
				if cl.ID == "" || jtis[cl.ID] {
					t.Errorf("token %d: jti %q empty or reused", i, cl.ID)
				}
				jtis[cl.ID] = true
				if cl.IssuedAt == nil || cl.NotBefore == nil || cl.Expiry == nil ||
					*cl.NotBefore != *cl.IssuedAt || cl.Expiry.Time().Sub(cl.IssuedAt.Time()) != 5*time.Minute {
					t.Errorf("token %d: iat %v nbf %v exp %v, want nbf = iat and a five-minute lifetime", i, cl.IssuedAt, cl.NotBefore, cl.Expiry)
				}
			}
			for i, b := range f.signBodies {
				if b.NotAfter != "36h0m0s" {
					t.Errorf("sign %d: notAfter %q, want the profile's validity as a duration", i, b.NotAfter)
				}
			}
		})
	}
}

// TestBootstrapOnce: concurrent first calls share one bootstrap.
func TestBootstrapOnce(t *testing.T) {
	f := newFakeCA(t, nil, "")
	c := f.connector(t)
	ctx := ctxTimeout(t, time.Minute)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), fmt.Sprintf("ONCE%028d", i))
			_, errs[i] = c.Issue(ctx, req)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	if roots, pages, tokens := f.counts(); roots != 1 || pages != 2 || tokens != n {
		t.Fatalf("root fetched %d times, provisioner pages %d, tokens %d; want 1, 2, %d", roots, pages, tokens, n)
	}
}

// TestAnswers maps step-ca's answers to error classes, with step-ca's reason in the message and
// never the token.
func TestAnswers(t *testing.T) {
	tests := []struct {
		name       string
		answer     func(w http.ResponseWriter, ott string)
		class      ca.Class
		retryAfter time.Duration
		wants      []string
	}{
		{"bad token", func(w http.ResponseWriter, ott string) {
			stepErr(w, 401, "The request lacked necessary authorization to be completed. token "+ott+" already used")
		}, ca.ClassPermanent, 0, []string{"HTTP 401", "refused the provisioner token", "token [token] already used"}},
		{"policy", func(w http.ResponseWriter, _ string) {
			stepErr(w, 403, "The request was forbidden by the certificate authority: dns name \"x.evil\" not allowed.")
		}, ca.ClassPermanent, 0, []string{"HTTP 403", "refused the certificate", `dns name "x.evil" not allowed`}},
		{"bad CSR", func(w http.ResponseWriter, _ string) {
			stepErr(w, 400, "The request could not be completed: invalid csr.")
		}, ca.ClassPermanent, 0, []string{"HTTP 400", "invalid csr"}},
		{"not found (not step-ca)", func(w http.ResponseWriter, _ string) {
			http.Error(w, "404 page not found", 404)
		}, ca.ClassPermanent, 0, []string{"HTTP 404", "404 page not found", "is url the step-ca server?"}},
		{"rate limited, seconds", func(w http.ResponseWriter, _ string) {
			w.Header().Set("Retry-After", "42")
			stepErr(w, 429, "slow down")
		}, ca.ClassRetryable, 42 * time.Second, []string{"HTTP 429", "slow down"}},
		{"rate limited, date", func(w http.ResponseWriter, _ string) {
			w.Header().Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
			stepErr(w, 429, "slow down")
		}, ca.ClassRetryable, -1, []string{"HTTP 429"}},
		{"internal error", func(w http.ResponseWriter, _ string) {
			stepErr(w, 500, "The certificate authority encountered an Internal Server Error.")
		}, ca.ClassRetryable, 0, []string{"HTTP 500", "Internal Server Error"}},
		{"proxy unavailable, HTML", func(w http.ResponseWriter, _ string) {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(503)
			_, _ = w.Write([]byte("<html>\n<body>" + strings.Repeat("busy ", 200) + "</body></html>"))
		}, ca.ClassRetryable, 7 * time.Second, []string{"HTTP 503", "<html> <body>busy", "…"}},
		// A gateway may have passed the sign request on: step-ca may have signed, so never again.
		{"bad gateway", func(w http.ResponseWriter, _ string) {
			w.WriteHeader(502)
			_, _ = w.Write([]byte("<html><body>502 Bad Gateway</body></html>"))
		}, ca.ClassPermanent, 0, []string{"a gateway in front of step-ca answered HTTP 502", "step-ca may have signed"}},
		{"gateway timeout", func(w http.ResponseWriter, _ string) {
			w.WriteHeader(504)
			_, _ = w.Write([]byte("upstream request timeout"))
		}, ca.ClassPermanent, 0, []string{"HTTP 504 (upstream request timeout)", "not asking again"}},
		{"not JSON", func(w http.ResponseWriter, _ string) {
			w.WriteHeader(201)
			_, _ = w.Write([]byte("hello"))
		}, ca.ClassPermanent, 0, []string{"not step-ca's JSON"}},
		{"no certificate", func(w http.ResponseWriter, _ string) {
			writeJSON(w, 201, map[string]any{"certChain": []string{}})
		}, ca.ClassPermanent, 0, []string{"no certificate"}},
		{"connection lost after the request arrived", func(w http.ResponseWriter, _ string) {
			// step-ca may have signed: asking again could issue a second certificate.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		}, ca.ClassPermanent, 0, []string{"answer was lost", "not asking again"}},
		{"signed answer cut short", func(w http.ResponseWriter, _ string) {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(201)
			_, _ = w.Write([]byte(`{"crt":`))
		}, ca.ClassPermanent, 0, []string{"step-ca signed it", "not asking again"}},
		{"garbage certificate", func(w http.ResponseWriter, _ string) {
			writeJSON(w, 201, map[string]any{"certChain": []string{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}})
		}, ca.ClassPermanent, 0, []string{"certificate 0 of the chain"}},
	}
	f := newFakeCA(t, nil, "")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.set(func(f *fakeCA) {
				f.signAnswer = func(w http.ResponseWriter, _ *http.Request, ott string) { tc.answer(w, ott) }
			})
			c := f.connector(t)
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "ANSWER0000000000000000000000001")
			issued, err := c.Issue(ctxTimeout(t, time.Minute), req)
			if err == nil || issued != nil {
				t.Fatalf("issued %v, err %v", issued, err)
			}
			class, after := ca.Classify(err)
			if class != tc.class {
				t.Errorf("class %v, want %v: %v", class, tc.class, err)
			}
			switch {
			case tc.retryAfter >= 0 && after != tc.retryAfter:
				t.Errorf("retry after %v, want %v", after, tc.retryAfter)
			case tc.retryAfter < 0 && (after < 50*time.Minute || after > time.Hour):
				t.Errorf("retry after %v, want about an hour", after)
			}
			for _, w := range append(tc.wants, req.Key) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			var sent string
			f.set(func(f *fakeCA) { sent = f.signBodies[len(f.signBodies)-1].OTT })
			if sent == "" || strings.Contains(err.Error(), sent) {
				t.Errorf("token sent %v, and in the error: %v", sent != "", strings.Contains(err.Error(), sent))
			}
			if len(err.Error()) > 500 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

// TestFakeBootstrapFailures covers CA answers a real step-ca does not give.
func TestFakeBootstrapFailures(t *testing.T) {
	tests := []struct {
		name   string
		change func(f *fakeCA, s ca.Settings)
		wants  []string
	}{
		{"root does not match its fingerprint", func(f *fakeCA, _ ca.Settings) { f.wrongRoot = true },
			[]string{"sent a root with fingerprint", "refusing to trust it"}},
		{"provisioner of another type", func(f *fakeCA, _ ca.Settings) { f.provisionerType = "OIDC" },
			[]string{`provisioner "certprov" is of type OIDC`, "needs a JWK provisioner"}},
		{"no encrypted key", func(f *fakeCA, _ ca.Settings) { f.noEncryptedKey = true },
			[]string{"publishes no encrypted key", "provisionerKeyFile"}},
		{"provisioner not on any page", func(_ *fakeCA, s ca.Settings) { s["provisioner"] = "missing" },
			[]string{`no provisioner named "missing"`, "acme, certprov, google, other"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCA(t, nil, "")
			s := f.settings(t)
			f.set(func(f *fakeCA) { tc.change(f, s) })
			c, err := New(s, ca.Env{})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Ping(ctxTimeout(t, time.Minute))
			if !ca.IsPermanent(err) {
				t.Fatalf("want a permanent error, got %v", err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if _, _, tokens := f.counts(); tokens != 0 {
				t.Errorf("%d tokens sent", tokens)
			}
		})
	}
}

// TestWrongKeyInAnswer: a leaf for another key is refused, whatever the CA says.
func TestWrongKeyInAnswer(t *testing.T) {
	f := newFakeCA(t, nil, "")
	other := catest.DeviceKey(t, catest.P256)
	f.set(func(f *fakeCA) {
		f.signAnswer = func(w http.ResponseWriter, _ *http.Request, _ string) {
			leaf := f.issue(other.Public())
			writeJSON(w, 201, map[string]any{"crt": pemCert(leaf), "ca": pemCert(f.issuer)})
		}
	})
	c := f.connector(t)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "WRONGKEY000000000000000000000001")
	_, err := c.Issue(ctxTimeout(t, time.Minute), req)
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "different key") {
		t.Fatalf("want a permanent error about the key, got %v", err)
	}
}

// TestCancelWhileBootstrapping: a call waiting for another's bootstrap gives up with its context.
func TestCancelWhileBootstrapping(t *testing.T) {
	f := newFakeCA(t, nil, "")
	c := f.connector(t)
	c.bootLock <- struct{}{} // a bootstrap in progress
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Issue(ctx, catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "CANCEL00000000000000000000000001"))
	if !errors.Is(err, context.Canceled) || ca.IsPermanent(err) {
		t.Fatalf("want a retryable error wrapping context.Canceled, got %v", err)
	}
	<-c.bootLock
}

// TestTokenNames: the token names what step-ca compares with the CSR (DNS, e-mail, IP, URI),
// and its subject is the CN or else the first SAN.
func TestTokenNames(t *testing.T) {
	key := catest.DeviceKey(t, catest.P256)
	csrOf := func(r *csr.Request) *x509.CertificateRequest {
		t.Helper()
		parsed, err := x509.ParseCertificateRequest(catest.SignedCSR(t, key, r))
		if err != nil {
			t.Fatal(err)
		}
		return parsed
	}
	uri, _ := url.Parse("urn:example:device:1")
	tests := []struct {
		name     string
		req      *csr.Request
		wantSub  string
		wantSANs []string
		wantErr  string
	}{
		{"CN, DNS, e-mail and UPN", &csr.Request{
			Subject: pkix.Name{CommonName: "u@example.com"}, DNSNames: []string{"d.example.com"},
			EmailAddresses: []string{"u@example.com"}, UPNs: []string{"u@corp.example.com"},
		}, "u@example.com", []string{"d.example.com", "u@example.com"}, ""},
		{"CN only", &csr.Request{Subject: pkix.Name{CommonName: "SERIAL1"}}, "SERIAL1", nil, ""},
		{"no CN: the first SAN", &csr.Request{DNSNames: []string{"a.example.com", "b.example.com"}, URIs: []*url.URL{uri}},
			"a.example.com", []string{"a.example.com", "b.example.com", "urn:example:device:1"}, ""},
		{"UPN only", &csr.Request{UPNs: []string{"u@corp.example.com"}}, "", nil, "neither a common name nor"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sub, sans, err := tokenNames(csrOf(tc.req))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || sub != tc.wantSub || !slices.Equal(sans, tc.wantSANs) {
				t.Fatalf("tokenNames = %q %q %v, want %q %q", sub, sans, err, tc.wantSub, tc.wantSANs)
			}
		})
	}
}
