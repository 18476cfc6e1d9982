package csr

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/process"
)

func fullProfile() Spec {
	return Spec{
		Subject: Subject{
			CommonName:         "{{.User.Email}}",
			Organization:       []string{"Example Corp"},
			OrganizationalUnit: []string{"Devices", "{{.Customer}}"},
			Locality:           "Zürich",
			Province:           "ZH",
			Country:            "CH",
		},
		SubjectAltNames: SANs{
			DNS:   []string{"{{.Device.SerialNumber | lower}}.devices.example.com"},
			Email: []string{"{{.User.Email}}"},
			URI:   []string{"urn:chromeos:device:{{.Device.DirectoryID}}"},
			UPN:   []string{"{{.User.Email | emailLocal}}@corp.example.com"},
		},
		KeyUsage:     []string{"digitalSignature", "keyEncipherment"},
		ExtKeyUsage:  []string{"clientAuth", "smartcardLogon"},
		TemplateName: "ChromeOSUser",
	}
}

// TestDeviceRoundTrip simulates the whole exchange: the adapter builds the CRI, the device signs
// it with its own key, the adapter assembles and verifies the CSR, and a standard parser sees
// exactly what the profile asked for.
func TestDeviceRoundTrip(t *testing.T) {
	testKeys(t)
	tmpl, err := Compile(fullProfile())
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	cases := []struct {
		name   string
		key    crypto.Signer
		format sigFormat
		alg    string
	}{
		{"RSA-2048", rsaKey, sigStandard, process.AlgorithmRSAPKCS1SHA256},
		{"P-256 DER", ecKey, sigStandard, process.AlgorithmECDSASHA256},
		{"P-256 raw r||s", ecKey, sigRaw, process.AlgorithmECDSASHA256},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spki := spkiOf(t, tc.key)
			req, err := tmpl.Render(testProcess())
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			pw, err := ChallengePassword("s3cret-challenge")
			if err != nil {
				t.Fatalf("ChallengePassword: %v", err)
			}
			req.Attributes = []Attribute{pw}

			alg, err := AlgorithmFor(spki)
			if err != nil || alg != tc.alg {
				t.Fatalf("AlgorithmFor = %q, %v; want %q", alg, err, tc.alg)
			}
			cri, err := BuildCRI(req, spki)
			if err != nil {
				t.Fatalf("BuildCRI: %v", err)
			}
			sig := deviceSign(t, tc.key, cri, tc.format)
			der, err := Assemble(cri, alg, sig)
			if err != nil {
				t.Fatalf("Assemble: %v", err)
			}
			if _, err := Verify(der, spki); err != nil {
				t.Fatalf("Verify: %v", err)
			}

			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatalf("ParseCertificateRequest: %v", err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Fatalf("CheckSignature: %v", err)
			}
			if !bytes.Equal(csr.RawTBSCertificateRequest, cri) {
				t.Error("the CSR does not contain the CRI the device signed")
			}
			if !bytes.Equal(csr.RawSubjectPublicKeyInfo, spki) {
				t.Error("SPKI in the CSR differs from the device SPKI")
			}
			checkSubject(t, csr.Subject, pkix.Name{
				CommonName: "alice@example.com", Organization: []string{"Example Corp"},
				OrganizationalUnit: []string{"Devices", "C01abcdef"}, Locality: []string{"Zürich"},
				Province: []string{"ZH"}, Country: []string{"CH"},
			})
			if want := []string{"5cd1234xyz.devices.example.com"}; !slices.Equal(csr.DNSNames, want) {
				t.Errorf("DNSNames = %q, want %q", csr.DNSNames, want)
			}
			if want := []string{"alice@example.com"}; !slices.Equal(csr.EmailAddresses, want) {
				t.Errorf("EmailAddresses = %q, want %q", csr.EmailAddresses, want)
			}
			if len(csr.URIs) != 1 || csr.URIs[0].String() != "urn:chromeos:device:d7a1c0de-0000-4000-8000-000000000001" {
				t.Errorf("URIs = %v", csr.URIs)
			}
			exts := requestedExtensions(t, csr)
			san, ok := exts[oidSubjectAltName().String()]
			if !ok {
				t.Fatal("no subjectAltName extension requested")
			}
			if san.Critical {
				t.Error("SAN extension critical although the subject is not empty")
			}
			upns, err := ParseUPNs(san.Value)
			if err != nil {
				t.Fatalf("ParseUPNs: %v", err)
			}
			if want := []string{"alice@corp.example.com"}; !slices.Equal(upns, want) {
				t.Errorf("UPNs = %q, want %q", upns, want)
			}
			ku, ok := exts[oidKeyUsage().String()]
			if !ok || !ku.Critical {
				t.Fatalf("keyUsage extension missing or not critical: %+v", ku)
			}
			if got := decodeKeyUsage(t, ku.Value); got != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
				t.Errorf("keyUsage = %b", got)
			}
			eku, ok := exts[oidExtKeyUsage().String()]
			if !ok {
				t.Fatal("extKeyUsage extension missing")
			}
			var oids []asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(eku.Value, &oids); err != nil {
				t.Fatalf("parse extKeyUsage: %v", err)
			}
			if len(oids) != 2 || !oids[0].Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}) || !oids[1].Equal(oidSmartcardLogon()) {
				t.Errorf("extKeyUsage = %v", oids)
			}
			vals := attributes(t, cri)[oidChallengePassword().String()]
			if len(vals) != 1 {
				t.Fatalf("challengePassword attribute: %d values", len(vals))
			}
			var pwValue string
			if _, err := asn1.Unmarshal(vals[0].FullBytes, &pwValue); err != nil || pwValue != "s3cret-challenge" {
				t.Errorf("challengePassword = %q, %v", pwValue, err)
			}
			if vals[0].Tag != asn1.TagPrintableString {
				t.Errorf("challengePassword tag %d, want PrintableString", vals[0].Tag)
			}
		})
	}
}

