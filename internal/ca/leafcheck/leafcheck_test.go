package leafcheck_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/ca/leafcheck"
	"github.com/certprov/certprov-adapter/internal/csr"
)

// pki is a root, an issuing intermediate under it, and a device request (catest.NewRequest: DNS,
// e-mail and UPN names, clientAuth) to issue leaves for.
type pki struct {
	root, issuing *catest.CA
	req           *ca.Request
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	root := catest.NewRoot(t, "leafcheck root")
	return &pki{root: root, issuing: root.NewIntermediate(t, "leafcheck issuing CA"),
		req: catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "0123456789ABCDEF0123456789ABCDEF")}
}

// leaf issues, from the intermediate, what a faithful CA makes of the request: its subject, its
// subjectAltName extension as requested (UPN included) and clientAuth; edit changes that.
func (p *pki) leaf(t *testing.T, edit func(*x509.Certificate)) *ca.Issued {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:               p.req.CSR.Subject,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	for _, e := range p.req.CSR.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
		}
	}
	if edit != nil {
		edit(tmpl)
	}
	return &ca.Issued{Leaf: p.issuing.Sign(t, tmpl, p.req.CSR.PublicKey), Chain: []*x509.Certificate{p.issuing.Cert}, Roots: p.root.Pool()}
}

func (p *pki) want() leafcheck.Expectations {
	return leafcheck.Expectations{SPKI: p.req.CSR.RawSubjectPublicKeyInfo, CSR: p.req.CSR}
}

// withSANs replaces the requested SAN extension by one crypto/x509 builds from fields (no UPN).
func withSANs(dns, email []string, uris []*url.URL, ips []net.IP) func(*x509.Certificate) {
	return func(c *x509.Certificate) {
		c.ExtraExtensions = nil
		c.DNSNames, c.EmailAddresses, c.URIs, c.IPAddresses = dns, email, uris, ips
	}
}

func TestFaithfulCertificatePasses(t *testing.T) {
	p := newPKI(t)
	mismatches, err := leafcheck.Check(p.leaf(t, nil), p.want())
	if err != nil || len(mismatches) != 0 {
		t.Fatalf("a certificate that is exactly what was asked for: mismatches %v, error %v", mismatches, err)
	}
}

// TestRules breaks one rule per case, on real certificates, and expects exactly that rule.
func TestRules(t *testing.T) {
	p := newPKI(t)
	other := catest.NewRoot(t, "another root")
	otherKey := catest.DeviceKey(t, catest.P256)
	expiredCA := p.root.NewIntermediate(t, "expired issuing CA")
	expiredTmpl := *expiredCA.Cert
	expiredTmpl.NotBefore, expiredTmpl.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	expiredCA.Cert = p.root.Sign(t, &expiredTmpl, expiredCA.Key.Public())

	tests := []struct {
		name    string
		issued  func() *ca.Issued
		rule    leafcheck.Rule
		message string
	}{
		{"no answer", func() *ca.Issued { return nil }, leafcheck.RuleMissing, "no certificate"},
		{"no leaf", func() *ca.Issued { return &ca.Issued{Roots: p.root.Pool()} }, leafcheck.RuleMissing, "no certificate"},
		{"another key", func() *ca.Issued {
			i := p.leaf(t, nil)
			i.Leaf = p.issuing.Sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "x"}}, otherKey.Public())
			return i
		}, leafcheck.RuleKey, "different key"},
		{"not yet valid", func() *ca.Issued {
			return p.leaf(t, func(c *x509.Certificate) { c.NotBefore = time.Now().Add(ca.MaxClockSkew + time.Minute) })
		}, leafcheck.RuleValidity, "not valid before"},
		{"expired", func() *ca.Issued {
			return p.leaf(t, func(c *x509.Certificate) {
				c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Minute)
			})
		}, leafcheck.RuleValidity, "expired at"},
		{"a CA certificate", func() *ca.Issued {
			return p.leaf(t, func(c *x509.Certificate) { c.IsCA, c.KeyUsage = true, x509.KeyUsageCertSign })
		}, leafcheck.RuleCA, "CA certificate"},
		{"chains to another root", func() *ca.Issued {
			i := p.leaf(t, nil)
			i.Roots = other.Pool()
			return i
		}, leafcheck.RuleChain, `issued by "CN=leafcheck issuing CA,O=certprov catest" and does not chain`},
		{"intermediate missing", func() *ca.Issued {
			i := p.leaf(t, nil)
			i.Chain = nil
			return i
		}, leafcheck.RuleChain, "unknown authority"},
		{"intermediate expired", func() *ca.Issued {
			i := &pki{root: p.root, issuing: expiredCA, req: p.req}
			return i.leaf(t, nil)
		}, leafcheck.RuleChain, "expired"},
		{"strict and a usage dropped", func() *ca.Issued {
			return p.leaf(t, func(c *x509.Certificate) { c.ExtKeyUsage = nil })
		}, leafcheck.RuleContents, "the profile is strict and the certificate differs from the request: extendedKeyUsage: asked [clientAuth], got [] (the CA dropped clientAuth)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := p.want()
			want.Strict = true
			_, err := leafcheck.Check(tc.issued(), want)
			if err == nil {
				t.Fatal("accepted")
			}
			if got := leafcheck.RuleOf(err); got != tc.rule {
				t.Errorf("rule %q, want %q (%v)", got, tc.rule, err)
			}
			if !ca.IsPermanent(err) {
				t.Errorf("not permanent: %v", err)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("message %q does not contain %q", err, tc.message)
			}
		})
	}
}

