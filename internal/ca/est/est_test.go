package est

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// requestWithCN builds an engine-like request whose CSR subject is cn (estserver's triggers).
func requestWithCN(t testing.TB, key crypto.Signer, cn string) *ca.Request {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	der := catest.SignedCSR(t, key, &csr.Request{
		Subject:     pkix.Name{CommonName: cn},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	parsed, err := csr.Verify(der, spki)
	if err != nil {
		t.Fatal(err)
	}
	return &ca.Request{Key: "customers/C0est/certificateProvisioningProcesses/" + strings.ReplaceAll(cn, " ", ""), CSR: parsed, CSRDER: der}
}

func TestSettings(t *testing.T) {
	dir := t.TempDir()
	pw := writeFile(t, dir, "pw", []byte("secret\n"))
	empty := writeFile(t, dir, "empty", []byte("\n"))
	notPEM := writeFile(t, dir, "not.pem", []byte("hello"))
	tests := []struct {
		name     string
		settings ca.Settings
		want     string // "" = valid
	}{
		{"minimal", ca.Settings{"url": "https://est.example.com"}, ""},
		{"everything", ca.Settings{"url": "https://est.example.com/prefix/", "label": "wifi", "username": "u", "passwordFile": pw,
			"timeout": "10s", "tls": map[string]any{"serverName": "est.example.com"}}, ""},
		{"no url", ca.Settings{}, "url: required"},
		{"http", ca.Settings{"url": "http://est.example.com"}, "must start with https://"},
		{"no host", ca.Settings{"url": "https://"}, "no host"},
		{"credentials in url", ca.Settings{"url": "https://u:secret@est.example.com"}, "must not carry credentials"},
		{"query", ca.Settings{"url": "https://est.example.com/?a=b"}, "query"},
		{"label with slash", ca.Settings{"url": "https://est.example.com", "label": "a/b"}, "one path segment"},
		{"label inside url", ca.Settings{"url": "https://est.example.com/.well-known/est/wifi"}, "put the label in label"},
		{"label is an operation", ca.Settings{"url": "https://est.example.com", "label": "simpleenroll"}, "operation name"},
		{"username alone", ca.Settings{"url": "https://est.example.com", "username": "u"}, "passwordFile: required"},
		{"passwordFile alone", ca.Settings{"url": "https://est.example.com", "passwordFile": pw}, "username: required"},
		{"colon in username", ca.Settings{"url": "https://est.example.com", "username": "a:b", "passwordFile": pw}, "colon"},
		{"missing password file", ca.Settings{"url": "https://est.example.com", "username": "u", "passwordFile": dir + "/nope"}, "passwordFile"},
		{"empty password", ca.Settings{"url": "https://est.example.com", "username": "u", "passwordFile": empty}, "empty"},
		{"caCertsFile without certificates", ca.Settings{"url": "https://est.example.com", "caCertsFile": notPEM}, "caCertsFile"},
		{"bad timeout", ca.Settings{"url": "https://est.example.com", "timeout": "soon"}, "not a duration"},
		{"negative timeout", ca.Settings{"url": "https://est.example.com", "timeout": "-1s"}, "timeout: -1s: must be positive"},
		{"unknown key", ca.Settings{"url": "https://est.example.com", "pasword": "x"}, "pasword"},
		{"unknown tls key", ca.Settings{"url": "https://est.example.com", "tls": map[string]any{"ca": "x"}}, "ca"},
		{"half a client certificate", ca.Settings{"url": "https://est.example.com", "tls": map[string]any{"certFile": pw}}, "go together"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.New(Type, tc.settings, ca.Env{Name: "corp", BaseDir: dir})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	tests := []struct{ url, label, want string }{
		{"https://est.example.com", "", "https://est.example.com/.well-known/est/simpleenroll"},
		{"https://est.example.com/", "", "https://est.example.com/.well-known/est/simpleenroll"},
		{"https://est.example.com:8443", "wifi", "https://est.example.com:8443/.well-known/est/wifi/simpleenroll"},
		{"https://est.example.com/.well-known/est/", "wifi", "https://est.example.com/.well-known/est/wifi/simpleenroll"},
		{"https://gw.example.com/pki", "Device CA", "https://gw.example.com/pki/.well-known/est/Device%20CA/simpleenroll"},
	}
	for _, tc := range tests {
		base, err := baseURL(tc.url, tc.label)
		if err != nil {
			t.Errorf("%s %q: %v", tc.url, tc.label, err)
			continue
		}
		if got := base + "/simpleenroll"; got != tc.want {
			t.Errorf("%s %q: %s, want %s", tc.url, tc.label, got, tc.want)
		}
	}
}

// fakeEST is an httptest EST server with its own CA. enroll, when set, answers /simpleenroll
// instead of issuing.
type fakeEST struct {
	srv    *httptest.Server
	caFile string
	root   *testCA
	issuer *testCA

	mu      sync.Mutex
	enroll  func(w http.ResponseWriter, r *http.Request, csr *x509.CertificateRequest)
	answer  func(leaf *x509.Certificate) []byte // encodes a 200 answer; default base64 certs-only
	paths   []string
	auth    []string
	cacerts int
}

func newFakeEST(t *testing.T) *fakeEST {
	t.Helper()
	f := &fakeEST{root: newRootCA(t, "fake root")}
	f.issuer = f.root.sub(t, "fake issuing CA")
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.serve(t, w, r) }))
	t.Cleanup(f.srv.Close)
	f.caFile = writeCerts(t, t.TempDir(), "tls.crt", f.srv.Certificate())
	return f
}

func (f *fakeEST) serve(t *testing.T, w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.paths = append(f.paths, r.Method+" "+r.URL.Path)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	root, issuer, enroll, answer := f.root, f.issuer, f.enroll, f.answer
	f.mu.Unlock()
	switch {
	case !strings.HasPrefix(r.URL.Path, "/.well-known/est/"):
		http.NotFound(w, r)
	case strings.HasSuffix(r.URL.Path, "/cacerts"):
		f.mu.Lock()
		f.cacerts++
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/pkcs7-mime")
		_, _ = w.Write([]byte(base64.StdEncoding.EncodeToString(certsOnly(t, issuer.cert, root.cert))))
	case strings.HasSuffix(r.URL.Path, "/simpleenroll"):
		if r.Header.Get("Content-Type") != "application/pkcs10" || r.Header.Get("Content-Transfer-Encoding") != "base64" {
			http.Error(w, "bad headers", http.StatusUnsupportedMediaType)
			return
		}
		body, _ := io.ReadAll(r.Body)
		der, err := base64.StdEncoding.DecodeString(string(body))
		if err != nil {
			http.Error(w, "invalid base64 encoding", http.StatusBadRequest)
			return
		}
		req, err := x509.ParseCertificateRequest(der)
		if err != nil || req.CheckSignature() != nil {
			http.Error(w, "invalid PKCS10", http.StatusBadRequest)
			return
		}
		if enroll != nil {
			enroll(w, r, req)
			return
		}
		leaf := issuer.issue(t, req.PublicKey, req.Subject.CommonName)
		w.Header().Set("Content-Type", "application/pkcs7-mime; smime-type=certs-only")
		if answer != nil {
			_, _ = w.Write(answer(leaf))
			return
		}
		_, _ = w.Write([]byte(base64.StdEncoding.EncodeToString(certsOnly(t, leaf))))
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeEST) set(fn func(f *fakeEST)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeEST) settings(extra ca.Settings) ca.Settings {
	s := ca.Settings{"url": f.srv.URL, "tls": map[string]any{"caFile": f.caFile}}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

func issue(t *testing.T, conn *Connector) (*ca.Request, *ca.Issued, error) {
	t.Helper()
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "UNIT0000000000000000000000000000")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	issued, err := conn.Issue(ctx, req)
	return req, issued, err
}

// TestAnswers checks the encodings and orders EST servers answer in, and answers that are unusable.
func TestAnswers(t *testing.T) {
	f := newFakeEST(t)
	other := newKey(t)
	tests := []struct {
		name   string
		answer func(t *testing.T, leaf *x509.Certificate) []byte
		want   string // "" = issued
	}{
		{"base64 with line breaks", func(t *testing.T, leaf *x509.Certificate) []byte {
			return []byte(wrap(base64.StdEncoding.EncodeToString(certsOnly(t, leaf)), 76, "\r\n"))
		}, ""},
		{"binary DER", func(t *testing.T, leaf *x509.Certificate) []byte { return certsOnly(t, leaf) }, ""},
		{"PEM", func(t *testing.T, leaf *x509.Certificate) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: certsOnly(t, leaf)})
		}, ""},
		{"BER with indefinite lengths", func(t *testing.T, leaf *x509.Certificate) []byte {
			ber := indefinite(t, certsOnly(t, leaf), 3)
			if ber[1] != 0x80 {
				t.Errorf("not re-encoded with an indefinite length: % x", ber[:4])
			}
			return []byte(base64.StdEncoding.EncodeToString(ber))
		}, ""},
		{"whole chain, leaf last", func(t *testing.T, leaf *x509.Certificate) []byte {
			return []byte(base64.StdEncoding.EncodeToString(certsOnly(t, f.root.cert, f.issuer.cert, leaf)))
		}, ""},
		{"not PKCS#7", func(*testing.T, *x509.Certificate) []byte { return []byte("<html>hello</html>") }, "neither base64 nor DER"},
		{"empty", func(*testing.T, *x509.Certificate) []byte { return nil }, "empty"},
		{"certificate for another key", func(t *testing.T, leaf *x509.Certificate) []byte {
			return []byte(base64.StdEncoding.EncodeToString(certsOnly(t, f.issuer.issue(t, other.Public(), "x"))))
		}, "none for the device key"},
		{"issuer outside the CA", func(t *testing.T, leaf *x509.Certificate) []byte {
			stranger := newRootCA(t, "stranger")
			return []byte(base64.StdEncoding.EncodeToString(certsOnly(t, stranger.issue(t, leaf.PublicKey, "x"))))
		}, "does not chain to the CA certificates from the server's /cacerts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.set(func(f *fakeEST) {
				f.answer = func(leaf *x509.Certificate) []byte { return tc.answer(t, leaf) }
			})
			conn := newConnector(t, "fake", f.settings(nil))
			req, issued, err := issue(t, conn)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				catest.CheckIssued(t, req, issued, pool(f.root.cert))
				if len(issued.Chain) != 1 || !issued.Chain[0].Equal(f.issuer.cert) {
					t.Fatalf("chain %v, want the issuing CA", subjects(issued.Chain))
				}
				return
			}
			if err == nil || !ca.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a permanent one containing %q", err, tc.want)
			}
		})
	}
}

