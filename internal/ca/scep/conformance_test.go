package scep

import (
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
)

// TestConformanceSCEPServer runs the connector suite against micromdm's scepserver. The suite's
// requests carry no challenge password, so this server runs without one; the challenge paths
// are tested below and end to end.
func TestConformanceSCEPServer(t *testing.T) {
	srv := startSCEPServer(t, "")
	catest.Run(t, func(t *testing.T) (ca.Connector, *x509.CertPool) {
		return newTestConnector(t, ca.Settings{"url": srv.url}), srv.roots
	})
}

// TestConformanceNDESStyle runs the suite against a responder shaped like NDES: separate signing
// and encryption RA certificates under an issuing CA under a root.
func TestConformanceNDESStyle(t *testing.T) {
	catest.RunTarget(t, func(t *testing.T) *catest.Target {
		r, srv := ndesResponder(t, &responder{})
		return &catest.Target{
			Connector: newTestConnector(t, ca.Settings{"url": srv.URL + "/certsrv/mscep/mscep.dll"}),
			Roots:     r.roots(),
			// NDES with manager approval: PENDING, then CertPoll until issued.
			Pending: &catest.PendingControl{
				Hold:    func(testing.TB) { r.hold(true) },
				Approve: func(testing.TB) { r.hold(false) },
			},
		}
	})
}

// TestStaticChallengeSCEPServer sends requests that carry the connector's static challenge to a
// scepserver that enforces one: the right one issues, a wrong one fails permanently with the
// server's failInfo, and no message repeats the password.
func TestStaticChallengeSCEPServer(t *testing.T) {
	const secret = "Chall3nge-s3cret"
	srv := startSCEPServer(t, secret)
	tests := []struct {
		name      string
		challenge string
		kt        catest.KeyType
		wantErr   string
	}{
		{"right challenge RSA", secret, catest.RSA2048, ""},
		{"right challenge P-256", secret, catest.P256, ""},
		{"wrong challenge", "not-the-secret", catest.P256, "failInfo badRequest"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestConnector(t, ca.Settings{"url": srv.url, "challenge": tc.challenge})
			req := requestWithChallenge(t, c, tc.kt, "STATIC"+string(rune('A'+i)))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			issued, err := c.Issue(ctx, req)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				catest.CheckIssued(t, req, issued, srv.roots)
				catest.CheckRoots(t, issued)
				return
			}
			if err == nil {
				t.Fatal("Issue succeeded with a wrong challenge")
			}
			if !ca.IsPermanent(err) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q (permanent %v), want a permanent one containing %q", err, ca.IsPermanent(err), tc.wantErr)
			}
			if strings.Contains(err.Error(), tc.challenge) {
				t.Fatalf("error %q reveals the challenge", err)
			}
		})
	}
}

// TestPingSCEPServer checks Ping and the fingerprint pin against the real server.
func TestPingSCEPServer(t *testing.T) {
	srv := startSCEPServer(t, "")
	tests := []struct {
		name    string
		pin     string
		wantErr string
	}{
		{"no pin", "", ""},
		{"pin of the CA", fingerprint(srv.ca), ""},
		{"pin with colons upper case", colonHex(fingerprint(srv.ca)), ""},
		{"pin of another CA", fingerprint(newTestCA(t, "someone else").cert), "matches no certificate from GetCACert"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			settings := ca.Settings{"url": srv.url}
			if tc.pin != "" {
				settings["caCertFingerprint"] = tc.pin
			}
			c := newTestConnector(t, settings)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := c.Ping(ctx)
			req := newRequest(t, catest.DeviceKey(t, catest.P256), "PING", nil)
			issued, issueErr := c.Issue(ctx, req)
			if tc.wantErr == "" {
				if err != nil || issueErr != nil {
					t.Fatalf("Ping: %v, Issue: %v", err, issueErr)
				}
				catest.CheckIssued(t, req, issued, srv.roots)
				return
			}
			for what, e := range map[string]error{"Ping": err, "Issue": issueErr} {
				if e == nil || !ca.IsPermanent(e) || !strings.Contains(e.Error(), tc.wantErr) {
					t.Errorf("%s: %v, want a permanent error containing %q", what, e, tc.wantErr)
				}
			}
			if !strings.Contains(err.Error(), fingerprint(srv.ca)) {
				t.Errorf("Ping error %q does not name the fingerprint the server offered", err)
			}
		})
	}
}

func colonHex(h string) string {
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, strings.ToUpper(h[i:i+2]))
	}
	return strings.Join(parts, ":")
}

// TestGETAgainstSCEPServer hides POSTPKIOperation from scepserver's GetCACaps (through a proxy
// that also counts methods), so that the request goes base64 in a GET to the real server.
func TestGETAgainstSCEPServer(t *testing.T) {
	srv := startSCEPServer(t, "")
	target, err := url.Parse(srv.url)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var methods []string
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
	proxy.ModifyResponse = func(resp *http.Response) error {
		q := resp.Request.URL.Query()
		switch q.Get("operation") {
		case "GetCACaps":
			resp.Body = io.NopCloser(strings.NewReader("SHA-256\nAES\nDES3\n"))
			resp.ContentLength = -1
			resp.Header.Del("Content-Length")
		case "PKIOperation":
			mu.Lock()
			methods = append(methods, resp.Request.Method)
			mu.Unlock()
		}
		return nil
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)

	c := newTestConnector(t, ca.Settings{"url": front.URL + "/scep"})
	for _, kt := range []catest.KeyType{catest.RSA2048, catest.P256} {
		req := newRequest(t, catest.DeviceKey(t, kt), "GET"+strings.ReplaceAll(string(kt), "-", ""), nil)
		issued, err := c.Issue(ctxT(t), req)
		if err != nil {
			t.Fatalf("%s: Issue: %v", kt, err)
		}
		catest.CheckIssued(t, req, issued, srv.roots)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(methods, []string{"GET", "GET"}) {
		t.Fatalf("PKIOperation methods %v, want two GETs", methods)
	}
}