func TestChainError(t *testing.T) {
	p := newPKI(t)
	i := p.leaf(t, nil)
	i.Roots = catest.NewRoot(t, "another root").Pool()
	_, err := leafcheck.Check(i, p.want())
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("the crypto/x509 reason is not kept: %#v", err)
	}
}

// A leaf dated a little ahead (the CA's clock runs fast) is fine, and so is its chain as of then.
func TestClockSkewTolerated(t *testing.T) {
	p := newPKI(t)
	i := p.leaf(t, func(c *x509.Certificate) { c.NotBefore = time.Now().Add(ca.MaxClockSkew - time.Minute) })
	if _, err := leafcheck.Check(i, p.want()); err != nil {
		t.Fatal(err)
	}
}

// Without roots the connection cannot tell a good chain from a bad one, and does not pretend to.
func TestUnknownRootsSkipTheChain(t *testing.T) {
	p := newPKI(t)
	i := p.leaf(t, nil)
	i.Chain, i.Roots = nil, nil
	if mismatches, err := leafcheck.Check(i, p.want()); err != nil || len(mismatches) != 0 {
		t.Fatalf("mismatches %v, error %v", mismatches, err)
	}
}

func TestMismatches(t *testing.T) {
	p := newPKI(t)
	asked := p.req.CSR
	upn := "user-0123456789ABCDEF0123456789ABCDEF@corp.example.com"
	tests := []struct {
		name      string
		edit      func(*x509.Certificate)
		want      func(*leafcheck.Expectations)
		field     string
		dropped   []string
		added     []string
		absent    string // a field that must not differ
		noMatches bool
	}{
		{name: "usage dropped", edit: func(c *x509.Certificate) { c.ExtKeyUsage = nil },
			field: leafcheck.FieldExtKeyUsage, dropped: []string{"clientAuth"}},
		{name: "usage added", edit: func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		}, field: leafcheck.FieldExtKeyUsage, added: []string{"serverAuth"}},
		{name: "usage replaced by any", edit: func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny} },
			field: leafcheck.FieldExtKeyUsage, added: []string{"anyExtendedKeyUsage"}},
		{name: "unknown usage added by OID", edit: func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 311, 20, 2, 2}, {1, 2, 3, 4}}
		}, field: leafcheck.FieldExtKeyUsage, added: []string{"1.2.3.4", "smartcardLogon"}},
		{name: "usages left to the CA", edit: func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} },
			want: func(w *leafcheck.Expectations) { w.CAChoosesUsages = true }, noMatches: true},
		{name: "DNS name dropped", edit: withSANs(nil, asked.EmailAddresses, nil, nil),
			field: leafcheck.FieldDNS, dropped: asked.DNSNames},
		{name: "DNS name in other case", edit: withSANs([]string{strings.ToUpper(asked.DNSNames[0])}, asked.EmailAddresses, nil, nil),
			field: leafcheck.FieldUPN, dropped: []string{upn}, absent: leafcheck.FieldDNS}, // crypto/x509 cannot write the UPN
		{name: "e-mail added, domain case ignored", edit: withSANs(asked.DNSNames,
			[]string{strings.Replace(asked.EmailAddresses[0], "example.com", "EXAMPLE.com", 1), "other@example.com"}, nil, nil),
			field: leafcheck.FieldEmail, added: []string{"other@example.com"}, absent: leafcheck.FieldDNS},
		{name: "URI added", edit: withSANs(asked.DNSNames, asked.EmailAddresses, []*url.URL{{Scheme: "urn", Opaque: "x:1"}}, nil),
			field: leafcheck.FieldURI, added: []string{"urn:x:1"}},
		{name: "IP added", edit: withSANs(asked.DNSNames, asked.EmailAddresses, nil, []net.IP{net.IPv4(192, 0, 2, 1)}),
			field: leafcheck.FieldIP, added: []string{"192.0.2.1"}},
		{name: "nothing compared without the request", edit: withSANs(nil, nil, nil, nil),
			want: func(w *leafcheck.Expectations) { w.CSR = nil }, noMatches: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := p.want()
			if tc.want != nil {
				tc.want(&want)
			}
			mismatches, err := leafcheck.Check(p.leaf(t, tc.edit), want)
			if err != nil {
				t.Fatalf("not strict, yet refused: %v", err)
			}
			if tc.noMatches {
				if len(mismatches) != 0 {
					t.Fatalf("mismatches %v, want none", mismatches)
				}
				return
			}
			i := slices.IndexFunc(mismatches, func(m leafcheck.Mismatch) bool { return m.Field == tc.field })
			if i < 0 {
				t.Fatalf("no %s mismatch in %v", tc.field, mismatches)
			}
			if tc.absent != "" && slices.ContainsFunc(mismatches, func(m leafcheck.Mismatch) bool { return m.Field == tc.absent }) {
				t.Errorf("%s differs although only its spelling changed: %v", tc.absent, mismatches)
			}
			m := mismatches[i]
			if !slices.Equal(m.Dropped(), tc.dropped) || !slices.Equal(m.Added(), tc.added) {
				t.Errorf("%s: dropped %q added %q, want %q and %q", m, m.Dropped(), m.Added(), tc.dropped, tc.added)
			}
			if !strings.Contains(m.String(), "asked [") || !strings.Contains(m.String(), "got [") {
				t.Errorf("String() %q does not show both sets", m)
			}
		})
	}
}

