package csr

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/process"
)

func TestCheckEmail(t *testing.T) {
	accepted := []string{
		"john.doe@example.com",
		"bob.o'neil+tag@example.com",
		"!#$%&'*+-/=?^_`{|}~@example.com",
		`"john doe"@example.com`,
		`"a@b"@example.com`,
		`"\"q\""@example.com`,
		`"back\\slash"@example.com`,
		`"john..doe"@example.com`,
		`".leading.dot"@example.com`,
		`"<angle>,comma;semi:colon[]"@example.com`,
		`"\a"@example.com`, // a needless quoted-pair is still a quoted-pair
		"user@localhost",
		strings.Repeat("l", 64) + "@example.com",
		`"` + strings.Repeat("q", 62) + `"@example.com`,
		"a@" + strings.Repeat("d", 63) + "." + strings.Repeat("e", 63) + "." + strings.Repeat("f", 63) + "." + strings.Repeat("g", 60), // 254 in all
	}
	for _, v := range accepted {
		if err := checkEmail(v); err != nil {
			t.Errorf("checkEmail(%q) = %v, want nil", v, err)
		}
	}
	refused := []struct{ v, want string }{
		{"", "empty e-mail address"},
		{"john", "no @"},
		{"@example.com", "empty local part"},
		{`""@example.com`, "empty local part"},
		{`"john@example.com`, "unbalanced quote"},
		{`john"@example.com`, `contains '"'`},
		{`"a"b@example.com`, "text after its closing quote"},
		{`"a\"@example.com`, "unbalanced quote"}, // the quote is escaped: the string never closes
		{`"a\`, "unbalanced quote"},
		{`"a"`, "no @"},
		{`a\b@example.com`, `contains '\\'`},
		{"john doe@example.com", "contains ' '"},
		{"a@b@example.com", "contains '@'"},
		{"john..doe@example.com", "empty dot-separated part"},
		{".john@example.com", "empty dot-separated part"},
		{"john.@example.com", "empty dot-separated part"},
		{"\"tab\there\"@example.com", "control character U+0009"},
		{"\"nul\x00\"@example.com", "control character U+0000"},
		{"del\x7f@example.com", "control character U+007F"},
		{"john@example.com\n", "control character U+000A"},
		{"jé@example.com", "must be ASCII"},
		{`"jé"@example.com`, "must be ASCII"},
		{"j@exämple.com", "punycode"},
		{"a@[192.0.2.1]", "address literals"},
		{"a@[IPv6:2001:db8::1]", "address literals"},
		{strings.Repeat("l", 65) + "@example.com", "local part longer than 64"},
		{`"` + strings.Repeat("q", 63) + `"@example.com`, "local part longer than 64"},
		{"a@" + strings.Repeat("d", 63) + "." + strings.Repeat("e", 63) + "." + strings.Repeat("f", 63) + "." + strings.Repeat("g", 61), "longer than 254"},
		{"a@", "e-mail domain: empty DNS name"},
		{`"a"@`, "e-mail domain: empty DNS name"},
		{"a@example..com", "e-mail domain"},
		{"a@-x.example.com", "hyphen"},
		{"a@*.example.com", "e-mail domain"},
		{"a@example.com.", "e-mail domain"},
	}
	for _, tc := range refused {
		err := checkEmail(tc.v)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkEmail(%q) = %v, want an error containing %q", tc.v, err, tc.want)
		}
	}
}

// quotedAddresses are the RFC 5321 Quoted-string forms the brief names.
var quotedAddresses = []string{`"john doe"@example.com`, `"a@b"@example.com`, `"\"q\""@example.com`}

// Literal addresses are checked when the profile compiles, not on the first device.
func TestCompileChecksLiteralSANs(t *testing.T) {
	if _, err := Compile(Spec{SubjectAltNames: SANs{Email: []string{`"ops team"@example.com`}}}); err != nil {
		t.Errorf("quoted literal refused: %v", err)
	}
	for _, tc := range []struct {
		sans SANs
		want string
	}{
		{SANs{Email: []string{`"ops team@example.com`}}, `subjectAltNames.email[0]: "\"ops team@example.com": e-mail local part has an unbalanced quote`},
		{SANs{Email: []string{"ops team@example.com"}}, "subjectAltNames.email[0]"},
		{SANs{DNS: []string{"a_b.example.com"}}, "subjectAltNames.dns[0]"},
		{SANs{URI: []string{"no-scheme"}}, "subjectAltNames.uri[0]"},
		{SANs{UPN: []string{"no at"}}, "subjectAltNames.upn[0]"},
	} {
		_, err := Compile(Spec{SubjectAltNames: tc.sans})
		wantErr(t, err, tc.want)
	}
}

var (
	fuzzCAOnce sync.Once
	fuzzCAKey  *ecdsa.PrivateKey
)

// FuzzCheckEmail: whatever checkEmail accepts goes into a CSR and a certificate unchanged, and Go's
// RFC 2821 mailbox parser (run by name-constraint verification) reads it with the same domain.
func FuzzCheckEmail(f *testing.F) {
	testKeys(f)
	for _, s := range append(slices.Clone(quotedAddresses), "john.doe@example.com", `"a\"@example.com`, `""@x`, "a@[1.2.3.4]",
		`"\\"@example.com`, `"a b"@exa-mple.com`, "a@b@c", "jé@example.com", "\"x\x00\"@e.com", `"@"@e`) {
		f.Add(s)
	}
	fuzzCAOnce.Do(func() { fuzzCAKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader) })
	spki := spkiOf(f, ecKey)
	f.Fuzz(func(t *testing.T, v string) {
		if checkEmail(v) != nil {
			return
		}
		if len(v) > maxEmail || !isASCII(v) || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			t.Fatalf("accepted %q", v)
		}
		req := &Request{EmailAddresses: []string{v}}
		cri, err := BuildCRI(req, spki)
		if err != nil {
			t.Fatalf("BuildCRI refused %q: %v", v, err)
		}
		der, err := Assemble(cri, process.AlgorithmECDSASHA256, deviceSign(t, ecKey, cri, sigStandard))
		if err != nil {
			t.Fatal(err)
		}
		csr, err := Verify(der, spki)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(csr.EmailAddresses, []string{v}) {
			t.Fatalf("CSR carries %q for %q", csr.EmailAddresses, v)
		}
		// A CA that permits exactly the domain checkEmail found; Go's verifier must parse the
		// address and agree on that domain.
		domain := v[strings.LastIndexByte(v, '@')+1:]
		caTmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz CA"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
			PermittedEmailAddresses: []string{domain},
		}
		caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, fuzzCAKey.Public(), fuzzCAKey)
		if err != nil {
			t.Fatalf("CA for domain %q: %v", domain, err)
		}
		caCert, err := x509.ParseCertificate(caDER)
		if err != nil {
			t.Fatal(err)
		}
		leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: caTmpl.NotBefore, NotAfter: caTmpl.NotAfter,
			EmailAddresses: []string{v}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, csr.PublicKey, fuzzCAKey)
		if err != nil {
			t.Fatalf("certificate for %q: %v", v, err)
		}
		leaf, err := x509.ParseCertificate(leafDER)
		if err != nil {
			t.Fatalf("ParseCertificate for %q: %v", v, err)
		}
		if !slices.Equal(leaf.EmailAddresses, []string{v}) {
			t.Fatalf("certificate carries %q for %q", leaf.EmailAddresses, v)
		}
		roots := x509.NewCertPool()
		roots.AddCert(caCert)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("Go's verifier disagrees on %q (domain %q): %v", v, domain, err)
		}
	})
}

// BenchmarkCheckEmail measures the per-address check that every rendered e-mail SAN passes.
func BenchmarkCheckEmail(b *testing.B) {
	for _, v := range []string{"john.doe@example.com", `"john doe"@example.com`} {
		b.Run(v, func(b *testing.B) {
			for b.Loop() {
				if err := checkEmail(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