func checkSubject(t *testing.T, got, want pkix.Name) {
	t.Helper()
	if got.CommonName != want.CommonName ||
		!slices.Equal(got.Organization, want.Organization) ||
		!slices.Equal(got.OrganizationalUnit, want.OrganizationalUnit) ||
		!slices.Equal(got.Locality, want.Locality) ||
		!slices.Equal(got.Province, want.Province) ||
		!slices.Equal(got.Country, want.Country) {
		t.Errorf("subject = %+v\nwant      %+v", got, want)
	}
}

func requestedExtensions(t *testing.T, csr *x509.CertificateRequest) map[string]pkix.Extension {
	t.Helper()
	out := map[string]pkix.Extension{}
	for _, e := range csr.Extensions {
		out[e.Id.String()] = e
	}
	return out
}

func decodeKeyUsage(t *testing.T, value []byte) x509.KeyUsage {
	t.Helper()
	var bits asn1.BitString
	if _, err := asn1.Unmarshal(value, &bits); err != nil {
		t.Fatalf("parse keyUsage: %v", err)
	}
	var ku x509.KeyUsage
	for i := 0; i < 9; i++ {
		if bits.At(i) != 0 {
			ku |= 1 << i
		}
	}
	return ku
}

// TestMatchesCryptoX509 checks the hand-made encoding against crypto/x509's for what both can
// express: same subject, SANs and extensions must give the same CertificationRequestInfo bytes.
func TestMatchesCryptoX509(t *testing.T) {
	testKeys(t)
	for _, key := range []crypto.Signer{rsaKey, ecKey} {
		p := fullProfile()
		p.SubjectAltNames.UPN = nil
		tmpl, err := Compile(p)
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}
		req, err := tmpl.Render(testProcess())
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		req.ExtKeyUsage = append(req.ExtKeyUsage, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageAny)
		cri, err := BuildCRI(req, spkiOf(t, key))
		if err != nil {
			t.Fatalf("BuildCRI: %v", err)
		}
		exts, err := extensions(req)
		if err != nil {
			t.Fatalf("extensions: %v", err)
		}
		goDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: req.Subject, DNSNames: req.DNSNames, EmailAddresses: req.EmailAddresses, URIs: req.URIs,
			ExtraExtensions: exts[1:], // keyUsage and extKeyUsage: x509 has no CSR fields for them
		}, key)
		if err != nil {
			t.Fatalf("CreateCertificateRequest: %v", err)
		}
		goCSR, err := x509.ParseCertificateRequest(goDER)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(goCSR.RawTBSCertificateRequest, cri) {
			t.Errorf("%T: CRI differs from crypto/x509's\n got %x\nwant %x", key, cri, goCSR.RawTBSCertificateRequest)
		}
	}
}