// An OID in the request and crypto/x509's constant in the certificate are the same usage.
func TestUsageByOIDMatchesItsName(t *testing.T) {
	key := catest.DeviceKey(t, catest.RSA2048)
	der := catest.SignedCSR(t, key, &csr.Request{
		Subject:            pkix.Name{CommonName: "oid"},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 2}},
	})
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	root := catest.NewRoot(t, "root")
	leaf := root.Sign(t, &x509.Certificate{Subject: req.Subject, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, req.PublicKey)
	mismatches, err := leafcheck.Check(&ca.Issued{Leaf: leaf, Roots: root.Pool()},
		leafcheck.Expectations{SPKI: req.RawSubjectPublicKeyInfo, CSR: req, Strict: true})
	if err != nil || len(mismatches) != 0 {
		t.Fatalf("mismatches %v, error %v", mismatches, err)
	}
}

// An issuing CA restricted to other usages makes the leaf useless for its own: reported with the
// intermediate's name, refused under Strict.
func TestIntermediateUsageNesting(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		name   string
		usages []x509.ExtKeyUsage
		bad    bool
	}{
		{"restricted to serverAuth", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, true},
		{"allows clientAuth", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, false},
		{"allows any", []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, false},
		{"unrestricted", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := &pki{root: p.root, issuing: p.root.NewIntermediate(t, "issuing "+tc.name, tc.usages...), req: p.req}
			issued := q.leaf(t, nil)
			mismatches, err := leafcheck.Check(issued, q.want())
			if err != nil {
				t.Fatal(err)
			}
			if !tc.bad {
				if len(mismatches) != 0 {
					t.Fatalf("mismatches %v", mismatches)
				}
				return
			}
			if len(mismatches) != 1 || mismatches[0].Field != leafcheck.FieldIntermediateExtKeyUsage ||
				!slices.Equal(mismatches[0].Dropped(), []string{"clientAuth"}) || !strings.Contains(mismatches[0].Intermediate, "issuing "+tc.name) {
				t.Fatalf("mismatches %v", mismatches)
			}
			strict := q.want()
			strict.Strict = true
			if _, err := leafcheck.Check(issued, strict); leafcheck.RuleOf(err) != leafcheck.RuleContents ||
				!strings.Contains(err.Error(), "relying parties that check usage nesting refuse it") {
				t.Fatalf("strict: %v", err)
			}
		})
	}
}

// BenchmarkCheck measures the check of one certificate as the engine runs it: a leaf under an
// intermediate under a root, every name and usage compared.
func BenchmarkCheck(b *testing.B) {
	root := catest.NewRoot(b, "bench root")
	issuing := root.NewIntermediate(b, "bench issuing CA")
	req := catest.NewRequest(b, catest.DeviceKey(b, catest.P256), "BENCH000000000000000000000000000")
	tmpl := &x509.Certificate{Subject: req.CSR.Subject, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, e := range req.CSR.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
		}
	}
	issued := &ca.Issued{Leaf: issuing.Sign(b, tmpl, req.CSR.PublicKey), Chain: []*x509.Certificate{issuing.Cert}, Roots: root.Pool()}
	want := leafcheck.Expectations{SPKI: req.CSR.RawSubjectPublicKeyInfo, CSR: req.CSR, Strict: true}
	for b.Loop() {
		if _, err := leafcheck.Check(issued, want); err != nil {
			b.Fatal(err)
		}
	}
}
