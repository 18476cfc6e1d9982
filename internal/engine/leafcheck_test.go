package engine_test

import (
	"context"
	"crypto/x509"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/process"
)

// templateCA is a CA whose certificate template, not the request, decides the extended key
// usages, as AD CS and step-ca templates do: the built-in CA issues for the request's key, subject
// and names (crypto/x509 builds the SANs, so UPN otherNames are lost) with the template's usages.
type templateCA struct {
	inner  *local.Connector
	usages []x509.ExtKeyUsage
}

func (c templateCA) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	return c.inner.IssueForKey(ctx, &ca.KeyRequest{
		Key: req.Key, PublicKey: req.CSR.PublicKey, Subject: req.CSR.Subject,
		DNSNames: req.CSR.DNSNames, EmailAddresses: req.CSR.EmailAddresses, URIs: req.CSR.URIs,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: c.usages, Validity: req.Validity,
	})
}

// misrootedCA is a CA connection configured with the trust anchors of another CA than the one
// that answers (a wrong caCertsFile, a CA that moved to a new hierarchy): the certificates are
// real, but do not chain to the roots the connection reports.
type misrootedCA struct {
	inner ca.Connector
	roots *x509.CertPool
}

func (c misrootedCA) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	issued, err := c.inner.Issue(ctx, req)
	if err == nil {
		issued.Roots = c.roots
	}
	return issued, err
}

// TestCertificateContents runs processes through CAs that change what the profile asked for, or
// answer from another hierarchy, and checks what reaches the device: a certificate with a warning
// where the profile tolerates it, a failure where it is strict or the chain is foreign, and never
// a second issuance.
func TestCertificateContents(t *testing.T) {
	twoUsages := func(strict bool) config.Profile {
		p := e2etest.Profile("{{.Device.SerialNumber}}", "", 30*time.Second)
		p.ExtKeyUsage = []string{"clientAuth", "emailProtection"}
		p.Strict = strict
		return p
	}
	strictDevice := e2etest.Profile("{{.Device.SerialNumber}}", "", 30*time.Second)
	strictDevice.Strict = true
	var other *local.Connector
	h := e2etest.New(t, e2etest.Options{
		Profiles: map[string]config.Profile{"two-usages": twoUsages(false), "two-usages-strict": twoUsages(true), "strict": strictDevice},
		CAs: func(h *e2etest.Harness) map[string]ca.Connector {
			dir := t.TempDir()
			cert, key, err := local.CreateCA(dir, "ecdsa", "another CA", 48*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ca.New(local.Type, ca.Settings{"certificateFile": cert, "keyFile": key, "ledgerFile": filepath.Join(dir, "ledger.jsonl")},
				ca.Env{Name: "other"})
			if err != nil {
				t.Fatal(err)
			}
			other = c.(*local.Connector)
			return map[string]ca.Connector{
				// An AD CS "Workstation Authentication"-like template: clientAuth only.
				"client-auth-template": templateCA{inner: h.Local, usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
				"misrooted":            misrootedCA{inner: other, roots: h.Roots},
			}
		},
	})
	scep := &process.SCEPProfile{
		CommonName: "scep-device", TemplateName: "ChromeOSDevice",
		SANs: []process.SAN{{Type: process.SANDNS, Value: "dev1.example.com"}, {Type: process.SANUPN, Value: "dev1@example.com"}},
	}
	dropped := h.Start(emulator.ProcessSpec{ProfileRef: "two-usages", CARef: "client-auth-template"})
	refused := h.Start(emulator.ProcessSpec{ProfileRef: "two-usages-strict", CARef: "client-auth-template", KeyType: "ecdsa"})
	faithful := h.Start(emulator.ProcessSpec{ProfileRef: "strict"})
	scepDropped := h.Start(emulator.ProcessSpec{SCEPProfile: scep, SCEPCAConnection: true, CARef: "client-auth-template"})
	foreign := h.Start(emulator.ProcessSpec{CARef: "misrooted"})
	snaps := h.WaitFinished([]string{dropped, refused, faithful, scepDropped, foreign}, 60*time.Second)

	t.Run("usage dropped, profile not strict: issued with a warning", func(t *testing.T) {
		leaf := h.MustIssue(snaps[dropped], h.Roots)
		if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
			t.Fatalf("usages %v: not the template CA's certificate", leaf.ExtKeyUsage)
		}
		if n := h.Local.Issued(dropped); n != 1 {
			t.Errorf("CA issued %d certificates, want 1", n)
		}
	})
	t.Run("usage dropped, profile strict: refused", func(t *testing.T) {
		s := snaps[refused]
		if s.State != emulator.StateFailed || s.CertificatePEM != "" {
			t.Fatalf("state %s, certificate %q; want failed without one", s.State, s.CertificatePEM)
		}
		const want = "the CA returned an unusable certificate: the profile is strict and the certificate differs from the request: " +
			"extendedKeyUsage: asked [clientAuth emailProtection], got [clientAuth] (the CA dropped emailProtection)"
		if s.FailureMessage != want {
			t.Errorf("failure message\n%q, want\n%q", s.FailureMessage, want)
		}
		if n := h.Local.Issued(refused); n != 1 {
			t.Errorf("CA issued %d certificates, want exactly the refused one", n)
		}
	})
	t.Run("strict profile, faithful CA: issued", func(t *testing.T) {
		h.MustIssue(snaps[faithful], nil)
	})
	t.Run("SCEP profile: names compared, usages left to the CA, never strict", func(t *testing.T) {
		leaf := h.MustIssue(snaps[scepDropped], h.Roots)
		if !slices.Equal(leaf.DNSNames, []string{"dev1.example.com"}) {
			t.Fatalf("DNS names %v", leaf.DNSNames)
		}
	})
	t.Run("chain to another root: refused", func(t *testing.T) {
		s := snaps[foreign]
		if s.State != emulator.StateFailed || s.CertificatePEM != "" {
			t.Fatalf("state %s, certificate %q; want failed without one", s.State, s.CertificatePEM)
		}
		if !strings.Contains(s.FailureMessage, `the CA returned an unusable certificate: it was issued by "CN=another CA" and does not chain to the CA certificates this CA connection trusts`) {
			t.Errorf("failure message %q", s.FailureMessage)
		}
		if n := other.Issued(foreign); n != 1 {
			t.Errorf("CA issued %d certificates, want exactly the refused one", n)
		}
	})

	for family, want := range map[string]map[string]float64{
		"certprov_ca_certificate_mismatches_total": {
			"ca_connection=client-auth-template,field=extendedKeyUsage": 1, // the tolerant profile only
			"ca_connection=client-auth-template,field=upn":              1, // the SCEP profile's UPN
		},
		"certprov_ca_certificates_rejected_total": {
			"ca_connection=client-auth-template,rule=contents": 1,
			"ca_connection=misrooted,rule=chain":               1,
		},
	} {
		if got := h.Series(family); !maps.Equal(got, want) {
			t.Errorf("%s = %v, want %v", family, got, want)
		}
	}
	h.WaitJournalIdle(5 * time.Second)
}
