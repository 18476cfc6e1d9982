package stepca

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// The whole adapter (emulator → Pub/Sub → engine → this connector → step-ca) on loopback.

// TestEndToEnd provisions devices and users, RSA and P-256, through step-ca: every certificate
// is step-ca's, chains through its intermediate to its root, and carries the device key and the
// names the profile asked for.
func TestEndToEnd(t *testing.T) {
	s := sharedCA(t)
	h := e2etest.New(t, e2etest.Options{
		CAs: func(*e2etest.Harness) map[string]ca.Connector {
			return map[string]ca.Connector{"stepca": s.connector(t, adminProvisioner)}
		},
	})
	const n = 24
	type want struct{ scope, keyType, cn, email string }
	wants := map[string]want{}
	var names []string
	for i := range n {
		w := want{scope: []string{"device", "device", "user", "user"}[i%4], keyType: []string{"rsa", "ecdsa"}[i%2]}
		spec := emulator.ProcessSpec{CARef: "stepca", Scope: w.scope, KeyType: w.keyType,
			Serial: fmt.Sprintf("STEPE2E%04d", i), UserEmail: fmt.Sprintf("user%d@example.com", i)}
		w.cn = spec.Serial
		if w.scope == "user" {
			w.cn, w.email = spec.UserEmail, spec.UserEmail
		}
		name := h.Start(spec)
		names = append(names, name)
		wants[name] = w
	}
	snaps := h.WaitFinished(names, 3*time.Minute)
	intermediates := x509.NewCertPool()
	intermediates.AddCert(s.Intermediate)
	issued := 0
	for _, name := range names {
		w, snap := wants[name], snaps[name]
		leaf := h.MustIssue(snap, s.Anchors) // the leaf alone, as uploaded
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.Roots, Intermediates: intermediates,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: does not chain to the step-ca root for clientAuth: %v", name, err)
			continue
		}
		if err := leaf.CheckSignatureFrom(s.Intermediate); err != nil {
			t.Errorf("%s: not signed by step-ca's intermediate: %v", name, err)
		}
		switch leaf.PublicKey.(type) {
		case *rsa.PublicKey:
			if w.keyType != "rsa" {
				t.Errorf("%s: RSA certificate for a %s device key", name, w.keyType)
			}
		case *ecdsa.PublicKey:
			if w.keyType != "ecdsa" {
				t.Errorf("%s: ECDSA certificate for a %s device key", name, w.keyType)
			}
		}
		if leaf.Subject.CommonName != w.cn {
			t.Errorf("%s: CN %q, want %q", name, leaf.Subject.CommonName, w.cn)
		}
		if w.email != "" && !slices.Equal(leaf.EmailAddresses, []string{w.email}) {
			t.Errorf("%s: user certificate e-mail SANs %v, want [%s]", name, leaf.EmailAddresses, w.email)
		}
		issued++
	}
	t.Logf("%d of %d processes issued by step-ca", issued, n)
	// One CA call per process: nothing was retried, so step-ca signed each device key once.
	if got := h.Metric("certprov_ca_requests_total", "ca_connection", "stepca", "operation", "issue"); got != float64(n) {
		t.Errorf("%v calls to step-ca for %d processes", got, n)
	}
	h.WaitJournalIdle(10 * time.Second)
}

