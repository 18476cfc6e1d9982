package csr

import (
	"bytes"
	"crypto"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/certprov/certprov-adapter/internal/process"
)

// FuzzAssembleVerify feeds garbage CRIs and signatures (what a broken or hostile device, or a
// corrupted journal, could hand back) through Assemble and Verify: they must return errors, never
// panic, and never verify anything that is not the device key's signature over that CRI.
func FuzzAssembleVerify(f *testing.F) {
	testKeys(f)
	ecSPKI, rsaSPKI := spkiOf(f, ecKey), spkiOf(f, rsaKey)
	req := &Request{Subject: pkix.Name{CommonName: "seed"}, UPNs: []string{"a@b"}}
	for _, k := range []struct {
		spki []byte
		alg  uint8
	}{{ecSPKI, 0}, {rsaSPKI, 1}} {
		cri, err := BuildCRI(req, k.spki)
		if err != nil {
			f.Fatal(err)
		}
		var key crypto.Signer = ecKey
		if k.alg == 1 {
			key = rsaKey
		}
		sig := deviceSign(f, key, cri, sigStandard)
		f.Add(cri, sig, k.alg)
		f.Add(cri[:len(cri)-1], sig, k.alg)
		f.Add(cri, sig[:len(sig)/2], k.alg)
		if k.alg == 0 {
			f.Add(cri, rawECDSA(f, sig), k.alg)
		}
	}
	f.Add([]byte{0x30, 0x00}, []byte{}, uint8(2))
	f.Fuzz(func(t *testing.T, cri, sig []byte, alg uint8) {
		algs := []string{process.AlgorithmECDSASHA256, process.AlgorithmRSAPKCS1SHA256, "SIGNATURE_ALGORITHM_UNSPECIFIED"}
		der, err := Assemble(cri, algs[int(alg)%len(algs)], sig)
		if err != nil {
			return
		}
		for _, spki := range [][]byte{ecSPKI, rsaSPKI} {
			csr, err := Verify(der, spki)
			if err != nil {
				continue
			}
			// Anything that verifies must carry exactly the CRI that was signed.
			if !bytes.Equal(csr.RawTBSCertificateRequest, cri) {
				t.Fatalf("verified CSR does not contain the input CRI")
			}
		}
	})
}

// FuzzRenderSerial renders arbitrary serial numbers into the subject and a DNS name: the result
// is either an error or a request whose values come back from a standard parser unchanged.
func FuzzRenderSerial(f *testing.F) {
	testKeys(f)
	spki := spkiOf(f, ecKey)
	tmpl, err := Compile(Spec{
		Subject:         Subject{CommonName: "{{.Device.SerialNumber}}", OrganizationalUnit: []string{"{{.Device.SerialNumber}}"}},
		SubjectAltNames: SANs{DNS: []string{"{{.Device.SerialNumber}}.example.com"}, UPN: []string{"{{.Device.SerialNumber}}@corp"}},
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"5CD1234", "a,b=c+d", "{{.Customer}}", "é", "a\x00b", "\"\\", "x\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, serial string) {
		req, err := tmpl.Render(deviceProcess(serial))
		if err != nil {
			return
		}
		cri, err := BuildCRI(req, spki)
		if err != nil {
			t.Fatalf("BuildCRI refused what Render accepted: %v", err)
		}
		der, err := Assemble(cri, process.AlgorithmECDSASHA256, deviceSign(t, ecKey, cri, sigStandard))
		if err != nil {
			t.Fatal(err)
		}
		csr, err := Verify(der, spki)
		if err != nil {
			t.Fatal(err)
		}
		var rdns pkix.RDNSequence
		if _, err := asn1.Unmarshal(csr.RawSubject, &rdns); err != nil {
			t.Fatal(err)
		}
		if csr.Subject.CommonName != serial || len(csr.Subject.OrganizationalUnit) != 1 || csr.Subject.OrganizationalUnit[0] != serial || len(rdns) != 2 {
			t.Fatalf("subject %+v (%d RDNs) for serial %q", csr.Subject, len(rdns), serial)
		}
		if len(csr.DNSNames) != 1 || csr.DNSNames[0] != serial+".example.com" {
			t.Fatalf("DNSNames %q for serial %q", csr.DNSNames, serial)
		}
		for _, e := range csr.Extensions {
			if e.Id.Equal(oidSubjectAltName()) {
				upns, err := ParseUPNs(e.Value)
				if err != nil || len(upns) != 1 || upns[0] != serial+"@corp" {
					t.Fatalf("UPNs %q, %v for serial %q", upns, err, serial)
				}
			}
		}
	})
}

