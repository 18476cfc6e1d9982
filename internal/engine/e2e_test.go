package engine_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/process"
)

// TestProvisionMany drives devices and user sessions with RSA and P-256 keys, every notification
// encoding and both ECDSA signature formats through the whole flow.
func TestProvisionMany(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	const n = 60
	encodings := []string{"camel", "snake", "proto"}
	var names []string
	for i := range n {
		spec := emulator.ProcessSpec{
			Scope:             []string{"device", "user"}[i%2],
			KeyType:           []string{"rsa", "rsa", "ecdsa", "ecdsa"}[i%4],
			Encoding:          encodings[i%3],
			SignDelay:         time.Duration(i%5) * 30 * time.Millisecond,
			ECDSARawSignature: i%8 == 2,
			AffiliatedUser:    i%6 == 1,
		}
		names = append(names, h.start(spec))
	}
	snaps := h.waitFinished(names, 90*time.Second)
	for _, name := range names {
		s := snaps[name]
		leaf := h.mustIssue(s)
		if s.ClaimedBy != instanceID {
			t.Errorf("%s claimed by %q", name, s.ClaimedBy)
		}
		if s.Scope == "user" {
			if len(leaf.EmailAddresses) != 1 || leaf.Subject.CommonName != leaf.EmailAddresses[0] {
				t.Errorf("%s: user certificate CN %q SAN %v", name, leaf.Subject.CommonName, leaf.EmailAddresses)
			}
		} else if leaf.Subject.CommonName == "" {
			t.Errorf("%s: device certificate without CN", name)
		}
		if ok := hasEKU(leaf, x509.ExtKeyUsageClientAuth); !ok {
			t.Errorf("%s: no clientAuth EKU", name)
		}
	}
	h.waitJournalIdle(5 * time.Second)
}

func hasEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	for _, e := range c.ExtKeyUsage {
		if e == want {
			return true
		}
	}
	return false
}

func TestClaimLostToAnotherInstance(t *testing.T) {
	for _, status := range []int{400, 409} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			h.emu.SetClaimConflictStatus(status)
			name := h.start(emulator.ProcessSpec{NoPublish: true})
			if err := h.emu.ClaimAs(name, "someone-else"); err != nil {
				t.Fatal(err)
			}
			customer, id, _ := process.ParseName(name)
			data, err := emulator.EncodeNotification("camel", id, customer)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.emu.Publish(context.Background(), data); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, func() bool { return count(h.metrics.Admissions.WithLabelValues("claimed_by_other")) == 1 })
			s, _ := h.emu.Process(name)
			if s.ClaimedBy != "someone-else" || s.SignDataCount != 0 || s.Finished() {
				t.Fatalf("process touched after losing the claim: %+v", s)
			}
			if s.Calls["claim"] < 1 {
				t.Fatalf("adapter never tried to claim: %v", s.Calls)
			}
			recs, _ := h.store.Unfinished(context.Background())
			if len(recs) != 0 {
				t.Fatalf("journal recorded a process it does not own: %s", recs[0].Name)
			}
		})
	}
}