// indefinite re-encodes a DER structure and its constructed children down to depth with BER
// indefinite lengths, as some Java EST servers send PKCS#7.
func indefinite(t testing.TB, der []byte, depth int) []byte {
	t.Helper()
	var v asn1.RawValue
	if rest, err := asn1.Unmarshal(der, &v); err != nil || len(rest) > 0 {
		t.Fatalf("indefinite: %v (%d bytes left)", err, len(rest))
	}
	if !v.IsCompound || depth == 0 {
		return der
	}
	out := []byte{v.FullBytes[0], 0x80}
	for inner := v.Bytes; len(inner) > 0; {
		var c asn1.RawValue
		var err error
		if inner, err = asn1.Unmarshal(inner, &c); err != nil {
			t.Fatalf("indefinite: %v", err)
		}
		out = append(out, indefinite(t, c.FullBytes, depth-1)...)
	}
	return append(out, 0, 0)
}

func wrap(s string, n int, sep string) string {
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + sep)
		s = s[n:]
	}
	b.WriteString(s + sep)
	return b.String()
}

// TestStatuses checks how each server answer is classified and reported.
func TestStatuses(t *testing.T) {
	f := newFakeEST(t)
	pw := writeFile(t, t.TempDir(), "pw", []byte("hunter2-secret"))
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name      string
		status    int
		header    map[string]string
		body      string
		wantClass ca.Class
		wantAfter func(time.Duration) bool
		want      string
	}{
		{"deferred", 202, map[string]string{"Retry-After": "600"}, "", ca.ClassPending, eq(600 * time.Second), "HTTP 202"},
		{"deferred until a date", 202, map[string]string{"Retry-After": date}, "", ca.ClassPending,
			func(d time.Duration) bool { return d > 60*time.Second && d <= 90*time.Second }, "HTTP 202"},
		{"deferred without a hint", 202, nil, "", ca.ClassPending, eq(0), "HTTP 202"},
		{"bad request", 400, nil, "400 invalid PKCS10 certificate signing request signature\n", ca.ClassPermanent, eq(0),
			"rejected the request (HTTP 400 Bad Request: 400 invalid PKCS10 certificate signing request signature"},
		{"unauthorized", 401, map[string]string{"WWW-Authenticate": `Basic realm="est"`}, "401 authorization required", ca.ClassPermanent, eq(0),
			"the server refused the adapter's credentials (HTTP 401 Unauthorized: 401 authorization required)"},
		{"forbidden", 403, nil, "subject not allowed by policy", ca.ClassPermanent, eq(0), "HTTP 403 Forbidden: subject not allowed by policy"},
		{"not found", 404, nil, "404 page not found", ca.ClassPermanent, eq(0), "HTTP 404"},
		{"rate limited", 429, map[string]string{"Retry-After": "7"}, "", ca.ClassRetryable, eq(7 * time.Second), "try later"},
		{"server error", 500, nil, "internal server error", ca.ClassRetryable, eq(0), "server error (HTTP 500 Internal Server Error: internal server error)"},
		{"unavailable", 503, map[string]string{"Retry-After": "30"}, "", ca.ClassRetryable, eq(30 * time.Second), "HTTP 503"},
		// A gateway may have passed the enrollment on: the CA may have issued, so never again.
		{"bad gateway", 502, nil, "<html><body>502 Bad Gateway</body></html>", ca.ClassPermanent, eq(0),
			"a gateway in front of the EST server answered HTTP 502 Bad Gateway"},
		{"gateway timeout", 504, nil, "upstream request timeout", ca.ClassPermanent, eq(0),
			"HTTP 504 Gateway Timeout: upstream request timeout: it may have passed the enrollment on"},
		{"redirect", 302, map[string]string{"Location": "https://elsewhere.example.com/"}, "", ca.ClassPermanent, eq(0), "set url to the final location"},
		{"no content", 204, nil, "", ca.ClassPermanent, eq(0), "unexpected answer"},
		{"long, noisy text", 400, nil, strings.Repeat("bad\x00\n", 200), ca.ClassPermanent, eq(0), "bad bad"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.set(func(f *fakeEST) {
				f.enroll = func(w http.ResponseWriter, _ *http.Request, _ *x509.CertificateRequest) {
					for k, v := range tc.header {
						w.Header().Set(k, v)
					}
					w.WriteHeader(tc.status)
					_, _ = io.WriteString(w, tc.body)
				}
			})
			conn := newConnector(t, "fake", f.settings(ca.Settings{"username": "adapter", "passwordFile": pw}))
			_, issued, err := issue(t, conn)
			if err == nil || issued != nil {
				t.Fatalf("Issue: %v, %v; want an error and no certificate", issued, err)
			}
			class, after := ca.Classify(err)
			if class != tc.wantClass || !tc.wantAfter(after) {
				t.Errorf("classified %v after %v, want %v: %v", class, after, tc.wantClass, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if len(err.Error()) > 400 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
			if strings.Contains(err.Error(), "hunter2") || strings.ContainsAny(err.Error(), "\x00\n") {
				t.Errorf("error leaks the password or control characters: %q", err)
			}
		})
	}
}

