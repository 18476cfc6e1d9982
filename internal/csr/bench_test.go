package csr

import (
	"crypto"
	"testing"
)

// The hot path of every process, per key type: render the profile's templates over the
// process, build the CertificationRequestInfo the device signs, then assemble and verify the CSR
// from the device's signature. Run with -benchmem; results compare with benchstat
// (docs/performance.md).

// benchProfile is a profile as an operator writes one: a subject from the device and the
// organisation, a URI and an e-mail SAN, key usages and an extended key usage.
var benchProfile = Spec{
	Subject: Subject{
		CommonName:         "{{.Device.SerialNumber}}",
		Organization:       []string{"Example Corp"},
		OrganizationalUnit: []string{"ChromeOS devices"},
	},
	SubjectAltNames: SANs{
		URI:   []string{"urn:chromeos:device:{{.Device.DirectoryID}}"},
		Email: []string{"{{.User.Email}}"},
	},
	KeyUsage:    []string{"digitalSignature", "keyEncipherment"},
	ExtKeyUsage: []string{"clientAuth"},
}

func benchKeys(b *testing.B) []struct {
	name string
	key  crypto.Signer
} {
	testKeys(b)
	return []struct {
		name string
		key  crypto.Signer
	}{{"RSA-2048", rsaKey}, {"P-256", ecKey}}
}

// BenchmarkRender: the profile's templates over a process (the subject and SANs of one request).
func BenchmarkRender(b *testing.B) {
	tmpl, err := Compile(benchProfile)
	if err != nil {
		b.Fatal(err)
	}
	p := testProcess()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tmpl.Render(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildCRI: the DER CertificationRequestInfo sent to the device as signData.
func BenchmarkBuildCRI(b *testing.B) {
	tmpl, err := Compile(benchProfile)
	if err != nil {
		b.Fatal(err)
	}
	for _, k := range benchKeys(b) {
		b.Run(k.name, func(b *testing.B) {
			p := testProcess()
			p.SPKI = spkiOf(b, k.key)
			req, err := tmpl.Render(p)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := BuildCRI(req, p.SPKI); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAssembleVerify: the signed CRI and the device's signature made into a CSR, which is
// parsed and its signature checked against the device key before any CA sees it.
func BenchmarkAssembleVerify(b *testing.B) {
	tmpl, err := Compile(benchProfile)
	if err != nil {
		b.Fatal(err)
	}
	for _, k := range benchKeys(b) {
		b.Run(k.name, func(b *testing.B) {
			p := testProcess()
			p.SPKI = spkiOf(b, k.key)
			req, err := tmpl.Render(p)
			if err != nil {
				b.Fatal(err)
			}
			cri, err := BuildCRI(req, p.SPKI)
			if err != nil {
				b.Fatal(err)
			}
			sig := deviceSign(b, k.key, cri, sigStandard)
			alg := algorithmOf(k.key)
			b.ReportAllocs()
			for b.Loop() {
				der, err := Assemble(cri, alg, sig)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Verify(der, p.SPKI); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