// FuzzTemplate compiles arbitrary subject templates and renders them, and a fixed set of SAN
// templates, over arbitrary process values: no panic; whatever renders holds only printable text
// (no control or bidirectional-control character), carries the process values it names
// unchanged, and encodes into a request; every render error reads as printable lines.
func FuzzTemplate(f *testing.F) {
	testKeys(f)
	spki := spkiOf(f, ecKey)
	for _, tmpl := range []string{"{{.Device.SerialNumber}}", "{{.User.Email | emailLocal | lower}}",
		`{{default "none" .Device.SerialNumber}}-{{.Customer}}`, `{{replace "@" "." .User.Email | upper}}`,
		`{{trimSuffix "@example.com" .User.Email}}`, "CN=x,O=y+{{.ProcessID}}", "{{.ProcessName}}", "{{.Nope}}", "{{",
		`{{printf "%c" 10}}`, "{{.User.DirectoryID | trimSpace}}"} {
		f.Add(tmpl, "5CD1234", "user@example.com", "d-1")
	}
	f.Add("{{.Device.SerialNumber}}", "a\nb", "us\u202eer@example.com", " d-1 ")
	f.Add("x", "SN", "user@exa mple.com", "d/1?x#y")
	f.Fuzz(func(t *testing.T, tmpl, serial, email, dirID string) {
		compiled, err := Compile(Spec{
			Subject: Subject{CommonName: tmpl, OrganizationalUnit: []string{tmpl}},
			SubjectAltNames: SANs{
				DNS:   []string{"{{.Device.SerialNumber | lower}}.devices.example.com"},
				Email: []string{"{{.User.Email}}"},
				URI:   []string{"urn:device:{{.Device.DirectoryID}}"},
				UPN:   []string{"{{.User.Email}}"},
			},
		})
		if err != nil {
			return
		}
		p := testProcess()
		p.Device.SerialNumber, p.Device.DirectoryID, p.User.Email = serial, dirID, email
		req, err := compiled.Render(p)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !printable(line) {
					t.Fatalf("render error not printable: %q", line)
				}
			}
			return
		}
		values := append([]string{req.Subject.CommonName}, req.Subject.OrganizationalUnit...)
		values = append(append(append(values, req.DNSNames...), req.EmailAddresses...), req.UPNs...)
		for _, u := range req.URIs {
			values = append(values, u.String())
		}
		for _, v := range values {
			if !printable(v) {
				t.Fatalf("rendered value %q", v)
			}
		}
		if len(req.DNSNames) != 1 || req.DNSNames[0] != strings.ToLower(serial)+".devices.example.com" ||
			len(req.EmailAddresses) != 1 || req.EmailAddresses[0] != email || len(req.UPNs) != 1 || req.UPNs[0] != email {
			t.Fatalf("SANs %q %q %q for serial %q, e-mail %q", req.DNSNames, req.EmailAddresses, req.UPNs, serial, email)
		}
		if _, err := BuildCRI(req, spki); err != nil {
			t.Fatalf("BuildCRI refused what Render accepted: %v", err)
		}
	})
}

// printable reports whether s is valid UTF-8 without control or bidirectional-control characters.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
	})
}