func TestFailures(t *testing.T) {
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, harnessOptions{
		signDeadline: 500 * time.Millisecond,
		retryFor:     time.Second,
		extraCAs: func(builtin *local.Connector) map[string]ca.Connector {
			return map[string]ca.Connector{
				"refusing":  refusingCA{},
				"wrong-key": &wrongKeyCA{inner: builtin, key: otherKey},
				"down":      downCA{},
			}
		},
	})
	tests := []struct {
		name        string
		spec        emulator.ProcessSpec
		wantMessage string
		wantSign    int
	}{
		{"unknown profile", emulator.ProcessSpec{ProfileRef: "no-such-profile"}, `no profile named "no-such-profile"`, 0},
		{"unknown CA connection", emulator.ProcessSpec{CARef: "no-such-ca"}, `no CA connection named "no-such-ca"`, 0},
		{"device never signs", emulator.ProcessSpec{Behaviour: "never-sign"}, "did not sign", 1},
		{"device offline", emulator.ProcessSpec{Behaviour: "offline", KeyType: "ecdsa"}, "did not sign", 1},
		{"CA refuses", emulator.ProcessSpec{CARef: "refusing"}, "template DeviceAuth is not allowed", 1},
		{"CA returns another key", emulator.ProcessSpec{CARef: "wrong-key"}, "different key", 1},
		{"CA down until the deadline", emulator.ProcessSpec{CARef: "down"}, "connection refused", 1},
		{"newline in serial", emulator.ProcessSpec{Serial: "SN1\nCN=evil"}, "control character", 0},
	}
	var names []string
	for _, tc := range tests {
		names = append(names, h.start(tc.spec))
	}
	snaps := h.waitFinished(names, 30*time.Second)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := snaps[names[i]]
			if s.State != "failed" {
				t.Fatalf("state %s, want failed", s.State)
			}
			if !strings.Contains(s.FailureMessage, tc.wantMessage) {
				t.Fatalf("failure message %q does not contain %q", s.FailureMessage, tc.wantMessage)
			}
			if s.SignDataCount != tc.wantSign {
				t.Fatalf("signData called %d times, want %d", s.SignDataCount, tc.wantSign)
			}
			if s.CertificatePEM != "" {
				t.Fatal("a certificate was uploaded")
			}
		})
	}
	t.Run("wrong device signature", func(t *testing.T) {
		name := h.start(emulator.ProcessSpec{Behaviour: "wrong-key"})
		s := h.waitFinished([]string{name}, 20*time.Second)[name]
		if s.State != "failed" || s.CertificatePEM != "" {
			t.Fatalf("state %s cert %q", s.State, s.CertificatePEM)
		}
		if !strings.Contains(s.FailureMessage, "does not verify") {
			t.Fatalf("failure message %q", s.FailureMessage)
		}
		if n := h.local.Issued(name); n != 0 {
			t.Fatalf("CA asked %d times for a bad signature", n)
		}
	})
	if got := count(h.metrics.BadSignatures); got < 1 {
		t.Errorf("bad signatures not counted: %d", got)
	}
}

// refusingCA refuses every request the way a CA policy would.
type refusingCA struct{}

func (refusingCA) Issue(context.Context, *ca.Request) (*ca.Issued, error) {
	return nil, ca.Permanentf("template DeviceAuth is not allowed for this requester")
}

// downCA is a CA whose port refuses connections.
type downCA struct{}

func (downCA) Issue(context.Context, *ca.Request) (*ca.Issued, error) {
	return nil, ca.Retryable(fmt.Errorf("dial tcp 127.0.0.1:1: connect: connection refused"), 0)
}

// wrongKeyCA issues a real certificate, but for a key other than the device's.
type wrongKeyCA struct {
	inner ca.Connector
	key   *ecdsa.PrivateKey
}

func (w *wrongKeyCA) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: req.CSR.Subject}, w.key)
	if err != nil {
		return nil, err
	}
	other, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	r := *req
	r.Key, r.CSR, r.CSRDER = "wrong-key/"+req.Key, other, der
	return w.inner.Issue(ctx, &r)
}

func TestTransientAPIErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	// Bursts of 429 (with and without Retry-After) and 503 on every method, and responses lost
	// after the change was applied on the mutations that must not be repeated blindly.
	h.emu.FailNext("", 6, 429, 0)
	h.emu.FailNext("get", 3, 503, 0)
	h.emu.FailNext("claim", 2, 429, time.Second)
	h.emu.LoseNextResponses("claim", 2)
	h.emu.LoseNextResponses("signData", 3)
	h.emu.FailNext("operations.get", 4, 503, 0)
	h.emu.LoseNextResponses("uploadCertificate", 2)
	h.emu.FailNext("uploadCertificate", 2, 500, 0)
	var names []string
	for i := range 12 {
		names = append(names, h.start(emulator.ProcessSpec{KeyType: []string{"rsa", "ecdsa"}[i%2], Scope: []string{"device", "user"}[i/2%2]}))
	}
	snaps := h.waitFinished(names, 60*time.Second)
	for _, name := range names {
		h.mustIssue(snaps[name])
	}
}

