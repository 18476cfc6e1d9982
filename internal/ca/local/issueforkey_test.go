package local

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
)

func keyRequest(pub crypto.PublicKey) *ca.KeyRequest {
	u, _ := url.Parse("urn:device:1234")
	return &ca.KeyRequest{
		Key:                "verifiedaccess/wifi/abc",
		PublicKey:          pub,
		Subject:            pkix.Name{CommonName: "5CD0000000", Organization: []string{"Example Corp"}},
		DNSNames:           []string{"host.example.com"},
		EmailAddresses:     []string{"user@example.com"},
		URIs:               []*url.URL{u},
		KeyUsage:           x509.KeyUsageDigitalSignature,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 311, 20, 2, 2}},
		Validity:           24 * time.Hour,
		ProfileName:        "wifi",
	}
}

func rsaPub(t *testing.T, bits int) *rsa.PublicKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

func TestIssueForKey(t *testing.T) {
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]crypto.PublicKey{
		"ecdsa P-256": &ecKey(t).PublicKey,
		"rsa 2048":    rsaPub(t, 2048),
		"ed25519":     edPub,
	}
	for name, pub := range keys {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, caSpec{}, ca.Settings{"ledgerFile": "ledger.jsonl"})
			req := keyRequest(pub)
			issued, err := f.conn.IssueForKey(context.Background(), req)
			if err != nil {
				t.Fatalf("IssueForKey: %v", err)
			}
			leaf := issued.Leaf
			if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
				t.Error("certificate is for another key")
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(f.cert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("does not chain to the CA: %v", err)
			}
			if leaf.Subject.CommonName != "5CD0000000" || !slices.Equal(leaf.Subject.Organization, []string{"Example Corp"}) {
				t.Errorf("subject %v", leaf.Subject)
			}
			if !slices.Equal(leaf.DNSNames, req.DNSNames) || !slices.Equal(leaf.EmailAddresses, req.EmailAddresses) ||
				len(leaf.URIs) != 1 || leaf.URIs[0].String() != "urn:device:1234" {
				t.Errorf("SANs %v %v %v", leaf.DNSNames, leaf.EmailAddresses, leaf.URIs)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(leaf.ExtKeyUsage, req.ExtKeyUsage) ||
				len(leaf.UnknownExtKeyUsage) != 1 || !leaf.UnknownExtKeyUsage[0].Equal(req.UnknownExtKeyUsage[0]) {
				t.Errorf("usages %v %v %v", leaf.KeyUsage, leaf.ExtKeyUsage, leaf.UnknownExtKeyUsage)
			}
			if leaf.IsCA || !leaf.BasicConstraintsValid {
				t.Error("leaf must carry basicConstraints cA=false")
			}
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 24*time.Hour {
				t.Errorf("lifetime %s", got)
			}
			if len(issued.Chain) != 1 || !issued.Chain[0].Equal(f.cert) {
				t.Errorf("chain %v", issued.Chain)
			}
			if f.conn.Issued(req.Key) != 1 {
				t.Errorf("Issued(%s) = %d", req.Key, f.conn.Issued(req.Key))
			}
			counts, err := LedgerCounts(filepath.Join(f.dir, "ledger.jsonl"))
			if err != nil || counts[req.Key] != 1 {
				t.Errorf("ledger %v %v", counts, err)
			}
			rec, err := f.conn.Recover(context.Background(), req.Key)
			if err != nil || rec == nil || !rec.Leaf.Equal(leaf) {
				t.Errorf("Recover: %v %v", rec, err)
			}
		})
	}
}

func TestIssueForKeySANOnly(t *testing.T) {
	f := newFixture(t, caSpec{}, nil)
	req := keyRequest(&ecKey(t).PublicKey)
	req.Subject = pkix.Name{}
	issued, err := f.conn.IssueForKey(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range issued.Leaf.Extensions {
		if e.Id.Equal(oidSubjectAltName()) && !e.Critical {
			t.Error("SAN must be critical when the subject is empty")
		}
	}
}

func TestIssueForKeyRefused(t *testing.T) {
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(r *ca.KeyRequest)
		msg  string
	}{
		{"no key", func(r *ca.KeyRequest) { r.PublicKey = nil }, "no public key"},
		{"small RSA", func(r *ca.KeyRequest) { r.PublicKey = rsaPub(t, 1024) }, "at least 2048"},
		{"P-224", func(r *ca.KeyRequest) { r.PublicKey = &p224.PublicKey }, "not supported"},
		{"private key", func(r *ca.KeyRequest) { r.PublicKey = p224 }, "unsupported public key"},
		{"CA usage", func(r *ca.KeyRequest) { r.KeyUsage |= x509.KeyUsageCertSign }, "CA key usages"},
		{"names nobody", func(r *ca.KeyRequest) {
			r.Subject, r.DNSNames, r.EmailAddresses, r.URIs = pkix.Name{}, nil, nil, nil
		}, "neither a subject"},
		{"nil URI", func(r *ca.KeyRequest) { r.URIs = []*url.URL{nil} }, "nil"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, caSpec{}, nil)
			req := keyRequest(&ecKey(t).PublicKey)
			tc.edit(req)
			issued, err := f.conn.IssueForKey(context.Background(), req)
			if err == nil || issued != nil {
				t.Fatalf("issued %v, err %v; want a refusal", issued, err)
			}
			if !ca.IsPermanent(err) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q (permanent %v); want a permanent error mentioning %q", err, ca.IsPermanent(err), tc.msg)
			}
			if n := f.conn.IssuedTotal(); n != 0 {
				t.Errorf("%d certificates issued", n)
			}
		})
	}
	t.Run("nil request", func(t *testing.T) {
		f := newFixture(t, caSpec{}, nil)
		if _, err := f.conn.IssueForKey(context.Background(), nil); !ca.IsPermanent(err) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		f := newFixture(t, caSpec{}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := f.conn.IssueForKey(ctx, keyRequest(&ecKey(t).PublicKey)); err == nil {
			t.Error("issued under a cancelled context")
		}
	})
	t.Run("expired CA", func(t *testing.T) {
		f := newFixture(t, caSpec{}, nil)
		f.conn.now = func() time.Time { return f.cert.NotAfter.Add(time.Hour) }
		if _, err := f.conn.IssueForKey(context.Background(), keyRequest(&ecKey(t).PublicKey)); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "expired") {
			t.Errorf("err %v", err)
		}
	})
}

func TestIssueForKeyConcurrent(t *testing.T) {
	f := newFixture(t, caSpec{}, nil)
	pub := &ecKey(t).PublicKey
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.conn.IssueForKey(context.Background(), keyRequest(pub)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := f.conn.IssuedTotal(); n != 16 {
		t.Errorf("IssuedTotal %d", n)
	}
}