// TestUnauthenticated: a 401 to an adapter configured without credentials says what to set.
func TestUnauthenticated(t *testing.T) {
	f := newFakeEST(t)
	f.set(func(f *fakeEST) {
		f.enroll = func(w http.ResponseWriter, _ *http.Request, _ *x509.CertificateRequest) {
			http.Error(w, "401 authorization required", http.StatusUnauthorized)
		}
	})
	_, _, err := issue(t, newConnector(t, "fake", f.settings(nil)))
	want := "the server requires authentication (HTTP 401 Unauthorized: 401 authorization required); set username and passwordFile"
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want a permanent one containing %q", err, want)
	}
}

func eq(want time.Duration) func(time.Duration) bool {
	return func(d time.Duration) bool { return d == want }
}

// TestRequest checks what goes on the wire: paths with and without a label, basic credentials.
func TestRequest(t *testing.T) {
	f := newFakeEST(t)
	pw := writeFile(t, t.TempDir(), "pw", []byte("open sesame\n"))
	conn := newConnector(t, "fake", f.settings(ca.Settings{"label": "wifi", "username": "adapter", "passwordFile": pw}))
	req, issued, err := issue(t, conn)
	if err != nil {
		t.Fatal(err)
	}
	catest.CheckIssued(t, req, issued, pool(f.root.cert))
	f.mu.Lock()
	paths, auth := append([]string(nil), f.paths...), append([]string(nil), f.auth...)
	f.mu.Unlock()
	want := []string{"GET /.well-known/est/wifi/cacerts", "POST /.well-known/est/wifi/simpleenroll"}
	if strings.Join(paths, ",") != strings.Join(want, ",") {
		t.Errorf("requests %v, want %v", paths, want)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("adapter:open sesame"))
	for i, a := range auth {
		if a != basic {
			t.Errorf("request %d: Authorization %q, want %q", i, a, basic)
		}
	}
	// A second enrollment reuses the trust anchors.
	if _, _, err := issue(t, conn); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	n := f.cacerts
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("/cacerts read %d times for two enrollments, want once", n)
	}
}