func TestFailedSetFailureRetried(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.emu.FailNext("setFailure", 3, 503, 0)
	h.emu.LoseNextResponses("setFailure", 1)
	name := h.start(emulator.ProcessSpec{ProfileRef: "missing"})
	s := h.waitFinished([]string{name}, 20*time.Second)[name]
	if s.State != "failed" || !strings.Contains(s.FailureMessage, `"missing"`) {
		t.Fatalf("state %s message %q", s.State, s.FailureMessage)
	}
	if s.Calls["setFailure"] < 4 {
		t.Fatalf("setFailure calls %d: the injected faults were not exercised", s.Calls["setFailure"])
	}
	h.waitJournalIdle(5 * time.Second)
}

func TestMalformedDuplicateAndForeignMessages(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	for _, junk := range [][]byte{
		[]byte("not a notification"),
		[]byte(`{}`),
		[]byte(`{"certificateProvisioningProcessId":"../../x","customerId":"C0test"}`),
		{0x0a, 0xff, 0xff},
	} {
		if err := h.emu.Publish(ctx, junk); err != nil {
			t.Fatal(err)
		}
	}
	foreign := h.start(emulator.ProcessSpec{Customer: "C0other"})
	var names []string
	for i := range 6 {
		names = append(names, h.start(emulator.ProcessSpec{Duplicates: 3, Encoding: []string{"camel", "proto"}[i%2], SignDelay: 100 * time.Millisecond}))
	}
	snaps := h.waitFinished(names, 30*time.Second)
	for _, name := range names {
		s := snaps[name]
		h.mustIssue(s)
		if s.Calls["claim"] != 1 {
			t.Errorf("%s: %d claims for one process; duplicates must be recognised from the journal", name, s.Calls["claim"])
		}
	}
	waitFor(t, 10*time.Second, func() bool { return count(h.intake.Messages.WithLabelValues("malformed")) == 4 })
	waitFor(t, 10*time.Second, func() bool { return count(h.intake.Messages.WithLabelValues("foreign_customer")) == 1 })
	if s, _ := h.emu.Process(foreign); s.Calls["get"] != 0 || s.Calls["claim"] != 0 {
		t.Fatalf("foreign customer's process was touched: %v", s.Calls)
	}
	if d := count(h.metrics.Admissions.WithLabelValues("duplicate")) + count(h.metrics.Admissions.WithLabelValues("coalesced")); d < 1 {
		t.Errorf("no duplicate admissions counted (%d) although each notification was published 4 times", d)
	}
}

func TestLROVariantsAndSCEPProfile(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.emu.SetLROVariant(emulator.LROVariant{OmitType: true, OmitSignatureInResponse: true})
	scep := &process.SCEPProfile{
		CommonName: "scep, \"device\" = 1", Organization: "Example, Inc.", OrganizationalUnits: []string{"IT", "Fleet"},
		Country: "FR", TemplateName: "ChromeOSDevice",
		SANs:      []process.SAN{{Type: process.SANDNS, Value: "dev1.example.com"}, {Type: process.SANUPN, Value: "dev1@example.com"}},
		KeyUsages: []string{process.KeyUsageSigning},
	}
	names := []string{
		h.start(emulator.ProcessSpec{KeyType: "ecdsa", SCEPProfile: scep, SCEPCAConnection: true}),
		h.start(emulator.ProcessSpec{Serial: "SN,with=commas+plus \"quoted\" é"}),
	}
	snaps := h.waitFinished(names, 30*time.Second)
	leaf := h.mustIssue(snaps[names[0]])
	if leaf.Subject.CommonName != scep.CommonName || len(leaf.Subject.OrganizationalUnit) != 2 || leaf.DNSNames[0] != "dev1.example.com" {
		t.Fatalf("SCEP profile subject not honoured: %v %v", leaf.Subject, leaf.DNSNames)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Fatalf("key usage %v", leaf.KeyUsage)
	}
	hostile := h.mustIssue(snaps[names[1]])
	if hostile.Subject.CommonName != "SN,with=commas+plus \"quoted\" é" || len(hostile.Subject.Names) != 2 {
		t.Fatalf("hostile serial interpreted: CN %q names %v", hostile.Subject.CommonName, hostile.Subject.Names)
	}
}
