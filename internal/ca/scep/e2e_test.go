package scep

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// TestEndToEnd runs devices and user sessions through emulator → Pub/Sub → engine → this
// connector → the real scepserver, with a static challenge and with a challenge fetched from an
// NDES-style admin page per process; and one connection whose server holds requests PENDING.
func TestEndToEnd(t *testing.T) {
	const challenge = "5D2C8E4F1A3B6C7D" // hex, like the passwords NDES hands out
	srv := startSCEPServer(t, challenge)
	admin := newNDESAdmin(t, &ndesAdmin{user: "svc-ndes", password: "admin-pw", page: ndesPage(t, challenge), contentType: "text/html"})
	pend, pendSrv := ndesResponder(t, &responder{pendingPolls: 2})

	h := e2etest.New(t, e2etest.Options{CAs: func(*e2etest.Harness) map[string]ca.Connector {
		return map[string]ca.Connector{
			"scep": newTestConnector(t, ca.Settings{"url": srv.url, "challenge": challenge, "caCertFingerprint": fingerprint(srv.ca)}),
			"scep-ndes": newTestConnector(t, ca.Settings{"url": srv.url, "dynamicChallenge": map[string]any{
				"url": admin.srv.URL + "/certsrv/mscep_admin/", "username": "svc-ndes", "passwordFile": writePasswordFile(t, "admin-pw"),
			}}),
			"scep-pending": newTestConnector(t, ca.Settings{"url": pendSrv.URL + "/certsrv/mscep/mscep.dll", "pollInterval": "50ms"}),
		}
	}})

	type started struct {
		name  string
		roots *x509.CertPool
	}
	var procs []started
	const static, dynamic, pending = 24, 6, 2
	for i := range static + dynamic + pending {
		spec := emulator.ProcessSpec{
			Scope:   []string{"device", "user"}[i%2],
			KeyType: []string{"rsa", "rsa", "ecdsa", "ecdsa"}[i%4],
			CARef:   "scep",
		}
		roots := srv.roots
		switch {
		case i >= static+dynamic:
			// The device gets the leaf alone, so check it against the issuing CA of the RA setup.
			spec.CARef, roots = "scep-pending", pool(pend.ca.cert)
		case i >= static:
			spec.CARef = "scep-ndes"
		}
		procs = append(procs, started{h.Start(spec), roots})
	}
	names := make([]string, len(procs))
	for i, p := range procs {
		names[i] = p.name
	}
	snaps := h.WaitFinished(names, 3*time.Minute)
	byCA := map[string]int{}
	for i, p := range procs {
		s := snaps[p.name]
		leaf := h.MustIssue(s, p.roots)
		if s.Scope == "user" && (len(leaf.EmailAddresses) != 1 || leaf.Subject.CommonName != leaf.EmailAddresses[0]) {
			t.Errorf("%s: user certificate CN %q SAN %v", p.name, leaf.Subject.CommonName, leaf.EmailAddresses)
		}
		switch {
		case i >= static+dynamic:
			byCA["scep-pending"]++
		case i >= static:
			byCA["scep-ndes"]++
		default:
			byCA["scep"]++
		}
	}
	t.Logf("issued through scepserver with a static challenge: %d, with an NDES dynamic challenge: %d, after PENDING: %d",
		byCA["scep"], byCA["scep-ndes"], byCA["scep-pending"])
	if got := admin.hits.Load(); got != dynamic {
		t.Errorf("the NDES admin page was asked %d times, want once per process (%d)", got, dynamic)
	}
	_, _, types, issued := pend.snapshot()
	if issued != pending {
		t.Errorf("the pending responder issued %d certificates, want %d", issued, pending)
	}
	polls := 0
	for _, ty := range types {
		if ty == msgCertPoll {
			polls++
		}
	}
	if polls < 2*pending {
		t.Errorf("%d CertPolls for %d pending processes, want at least 2 each", polls, pending)
	}
	h.WaitJournalIdle(10 * time.Second)
}

// TestEndToEndFailures: what a user sees when the SCEP side goes wrong.
func TestEndToEndFailures(t *testing.T) {
	const challenge = "right-challenge"
	const wrong = "wrong-challenge-value"
	srv := startSCEPServer(t, challenge)
	cacheFull := newNDESAdmin(t, &ndesAdmin{user: "svc", password: "pw", contentType: "text/html",
		page: func() []byte { return readTestdata(t, "ndes_admin_cache_full.html") }})
	noPermission := newNDESAdmin(t, &ndesAdmin{user: "svc", password: "pw", contentType: "text/html",
		page: func() []byte { return readTestdata(t, "ndes_admin_no_permission.html") }})
	dynamic := func(a *ndesAdmin) ca.Settings {
		return ca.Settings{"url": srv.url, "dynamicChallenge": map[string]any{
			"url": a.srv.URL + "/certsrv/mscep_admin/", "username": "svc", "passwordFile": writePasswordFile(t, "pw")}}
	}
	down := "http://" + testservers.FreeAddr(t) + "/scep"

	h := e2etest.New(t, e2etest.Options{RetryFor: 2 * time.Second, CAs: func(*e2etest.Harness) map[string]ca.Connector {
		return map[string]ca.Connector{
			"wrong-challenge": newTestConnector(t, ca.Settings{"url": srv.url, "challenge": wrong}),
			"down":            newTestConnector(t, ca.Settings{"url": down, "challenge": challenge}),
			"pinned-other":    newTestConnector(t, ca.Settings{"url": srv.url, "challenge": challenge, "caCertFingerprint": strings.Repeat("0f", 32)}),
			"cache-full":      newTestConnector(t, dynamic(cacheFull)),
			"no-permission":   newTestConnector(t, dynamic(noPermission)),
		}
	}})
	tests := []struct {
		ca       string
		want     string
		wantSign int
	}{
		{"wrong-challenge", "failInfo badRequest", 1},
		{"down", "connection refused", 1},
		{"pinned-other", "caCertFingerprint", 1},
		{"cache-full", "password cache is full", 0},
		{"no-permission", "sufficient permission", 0},
	}
	var names []string
	for i, tc := range tests {
		names = append(names, h.Start(emulator.ProcessSpec{CARef: tc.ca, KeyType: []string{"rsa", "ecdsa"}[i%2]}))
	}
	snaps := h.WaitFinished(names, time.Minute)
	for i, tc := range tests {
		t.Run(tc.ca, func(t *testing.T) {
			s := snaps[names[i]]
			if s.State != emulator.StateFailed || s.CertificatePEM != "" {
				t.Fatalf("state %s, certificate %q: want failed without one", s.State, s.CertificatePEM)
			}
			t.Logf("failure message: %s", s.FailureMessage)
			if !strings.Contains(s.FailureMessage, tc.want) {
				t.Fatalf("failure message %q does not contain %q", s.FailureMessage, tc.want)
			}
			if s.SignDataCount != tc.wantSign {
				t.Errorf("signData called %d times, want %d", s.SignDataCount, tc.wantSign)
			}
			for _, secret := range []string{challenge, wrong} {
				if strings.Contains(s.FailureMessage, secret) {
					t.Errorf("failure message %q reveals a challenge password", s.FailureMessage)
				}
			}
		})
	}
}
