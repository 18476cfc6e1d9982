package webhook_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
)

// TestEndToEnd runs devices and user sessions through emulator → Pub/Sub → engine → webhook
// connector → the test server → a real CA, and checks both ends: every certificate chains to the
// server's CA and carries the device key, and the server signed once per requestId.
func TestEndToEnd(t *testing.T) {
	s := newWebhookCA(t)
	// A port nobody listens on any more: the CA is down for the whole test.
	gone := httptest.NewTLSServer(http.NotFoundHandler())
	downURL := gone.URL
	gone.Close()

	const retryFor = 6 * time.Second
	h := e2etest.New(t, e2etest.Options{
		RetryFor: retryFor,
		CAs: func(*e2etest.Harness) map[string]ca.Connector {
			badHMAC := s.settings("/")
			badHMAC["hmacSecretFile"] = wrongSecret
			down := s.settings("/")
			down["url"] = downURL
			wrongRoot := s.settings("/")
			wrongRoot["caCertsFile"] = otherCAFile
			out := map[string]ca.Connector{
				"webhook-bad-hmac":   s.connector(t, "webhook-bad-hmac", badHMAC),
				"webhook-down":       s.connector(t, "webhook-down", down),
				"webhook-wrong-root": s.connector(t, "webhook-wrong-root", wrongRoot),
			}
			for name, path := range map[string]string{
				"webhook":           "/",
				"webhook-pending":   "/pending,pending,pending",
				"webhook-flaky":     "/retryable,html502,badjson",
				"webhook-refusing":  "/permanent",
				"webhook-wrong-key": "/wrongkey",
			} {
				out[name] = s.connector(t, name, s.settings(path))
			}
			return out
		},
	})

	type want struct {
		pending, errors int
	}
	successes := map[string]want{}
	start := func(caRef string, i int, w want) {
		spec := emulator.ProcessSpec{
			CARef:   caRef,
			Scope:   []string{"device", "user"}[i%2],
			KeyType: []string{"rsa", "rsa", "ecdsa", "ecdsa"}[i%4],
		}
		spec.AffiliatedUser = spec.Scope == "user" && i%6 == 1
		successes[h.Start(spec)] = w
	}
	for i := range 24 {
		start("webhook", i, want{})
	}
	for i := range 4 {
		start("webhook-pending", i, want{pending: 3})
		start("webhook-flaky", i, want{errors: 3})
	}
	failures := []struct {
		caRef, wantMessage    string
		wantCalls, wantSigned int
	}{
		{"webhook-refusing", "the CA refused the request: webhook webhook-refusing: " + permanentMessage + " (HTTP 403)", 1, 0},
		{"webhook-wrong-key", "webhook webhook-wrong-key returned a certificate for a different key", 1, 0},
		{"webhook-bad-hmac", "the CA refused the request: webhook webhook-bad-hmac: signature mismatch (HTTP 401)", 0, 0},
		{"webhook-down", "the CA kept failing for " + retryFor.String() + ": webhook webhook-down: POST " + downURL, 0, 0},
		// caCertsFile names another CA than the one the service issues from: the certificate the
		// service signed (once) is refused, never uploaded.
		{"webhook-wrong-root", `the CA returned an unusable certificate: it was issued by "CN=webhook test CA issuing" and does not chain to the CA certificates this CA connection trusts`, 1, 1},
	}
	var failed []string
	for i, f := range failures {
		failed = append(failed, h.Start(emulator.ProcessSpec{CARef: f.caRef, KeyType: []string{"rsa", "ecdsa"}[i%2]}))
	}

	names := append([]string{}, failed...)
	for name := range successes {
		names = append(names, name)
	}
	snaps := h.WaitFinished(names, 3*time.Minute)

	for name, w := range successes {
		s0 := snaps[name]
		leaf := h.MustIssue(s0, s.roots)
		e := s.entry(name)
		if n := s.ca.Issued(name); n != 1 || e.issued != 1 {
			t.Errorf("%s: CA signed %d, server answered with a certificate %d times; want 1 each", name, n, e.issued)
		}
		if e.pending != w.pending || e.errors != w.errors || e.calls != w.pending+w.errors+1 || e.lookups != 0 {
			t.Errorf("%s: server saw %d issue calls (%d pending, %d errors) and %d lookups; want %d pending and %d errors before one issuance",
				name, e.calls, e.pending, e.errors, e.lookups, w.pending, w.errors)
		}
		p := e.req.Process
		if p.Name != name || p.Scope != s0.Scope || e.req.Profile != s0.Scope || e.req.ValiditySeconds != 86400 {
			t.Errorf("%s: request for %q scope %q profile %q validity %d", name, p.Name, p.Scope, e.req.Profile, e.req.ValiditySeconds)
			continue
		}
		// The built-in profiles put the serial (device) or the e-mail (user) in the CN: the
		// metadata the server received is the process's own.
		switch {
		case s0.Scope == "device" && (p.Device == nil || p.User != nil || leaf.Subject.CommonName != p.Device.SerialNumber):
			t.Errorf("%s: device request %+v, certificate CN %q", name, p.Device, leaf.Subject.CommonName)
		case s0.Scope == "user" && (p.User == nil || leaf.Subject.CommonName != p.User.Email):
			t.Errorf("%s: user request %+v, certificate CN %q", name, p.User, leaf.Subject.CommonName)
		}
	}

	for i, f := range failures {
		t.Run(f.caRef, func(t *testing.T) {
			name := failed[i]
			s0 := snaps[name]
			if s0.State != emulator.StateFailed || s0.CertificatePEM != "" {
				t.Fatalf("state %s, certificate %q; want failed without one", s0.State, s0.CertificatePEM)
			}
			if !strings.Contains(s0.FailureMessage, f.wantMessage) {
				t.Errorf("failure message %q does not contain %q", s0.FailureMessage, f.wantMessage)
			}
			if s0.SignDataCount != 1 {
				t.Errorf("signData called %d times", s0.SignDataCount)
			}
			if n, e := s.ca.Issued(name), s.entry(name); n != f.wantSigned || e.calls != f.wantCalls {
				t.Errorf("CA signed %d, server saw %d issue calls; want %d and %d", n, e.calls, f.wantSigned, f.wantCalls)
			}
		})
	}
	if refused, _ := s.counts(); refused != 1 {
		t.Errorf("server refused %d requests for their authentication, want the bad HMAC's one", refused)
	}
	h.WaitJournalIdle(10 * time.Second)
}