// TestKeyUsageEncoding compares every key usage combination with crypto/x509's certificate encoding.
func TestKeyUsageEncoding(t *testing.T) {
	testKeys(t)
	var usages []x509.ExtKeyUsage
	for u := x509.ExtKeyUsageAny; ; u++ {
		if _, ok := extKeyUsageOID(u); !ok {
			break
		}
		usages = append(usages, u)
	}
	for ku := x509.KeyUsage(1); ku < 1<<9; ku++ {
		tmpl := &x509.Certificate{SerialNumber: bigOne(), KeyUsage: ku}
		if ku == 1 {
			tmpl.ExtKeyUsage = usages
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ecKey.Public(), ecKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range cert.Extensions {
			switch {
			case e.Id.Equal(oidKeyUsage()):
				mine, err := marshalKeyUsage(ku)
				if err != nil || !bytes.Equal(mine, e.Value) {
					t.Fatalf("keyUsage %09b: got %x, %v; crypto/x509 %x", ku, mine, err, e.Value)
				}
			case e.Id.Equal(oidExtKeyUsage()):
				mine, err := extensions(&Request{ExtKeyUsage: usages})
				if err != nil || !bytes.Equal(mine[0].Value, e.Value) {
					t.Fatalf("extKeyUsage: got %x, %v; crypto/x509 %x", mine[0].Value, err, e.Value)
				}
			}
		}
	}
	if _, err := marshalKeyUsage(1 << 9); err == nil {
		t.Error("unknown key usage bit accepted")
	}
}

func TestVerifyRejects(t *testing.T) {
	testKeys(t)
	req := &Request{Subject: pkix.Name{CommonName: "device"}, DNSNames: []string{"device.example.com"}}
	for _, key := range []crypto.Signer{rsaKey, ecKey} {
		t.Run(algorithmOf(key), func(t *testing.T) {
			spki := spkiOf(t, key)
			cri, err := BuildCRI(req, spki)
			if err != nil {
				t.Fatalf("BuildCRI: %v", err)
			}
			alg := algorithmOf(key)
			good := deviceSign(t, key, cri, sigStandard)
			other := rsaKey2
			var otherSigner crypto.Signer = other
			if _, ok := key.(*ecdsa.PrivateKey); ok {
				otherSigner = ecKey2
			}

			t.Run("signature by another key", func(t *testing.T) {
				der, err := Assemble(cri, alg, deviceSign(t, otherSigner, cri, sigStandard))
				if err != nil {
					t.Fatalf("Assemble: %v", err)
				}
				_, err = Verify(der, spki)
				wantErr(t, err, "signature check")
			})
			t.Run("different SPKI", func(t *testing.T) {
				der, err := Assemble(cri, alg, good)
				if err != nil {
					t.Fatalf("Assemble: %v", err)
				}
				_, err = Verify(der, spkiOf(t, otherSigner))
				wantErr(t, err, "SubjectPublicKeyInfo differs")
			})
			t.Run("truncated signature refused by Assemble", func(t *testing.T) {
				_, err := Assemble(cri, alg, good[:len(good)-1])
				if err == nil {
					t.Fatal("Assemble accepted a truncated signature")
				}
			})
			t.Run("truncated signature refused by Verify", func(t *testing.T) {
				der := rawCSR(t, cri, alg, good[:len(good)-1])
				_, err := Verify(der, spki)
				if err == nil {
					t.Fatal("Verify accepted a truncated signature")
				}
			})
			t.Run("tampered request", func(t *testing.T) {
				tampered := bytes.Replace(cri, []byte("device.example.com"), []byte("evil00.example.com"), 1)
				der, err := Assemble(tampered, alg, good)
				if err != nil {
					t.Fatalf("Assemble: %v", err)
				}
				_, err = Verify(der, spki)
				wantErr(t, err, "signature check")
			})
			t.Run("wrong algorithm for the key", func(t *testing.T) {
				wrong := process.AlgorithmECDSASHA256
				if alg == wrong {
					wrong = process.AlgorithmRSAPKCS1SHA256
				}
				_, err := Assemble(cri, wrong, good)
				wantErr(t, err, "does not match the device key")
			})
			t.Run("garbage", func(t *testing.T) {
				_, err := Verify([]byte("not a CSR"), spki)
				wantErr(t, err, "parse CSR")
			})
		})
	}
}

// rawCSR wraps a CRI and a signature without any of Assemble's checks.
func rawCSR(t *testing.T, cri []byte, alg string, sig []byte) []byte {
	t.Helper()
	ai := pkix.AlgorithmIdentifier{Algorithm: oidSHA256WithRSA(), Parameters: asn1.NullRawValue}
	if alg == process.AlgorithmECDSASHA256 {
		ai = pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256()}
	}
	der, err := asn1.Marshal(certificationRequest{Info: asn1.RawValue{FullBytes: cri}, Algorithm: ai,
		Signature: asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func wantErr(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", substr)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not contain %q", err, substr)
	}
}

func TestECDSASignatureForms(t *testing.T) {
	testKeys(t)
	spki := spkiOf(t, ecKey)
	cri, err := BuildCRI(&Request{Subject: pkix.Name{CommonName: "x"}}, spki)
	if err != nil {
		t.Fatal(err)
	}
	der := deviceSign(t, ecKey, cri, sigStandard)
	raw := rawECDSA(t, der)
	a, err := Assemble(cri, process.AlgorithmECDSASHA256, raw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Assemble(cri, process.AlgorithmECDSASHA256, der)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("raw r||s and DER give different CSRs")
	}
	for name, sig := range map[string][]byte{
		"63 bytes":       raw[:63],
		"zero r":         append(make([]byte, 32), raw[32:]...),
		"r above order":  append(bytes.Repeat([]byte{0xff}, 32), raw[32:]...),
		"trailing bytes": append(slices.Clone(der), 0),
		"empty":          nil,
	} {
		if _, err := Assemble(cri, process.AlgorithmECDSASHA256, sig); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAlgorithmFor(t *testing.T) {
	testKeys(t)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edSPKI, _ := x509.MarshalPKIXPublicKey(edPub)
	cases := []struct {
		name    string
		spki    []byte
		want    string
		wantErr string
	}{
		{"RSA-2048", spkiOf(t, rsaKey), process.AlgorithmRSAPKCS1SHA256, ""},
		{"P-256", spkiOf(t, ecKey), process.AlgorithmECDSASHA256, ""},
		{"P-384", spkiOf(t, p384), "", "only P-256"},
		{"RSA-1024", spkiOf(t, rsa1024), "", "at least 2048"},
		{"Ed25519", edSPKI, "", "unsupported device key type"},
		{"garbage", []byte{0x30, 0x03, 0x02, 0x01, 0x00}, "", "parse subject public key info"},
		{"trailing data", append(spkiOf(t, ecKey), 0), "", "parse subject public key info"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AlgorithmFor(tc.spki)
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("AlgorithmFor = %q, %v; want %q", got, err, tc.want)
			}
			if _, err := BuildCRI(&Request{Subject: pkix.Name{CommonName: "x"}}, tc.spki); err != nil {
				t.Fatalf("BuildCRI: %v", err)
			}
		})
	}
	if _, err := BuildCRI(&Request{Subject: pkix.Name{CommonName: "x"}}, edSPKI); err == nil {
		t.Error("BuildCRI accepted an Ed25519 device key")
	}
}

func bigOne() *big.Int { return big.NewInt(1) }
