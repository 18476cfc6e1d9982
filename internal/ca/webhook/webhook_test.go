package webhook_test

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/ca/webhook"
)

func TestConformance(t *testing.T) {
	catest.RunTarget(t, func(t *testing.T) *catest.Target {
		s := newWebhookCA(t)
		return &catest.Target{
			Connector:  s.connector(t, "conformance", s.settings("/")),
			Roots:      s.roots,
			Idempotent: true, // the contract's requestId
			Pending: &catest.PendingControl{
				Hold:    func(testing.TB) { s.hold(true) },
				Approve: func(testing.TB) { s.hold(false) },
			},
			Revocation: &catest.Revocation{Status: func(_ testing.TB, cert *x509.Certificate) (bool, ca.Reason) {
				r, ok := s.revocation(cert.SerialNumber)
				return ok, ca.Reason(r.reasonCode)
			}},
		}
	})
}

func TestIssueSendsTheContract(t *testing.T) {
	s := newWebhookCA(t)
	conn := s.connector(t, "corp", s.settings("/"))
	for _, tc := range []struct {
		name string
		kt   catest.KeyType
		user bool
	}{
		{"device RSA", catest.RSA2048, false},
		{"user P-256", catest.P256, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := catest.NewRequest(t, catest.DeviceKey(t, tc.kt), strings.ReplaceAll(tc.name, " ", ""))
			req.TemplateName = "DeviceAuth"
			if !tc.user {
				req.Process.User = nil
			}
			issued, err := conn.Issue(context.Background(), req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			catest.CheckIssued(t, req, issued, s.roots)
			catest.CheckRoots(t, issued)
			e := s.entry(req.Key)
			if e.calls != 1 || e.issued != 1 || s.ca.Issued(req.Key) != 1 {
				t.Errorf("server: %d calls, %d issued answers, CA signed %d; want 1 each", e.calls, e.issued, s.ca.Issued(req.Key))
			}
			got, p := e.req, req.Process
			if got.Profile != "catest" || got.TemplateName != "DeviceAuth" || got.ValiditySeconds != 86400 || got.Ticket != "" {
				t.Errorf("profile %q template %q validity %d ticket %q", got.Profile, got.TemplateName, got.ValiditySeconds, got.Ticket)
			}
			if got.Process.Name != p.Name || got.Process.Customer != p.Customer || got.Process.ID != p.ID || got.Process.ProfileID != p.ProfileID {
				t.Errorf("process %+v, want %s", got.Process, p.Name)
			}
			if got.Process.Device == nil || got.Process.Device.SerialNumber != p.Device.SerialNumber || got.Process.Device.DirectoryID != p.Device.DirectoryID {
				t.Errorf("device %+v, want %+v", got.Process.Device, p.Device)
			}
			wantScope := "device"
			if tc.user {
				wantScope = "user"
				if got.Process.User == nil || got.Process.User.Email != p.User.Email || got.Process.User.DirectoryID != p.User.DirectoryID {
					t.Errorf("user %+v, want %+v", got.Process.User, p.User)
				}
			} else if got.Process.User != nil {
				t.Errorf("device scope sent a user %+v", got.Process.User)
			}
			if got.Process.Scope != wantScope {
				t.Errorf("scope %q, want %q", got.Process.Scope, wantScope)
			}
		})
	}
}