// TestEndToEndFailures: the ways a step-ca connection fails end as a failed process whose
// message says why, with no certificate; names a provisioner allows still go through.
func TestEndToEndFailures(t *testing.T) {
	s := sharedCA(t)
	wrongPW := filepath.Join(t.TempDir(), "wrong-password")
	if err := os.WriteFile(wrongPW, []byte("not the password"), 0o600); err != nil {
		t.Fatal(err)
	}
	downAddr := testservers.FreeAddr(t) // nothing listens there
	build := func(change func(ca.Settings), p string) ca.Connector {
		st := s.settings(p)
		change(st)
		c, err := New(st, ca.Env{Name: p})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	profile := func(dns string) config.Profile {
		p := e2etest.Profile("{{.Device.SerialNumber}}", "", 30*time.Second)
		p.SubjectAltNames.DNS = []string{dns}
		return p
	}
	h := e2etest.New(t, e2etest.Options{
		RetryFor: 2 * time.Second,
		Profiles: map[string]config.Profile{
			"inside":  profile("{{.Device.SerialNumber | lower}}" + allowedSuffix),
			"outside": profile("{{.Device.SerialNumber | lower}}.elsewhere.example.org"),
		},
		CAs: func(*e2etest.Harness) map[string]ca.Connector {
			return map[string]ca.Connector{
				"restricted": build(func(ca.Settings) {}, restrictedProvisioner),
				"bad-password": build(func(st ca.Settings) { st["provisionerPasswordFile"] = wrongPW },
					adminProvisioner),
				"bad-root": build(func(st ca.Settings) { st["rootFingerprint"] = strings.Repeat("0", 64) },
					adminProvisioner),
				"down": build(func(st ca.Settings) { st["url"] = "https://" + downAddr }, adminProvisioner),
			}
		},
	})
	tests := []struct {
		name  string
		spec  emulator.ProcessSpec
		wants []string // empty: issued
	}{
		{"name the provisioner allows", emulator.ProcessSpec{CARef: "restricted", ProfileRef: "inside", KeyType: "ecdsa"}, nil},
		{"name the provisioner refuses", emulator.ProcessSpec{CARef: "restricted", ProfileRef: "outside", KeyType: "rsa"},
			[]string{"HTTP 400", ".elsewhere.example.org is outside the names this provisioner may sign"}},
		{"wrong provisioner password", emulator.ProcessSpec{CARef: "bad-password"},
			[]string{`cannot decrypt the key of step-ca provisioner "adapter"`, "wrong password?"}},
		{"wrong root fingerprint", emulator.ProcessSpec{CARef: "bad-root"},
			[]string{"has no root with fingerprint " + strings.Repeat("0", 64), "check rootFingerprint"}},
		{"CA down until the deadline", emulator.ProcessSpec{CARef: "down", KeyType: "ecdsa"},
			[]string{"connection refused"}},
	}
	var names []string
	for _, tc := range tests {
		names = append(names, h.Start(tc.spec))
	}
	snaps := h.WaitFinished(names, 2*time.Minute)
	if got := h.Metric("certprov_ca_requests_total", "ca_connection", "down", "operation", "issue", "outcome", "retryable"); got < 2 {
		t.Errorf("the CA that is down was tried %v times before the process failed; want retries", got)
	}
	for _, name := range []string{"restricted", "bad-password", "bad-root"} {
		if got := h.Metric("certprov_ca_requests_total", "ca_connection", name, "outcome", "retryable"); got != 0 {
			t.Errorf("%s: %v retries of a permanent failure", name, got)
		}
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			snap := snaps[names[i]]
			if len(tc.wants) == 0 {
				leaf := h.MustIssue(snap, s.Anchors)
				if want := strings.ToLower(leaf.Subject.CommonName) + allowedSuffix; !slices.Equal(leaf.DNSNames, []string{want}) {
					t.Errorf("DNS names %v, want [%s]", leaf.DNSNames, want)
				}
				return
			}
			if snap.State != emulator.StateFailed || snap.CertificatePEM != "" {
				t.Fatalf("state %s, certificate %q; want failed without one", snap.State, snap.CertificatePEM)
			}
			t.Logf("failure message: %s", snap.FailureMessage)
			for _, w := range tc.wants {
				if !strings.Contains(snap.FailureMessage, w) {
					t.Errorf("failure message %q does not mention %q", snap.FailureMessage, w)
				}
			}
			if strings.Contains(snap.FailureMessage, caPassword) {
				t.Error("the password is in the failure message")
			}
			if snap.SignDataCount != 1 {
				t.Errorf("signData called %d times", snap.SignDataCount)
			}
		})
	}
}