// TestRollover: when the CA changes its issuer, the connector re-reads /cacerts instead of failing;
// a fixed caCertsFile is not second-guessed.
func TestRollover(t *testing.T) {
	f := newFakeEST(t)
	oldAnchors := writeCerts(t, t.TempDir(), "old.crt", f.issuer.cert, f.root.cert)
	fetched := newConnector(t, "fetched", f.settings(nil))
	fixed := newConnector(t, "fixed", f.settings(ca.Settings{"caCertsFile": oldAnchors}))
	for _, conn := range []*Connector{fetched, fixed} {
		if _, _, err := issue(t, conn); err != nil {
			t.Fatalf("%s before the rollover: %v", conn.name, err)
		}
	}
	newRoot := newRootCA(t, "new root")
	f.set(func(f *fakeEST) { f.root, f.issuer = newRoot, newRoot.sub(t, "new issuing CA") })

	req, issued, err := issue(t, fetched)
	if err != nil {
		t.Fatalf("after the rollover: %v", err)
	}
	catest.CheckIssued(t, req, issued, pool(newRoot.cert))

	_, _, err = issue(t, fixed)
	if err == nil || !ca.IsPermanent(err) || !strings.Contains(err.Error(), "does not chain to the CA certificates from caCertsFile") {
		t.Fatalf("fixed anchors after the rollover: %v, want a permanent chain error", err)
	}
}