// TestScripts drives one request through each scripted server behaviour, calling Issue again as
// the engine would (with the ticket after a pending answer) until it gets a final answer.
func TestScripts(t *testing.T) {
	s := newWebhookCA(t)
	tests := []struct {
		path        string
		wantPending int
		wantErrors  []ca.Class // the classes of the non-pending errors, in order
		wantIssued  bool
		wantMessage string // in the last error
	}{
		{path: "/", wantIssued: true},
		{path: "/pending,pending,pending", wantPending: 3, wantIssued: true},
		{path: "/retryable,html502,badjson", wantErrors: []ca.Class{ca.ClassRetryable, ca.ClassRetryable, ca.ClassRetryable}, wantIssued: true},
		{path: "/pending,retryable,pending", wantPending: 2, wantErrors: []ca.Class{ca.ClassRetryable}, wantIssued: true},
		{path: "/permanent", wantErrors: []ca.Class{ca.ClassPermanent}, wantMessage: permanentMessage},
		{path: "/wrongkey", wantErrors: []ca.Class{ca.ClassPermanent}, wantMessage: "returned a certificate for a different key"},
	}
	for i, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			conn := s.connector(t, "scripted", s.settings(tc.path))
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "SCRIPT"+string(rune('A'+i)))
			var (
				pending int
				classes []ca.Class
				issued  *ca.Issued
				lastErr error
			)
			for range 10 {
				var err error
				issued, err = conn.Issue(context.Background(), req)
				if err == nil {
					break
				}
				lastErr = err
				class, _ := ca.Classify(err)
				if class == ca.ClassPending {
					var p *ca.PendingError
					if !errors.As(err, &p) || p.Ticket == "" {
						t.Fatalf("pending without a ticket: %v", err)
					}
					req.Ticket = p.Ticket
					pending++
					continue
				}
				classes = append(classes, class)
				if class == ca.ClassPermanent {
					break
				}
			}
			if pending != tc.wantPending || !equalClasses(classes, tc.wantErrors) {
				t.Errorf("%d pending answers and errors %v; want %d and %v (last error %v)", pending, classes, tc.wantPending, tc.wantErrors, lastErr)
			}
			if !tc.wantIssued {
				if issued != nil {
					t.Fatal("a certificate was returned")
				}
				if lastErr == nil || !strings.Contains(lastErr.Error(), tc.wantMessage) {
					t.Fatalf("last error %v, want it to contain %q", lastErr, tc.wantMessage)
				}
				if n := s.ca.Issued(req.Key); n != 0 {
					t.Errorf("CA signed %d certificates", n)
				}
				return
			}
			catest.CheckIssued(t, req, issued, s.roots)
			e := s.entry(req.Key)
			if s.ca.Issued(req.Key) != 1 || e.issued != 1 || e.calls != e.pending+e.errors+1 {
				t.Errorf("server: %d calls (%d pending, %d errors), %d issued answers, CA signed %d",
					e.calls, e.pending, e.errors, e.issued, s.ca.Issued(req.Key))
			}
		})
	}
}

func equalClasses(a, b []ca.Class) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAuthentication covers what the server checks before reading a request: the HMAC
// signature and the client certificate.
func TestAuthentication(t *testing.T) {
	s := newWebhookCA(t)
	tests := []struct {
		name        string
		edit        func(ca.Settings)
		wantClass   ca.Class
		wantMessage string
	}{
		{"wrong HMAC secret", func(st ca.Settings) { st["hmacSecretFile"] = wrongSecret }, ca.ClassPermanent, "signature mismatch (HTTP 401)"},
		{"no HMAC secret", func(st ca.Settings) { delete(st, "hmacSecretFile") }, ca.ClassPermanent, "missing X-Certprov-Signature (HTTP 401)"},
		{"no API key", func(st ca.Settings) { delete(st, "headerFiles") }, ca.ClassPermanent, "bad API key (HTTP 401)"},
		{"no client certificate", func(st ca.Settings) {
			st["tls"] = map[string]any{"caFile": serverCAFile}
		}, ca.ClassRetryable, "certificate required"},
		{"server not trusted", func(st ca.Settings) {
			st["tls"] = map[string]any{"certFile": clientCertFile, "keyFile": clientKeyFile}
		}, ca.ClassRetryable, "certificate signed by unknown authority"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := s.settings("/")
			tc.edit(st)
			conn := s.connector(t, "auth", st)
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "AUTH"+string(rune('A'+i)))
			refusedBefore, _ := s.counts()
			issued, err := conn.Issue(context.Background(), req)
			if err == nil || issued != nil {
				t.Fatalf("Issue = %v, %v; want an error", issued, err)
			}
			if class, _ := ca.Classify(err); class != tc.wantClass || !strings.Contains(err.Error(), tc.wantMessage) {
				t.Errorf("error %q (%v), want %v containing %q", err, class, tc.wantClass, tc.wantMessage)
			}
			if err := conn.(ca.Pinger).Ping(context.Background()); err == nil || !strings.Contains(err.Error(), tc.wantMessage) {
				t.Errorf("Ping = %v, want an error containing %q", err, tc.wantMessage)
			}
			if n := s.ca.Issued(req.Key); n != 0 || s.entry(req.Key).calls != 0 {
				t.Errorf("the server accepted the request (CA signed %d)", n)
			}
			refusedAfter, _ := s.counts()
			if tc.wantClass == ca.ClassPermanent && refusedAfter != refusedBefore+2 {
				t.Errorf("server refused %d requests, want the issue and the ping", refusedAfter-refusedBefore)
			}
		})
	}
	t.Run("all in order", func(t *testing.T) {
		conn := s.connector(t, "auth", s.settings("/"))
		if err := conn.(ca.Pinger).Ping(context.Background()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "AUTHOK")
		issued, err := conn.Issue(context.Background(), req)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		catest.CheckIssued(t, req, issued, s.roots)
	})
}