// TestTransport checks failures below HTTP: nothing listening, a server that takes the request
// and never answers, cancellation mid-call.
func TestTransport(t *testing.T) {
	f := newFakeEST(t)
	anchors := writeCerts(t, t.TempDir(), "ca.crt", f.issuer.cert, f.root.cert)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	t.Run("nothing listening", func(t *testing.T) {
		conn := newConnector(t, "down", ca.Settings{"url": "https://" + testservers.FreeAddr(t), "caCertsFile": anchors})
		_, _, err := issue(t, conn)
		if c, _ := ca.Classify(err); c != ca.ClassRetryable || !strings.Contains(err.Error(), "cannot reach the server") {
			t.Fatalf("error %v (%v), want a retryable one saying the server cannot be reached", err, c)
		}
	})
	t.Run("request received, connection dropped", func(t *testing.T) {
		f.set(func(f *fakeEST) {
			f.enroll = func(w http.ResponseWriter, _ *http.Request, _ *x509.CertificateRequest) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					_ = conn.Close()
				}
			}
		})
		_, _, err := issue(t, newConnector(t, "fake", f.settings(nil)))
		if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "does not ask again") {
			t.Fatalf("error %v, want a permanent one: the CA may have issued", err)
		}
	})
	t.Run("request received, no answer in time", func(t *testing.T) {
		f.set(func(f *fakeEST) {
			f.enroll = func(http.ResponseWriter, *http.Request, *x509.CertificateRequest) { <-release }
		})
		_, _, err := issue(t, newConnector(t, "fake", f.settings(ca.Settings{"timeout": "300ms"})))
		if !ca.IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v, want a permanent one wrapping the deadline", err)
		}
	})
	t.Run("cancelled mid-call", func(t *testing.T) {
		entered := make(chan struct{}, 1)
		f.set(func(f *fakeEST) {
			f.enroll = func(http.ResponseWriter, *http.Request, *x509.CertificateRequest) { entered <- struct{}{}; <-release }
		})
		conn := newConnector(t, "fake", f.settings(nil))
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "CANCEL00000000000000000000000000")
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-entered; cancel() }()
		_, err := conn.Issue(ctx, req)
		if !errors.Is(err, context.Canceled) || ca.IsPermanent(err) {
			t.Fatalf("error %v, want a non-permanent one wrapping context.Canceled", err)
		}
	})
}

func TestPing(t *testing.T) {
	f := newFakeEST(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := newConnector(t, "fake", f.settings(nil)).Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	err := newConnector(t, "fake", f.settings(ca.Settings{"url": f.srv.URL + "/wrong"})).Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("Ping of a wrong url: %v, want the 404", err)
	}
	err = newConnector(t, "fake", ca.Settings{"url": f.srv.URL}).Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("Ping without trusting the server: %v", err)
	}
}