// TestRecover shows exactly-once issuance across a lost answer: the server issues, the answer
// never arrives (the call's deadline passes), a lookup finds the certificate, and asking again
// replays it instead of signing a second one.
func TestRecover(t *testing.T) {
	s := newWebhookCA(t)
	conn := s.connector(t, "recover", s.settings("/slow"))
	rec := conn.(ca.Recoverer)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.RSA2048), "RECOVER")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	issued, err := conn.Issue(ctx, req)
	if err == nil || issued != nil {
		t.Fatalf("Issue with a lost answer = %v, %v; want an error", issued, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) || ca.IsPermanent(err) {
		t.Fatalf("error %q: want a retryable deadline error", err)
	}
	if n := s.ca.Issued(req.Key); n != 1 {
		t.Fatalf("CA signed %d certificates before the answer was lost, want 1", n)
	}

	found, err := rec.Recover(context.Background(), req.Key)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	catest.CheckIssued(t, req, found, s.roots)

	again, err := conn.Issue(context.Background(), req)
	if err != nil {
		t.Fatalf("Issue again: %v", err)
	}
	if !again.Leaf.Equal(found.Leaf) || s.ca.Issued(req.Key) != 1 {
		t.Errorf("a retry got serial %s (recovered %s); CA signed %d", again.Leaf.SerialNumber, found.Leaf.SerialNumber, s.ca.Issued(req.Key))
	}

	for _, key := range []string{"customers/C0catest/certificateProvisioningProcesses/never-seen"} {
		got, err := rec.Recover(context.Background(), key)
		if err != nil || got != nil {
			t.Errorf("Recover(%q) = %v, %v; want nil, nil", key, got, err)
		}
	}
	if e := s.entry(req.Key); e.lookups != 1 {
		t.Errorf("server saw %d lookups for %s", e.lookups, req.Key)
	}

	cancelled, stop := context.WithCancel(context.Background())
	stop()
	if _, err := rec.Recover(cancelled, req.Key); !errors.Is(err, context.Canceled) {
		t.Errorf("Recover with a cancelled context = %v", err)
	}
}

func TestPing(t *testing.T) {
	s := newWebhookCA(t)
	conn := s.connector(t, "ping", s.settings("/"))
	if err := conn.(ca.Pinger).Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if _, pings := s.counts(); pings != 1 {
		t.Errorf("server saw %d pings", pings)
	}
	if got := s.ca.IssuedTotal(); got != 1 { // the certificate for the foreign key made at startup
		t.Errorf("a ping issued something: CA total %d", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := conn.(ca.Pinger).Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Ping with a cancelled context = %v", err)
	}
}

func TestTypeRegistered(t *testing.T) {
	found := false
	for _, typ := range ca.Types() {
		found = found || typ == webhook.Type
	}
	if !found {
		t.Fatalf("type %q not registered: %v", webhook.Type, ca.Types())
	}
}

// TestCertificates: the connection reports its caCertsFile root and its TLS client
// certificate for the expiry metrics, and nothing it does not hold.
func TestCertificates(t *testing.T) {
	s := newWebhookCA(t)
	held := s.connector(t, "certs", s.settings("/")).(ca.CertificateHolder).Certificates()
	roles := map[string]string{}
	for _, h := range held {
		roles[h.Role] = h.Cert.Subject.CommonName
	}
	if len(held) != 2 || roles[ca.RoleRoot] != s.ca.Certificate().Subject.CommonName || !strings.Contains(roles[ca.RoleClient], "ADAPTER") {
		t.Fatalf("held certificates %v", roles)
	}
	bare := s.connector(t, "bare", ca.Settings{"url": s.srv.URL + "/", "tls": map[string]any{"caFile": serverCAFile}})
	if held := bare.(ca.CertificateHolder).Certificates(); len(held) != 0 {
		t.Fatalf("a connection without caCertsFile or client certificate holds %d certificates", len(held))
	}
}
