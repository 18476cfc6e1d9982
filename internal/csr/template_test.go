package csr

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/process"
)

// TestHostileSerials renders serial numbers full of DN and template syntax: each must end up in
// its own attribute, literally, or be refused with an error that names the field and quotes it.
func TestHostileSerials(t *testing.T) {
	testKeys(t)
	tmpl, err := Compile(Spec{Subject: Subject{CommonName: "{{.Device.SerialNumber}}"}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		serial  string
		wantErr string
	}{
		{serial: `a,b`},
		{serial: `CN=evil,O=Attacker`},
		{serial: `a+CN=b`},
		{serial: `"quoted"`},
		{serial: `back\slash\,`},
		{serial: `#hash; semi<angle>`},
		{serial: ` leading and trailing `},
		{serial: `{{.Customer}}`},
		{serial: `{{ printf "%s" "x" }}`},
		{serial: `Ünïcødé-序列号`},
		{serial: "a\nb", wantErr: "control character U+000A"},
		{serial: "a\rb", wantErr: "control character U+000D"},
		{serial: "nul\x00byte", wantErr: "control character U+0000"},
		{serial: "del\x7f", wantErr: "control character U+007F"},
		{serial: "c1\u0085", wantErr: "control character U+0085"},
		{serial: "bidi\u202egnp.exe", wantErr: "bidirectional control character U+202E"},
		{serial: "bad\xffutf8", wantErr: "not valid UTF-8"},
		{serial: strings.Repeat("x", 65), wantErr: "65 characters, at most 64"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.serial), func(t *testing.T) {
			req, err := tmpl.Render(deviceProcess(tc.serial))
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				wantErr(t, err, fmt.Sprintf("subject.commonName: %q", tc.serial))
				return
			}
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if req.Subject.CommonName != tc.serial {
				t.Fatalf("CommonName = %q, want %q", req.Subject.CommonName, tc.serial)
			}
			cri, err := BuildCRI(req, spkiOf(t, ecKey))
			if err != nil {
				t.Fatalf("BuildCRI: %v", err)
			}
			der, err := Assemble(cri, process.AlgorithmECDSASHA256, deviceSign(t, ecKey, cri, sigStandard))
			if err != nil {
				t.Fatal(err)
			}
			csr, err := Verify(der, spkiOf(t, ecKey))
			if err != nil {
				t.Fatal(err)
			}
			// Exactly one RDN with one attribute: nothing was split at commas or plus signs.
			var rdns pkix.RDNSequence
			if _, err := asn1.Unmarshal(csr.RawSubject, &rdns); err != nil {
				t.Fatal(err)
			}
			if len(rdns) != 1 || len(rdns[0]) != 1 || rdns[0][0].Value != tc.serial {
				t.Fatalf("subject RDNs = %v", rdns)
			}
		})
	}
}

func TestHostileSANs(t *testing.T) {
	p := deviceProcess("SERIAL")
	cases := []struct {
		name    string
		sans    SANs
		email   string
		serial  string
		dirID   string
		wantErr string
	}{
		{name: "ascii email", sans: SANs{Email: []string{"{{.User.Email}}"}}, email: "bob.o'neil+tag@example.com"},
		{name: "non-ASCII email", sans: SANs{Email: []string{"{{.User.Email}}"}}, email: "jé@example.com", wantErr: `subjectAltNames.email[0]: "jé@example.com": e-mail address must be ASCII`},
		{name: "non-ASCII email domain", sans: SANs{Email: []string{"{{.User.Email}}"}}, email: "j@exämple.com", wantErr: "must be ASCII"},
		{name: "comma in email", sans: SANs{Email: []string{"{{.User.Email}}"}}, email: "a,b@example.com", wantErr: `local part contains ','`},
		{name: "quoted email", sans: SANs{Email: []string{"{{.User.Email}}"}}, email: `"a b"@example.com`},
		{name: "unbalanced quote", sans: SANs{Email: []string{"{{.User.Email}}"}}, email: `"a b@example.com`, wantErr: "unbalanced quote"},
		{name: "two emails in one", sans: SANs{Email: []string{"{{.User.Email}}"}}, email: "a@example.com,b@example.com", wantErr: "e-mail"},
		{name: "newline email", sans: SANs{Email: []string{"{{.User.Email}}"}}, email: "a@example.com\n", wantErr: "e-mail"},
		{name: "empty email", sans: SANs{Email: []string{"{{.User.Email}}"}}, email: "", wantErr: `subjectAltNames.email[0]: "": empty e-mail address`},
		{name: "dns from serial", sans: SANs{DNS: []string{"{{.Device.SerialNumber}}.example.com"}}, serial: "5CD-123"},
		{name: "dns wildcard", sans: SANs{DNS: []string{"*.{{.Device.SerialNumber}}.example.com"}}, serial: "abc"},
		{name: "dns wildcard inside", sans: SANs{DNS: []string{"{{.Device.SerialNumber}}.example.com"}}, serial: "a.*", wantErr: `contains '*'`},
		{name: "email wildcard domain", sans: SANs{Email: []string{"{{.User.Email}}"}}, email: "a@*.example.com", wantErr: "e-mail domain"},
		{name: "dns with space", sans: SANs{DNS: []string{"{{.Device.SerialNumber}}.example.com"}}, serial: "a b", wantErr: `subjectAltNames.dns[0]: "a b.example.com"`},
		{name: "dns non-ASCII", sans: SANs{DNS: []string{"{{.Device.SerialNumber}}.example.com"}}, serial: "ü", wantErr: "punycode"},
		{name: "dns injection", sans: SANs{DNS: []string{"{{.Device.SerialNumber}}.example.com"}}, serial: "x.com,DNS:evil", wantErr: "contains ','"},
		{name: "dns empty label", sans: SANs{DNS: []string{"{{.Device.SerialNumber}}.example.com"}}, serial: "", wantErr: "empty label"},
		{name: "dns trailing hyphen", sans: SANs{DNS: []string{"{{.Device.SerialNumber}}"}}, serial: "abc-", wantErr: "hyphen"},
		{name: "upn non-ASCII", sans: SANs{UPN: []string{"{{.User.Email}}"}}, email: "jé@corp.example.com"},
		{name: "upn with space", sans: SANs{UPN: []string{"{{.User.Email}}"}}, email: "j e@corp", wantErr: "whitespace"},
		{name: "upn no at", sans: SANs{UPN: []string{"{{.User.Email}}"}}, email: "jdoe", wantErr: "user@domain"},
		{name: "uri", sans: SANs{URI: []string{"urn:device:{{.Device.DirectoryID}}"}}, dirID: "abc-123"},
		{name: "uri https", sans: SANs{URI: []string{"https://devices.example.com/{{.Device.DirectoryID}}"}}, dirID: "a%2Fb"},
		{name: "uri space", sans: SANs{URI: []string{"urn:device:{{.Device.DirectoryID}}"}}, dirID: "a b", wantErr: `subjectAltNames.uri[0]: "urn:device:a b"`},
		{name: "uri non-ASCII", sans: SANs{URI: []string{"urn:device:{{.Device.DirectoryID}}"}}, dirID: "é", wantErr: "printable ASCII"},
		{name: "uri relative", sans: SANs{URI: []string{"{{.Device.DirectoryID}}"}}, dirID: "just-a-path", wantErr: "no scheme"},
		{name: "uri not canonical", sans: SANs{URI: []string{"HTTPS://example.com/{{.Device.DirectoryID}}"}}, dirID: "x", wantErr: "canonical"},
		{name: "uri bad host", sans: SANs{URI: []string{"https://{{.Device.DirectoryID}}/"}}, dirID: "a..b", wantErr: "empty label"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := Compile(Spec{SubjectAltNames: tc.sans})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			proc := *p
			proc.User = &process.User{Email: tc.email}
			proc.Device = &process.Device{SerialNumber: tc.serial, DirectoryID: tc.dirID}
			req, err := tmpl.Render(&proc)
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			testKeys(t)
			cri, err := BuildCRI(req, spkiOf(t, ecKey))
			if err != nil {
				t.Fatalf("BuildCRI: %v", err)
			}
			der, err := Assemble(cri, process.AlgorithmECDSASHA256, deviceSign(t, ecKey, cri, sigStandard))
			if err != nil {
				t.Fatal(err)
			}
			csr, err := Verify(der, spkiOf(t, ecKey))
			if err != nil {
				t.Fatal(err)
			}
			if csr.Subject.CommonName != "" || len(csr.RawSubject) != 2 {
				t.Errorf("subject %x, want empty", csr.RawSubject)
			}
			// With an empty subject the SAN extension must be critical (RFC 5280 4.2.1.6).
			for _, e := range csr.Extensions {
				if e.Id.Equal(oidSubjectAltName()) && !e.Critical {
					t.Error("SAN not critical with an empty subject")
				}
			}
			got := slices.Concat(csr.DNSNames, csr.EmailAddresses)
			for _, u := range csr.URIs {
				got = append(got, u.String())
			}
			for _, e := range csr.Extensions {
				if e.Id.Equal(oidSubjectAltName()) {
					upns, err := ParseUPNs(e.Value)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, upns...)
				}
			}
			if len(got) != 1 {
				t.Fatalf("SANs = %q", got)
			}
			want := strings.NewReplacer("{{.User.Email}}", tc.email, "{{.Device.SerialNumber}}", tc.serial,
				"{{.Device.DirectoryID}}", tc.dirID).Replace(slices.Concat(tc.sans.DNS, tc.sans.Email, tc.sans.URI, tc.sans.UPN)[0])
			if got[0] != want {
				t.Errorf("SAN = %q, want %q", got[0], want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name    string
		profile Spec
		want    []string
	}{
		{"unknown field", Spec{Subject: Subject{CommonName: "{{.Device.Nope}}"}},
			[]string{"subject.commonName: template:", "Nope"}},
		{"unknown top-level field", Spec{Subject: Subject{CommonName: "{{.Serial}}"}},
			[]string{"subject.commonName: template:", "Serial"}},
		{"syntax error", Spec{Subject: Subject{CommonName: "{{.Device.SerialNumber"}},
			[]string{"subject.commonName: template:"}},
		{"unknown function", Spec{Subject: Subject{CommonName: "{{nope .Customer}}"}},
			[]string{`function "nope" not defined`}},
		{"all problems at once", Spec{
			Subject:         Subject{CommonName: "{{.X}}", OrganizationalUnit: []string{"ok", "{{.Y}}"}},
			SubjectAltNames: SANs{DNS: []string{""}, Email: []string{"{{.User.Nope}}"}},
			KeyUsage:        []string{"digitalSignature", "frobnicate", "keyCertSign"},
			ExtKeyUsage:     []string{"clientAuth", "nope", "1.3.6.1.4.1.311.20.2.2"},
		}, []string{
			"subject.commonName:", "subject.organizationalUnit[1]:", "subjectAltNames.dns[0]: empty template",
			"subjectAltNames.email[0]:", `keyUsage[1]: unknown key usage "frobnicate"`,
			`keyUsage[2]: "keyCertSign" is for CA certificates`, `extendedKeyUsage[1]: unknown extended key usage "nope"`,
		}},
		{"nobody", Spec{Subject: Subject{Organization: []string{"Example"}}},
			[]string{"would name nobody"}},
		{"template name with newline", Spec{Subject: Subject{CommonName: "x"}, TemplateName: "a\nb"},
			[]string{`templateName: "a\nb"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.profile)
			for _, w := range tc.want {
				wantErr(t, err, w)
			}
		})
	}
}

func TestCompileKeyUsages(t *testing.T) {
	tmpl, err := Compile(Spec{
		Subject:     Subject{CommonName: "x"},
		KeyUsage:    []string{"DigitalSignature", "nonRepudiation", "keyAgreement", "digitalSignature"},
		ExtKeyUsage: []string{"clientAuth", "ClientAuth", "emailProtection", "1.2.3.4", "smartcardLogon"},
	})
	if err != nil {
		t.Fatal(err)
	}
	req, err := tmpl.Render(testProcess())
	if err != nil {
		t.Fatal(err)
	}
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyAgreement; req.KeyUsage != want {
		t.Errorf("KeyUsage = %b, want %b", req.KeyUsage, want)
	}
	if want := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection}; !slices.Equal(req.ExtKeyUsage, want) {
		t.Errorf("ExtKeyUsage = %v, want %v", req.ExtKeyUsage, want)
	}
	if len(req.UnknownExtKeyUsage) != 2 || req.UnknownExtKeyUsage[0].String() != "1.2.3.4" || !req.UnknownExtKeyUsage[1].Equal(oidSmartcardLogon()) {
		t.Errorf("UnknownExtKeyUsage = %v", req.UnknownExtKeyUsage)
	}
	for _, bad := range []string{"1", "1.", ".1", "1..2", "3.1", "1.40", "01.2", "1.-2", "1.+2"} {
		if _, ok := parseOID(bad); ok {
			t.Errorf("parseOID(%q) accepted", bad)
		}
	}
}

func TestRenderErrors(t *testing.T) {
	cases := []struct {
		name    string
		profile Spec
		proc    *process.Process
		want    string
	}{
		{"fails at render only", Spec{Subject: Subject{CommonName: "{{index .Device.SerialNumber 5}}"}},
			deviceProcess("ABC"), "subject.commonName: template: subject.commonName:1:2: executing"},
		{"user template on a device process", Spec{Subject: Subject{CommonName: "{{.User.Email}}"}},
			deviceProcess("ABC"), "rendered empty and no subject alternative names"},
		{"empty SAN", Spec{Subject: Subject{CommonName: "{{.Device.SerialNumber}}"}, SubjectAltNames: SANs{Email: []string{"{{.User.Email}}"}}},
			deviceProcess("ABC"), `subjectAltNames.email[0]: "": empty e-mail address (.User.Email is empty)`},
		{"empty SAN names what was empty", Spec{Subject: Subject{CommonName: "x"},
			SubjectAltNames: SANs{URI: []string{"{{.User.DirectoryID}}{{.User.Email | lower}}{{.Device.SerialNumber | trimPrefix \"ABC\"}}"}}},
			deviceProcess("ABC"), `(.User.DirectoryID, .User.Email are empty)`},
		{"nobody named, and why", Spec{Subject: Subject{CommonName: "{{.User.Email}}"}},
			deviceProcess("ABC"), "the certificate would name nobody (.User.Email is empty)"},
		{"bad country", Spec{Subject: Subject{CommonName: "x", Country: "{{.Device.SerialNumber}}"}},
			deviceProcess("usa"), `subject.country: "usa": must be a two-letter`},
		{"long organization", Spec{Subject: Subject{CommonName: "x", Organization: []string{"{{.Device.SerialNumber}}"}}},
			deviceProcess(strings.Repeat("o", 70)), "subject.organization[0]:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := Compile(tc.profile)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			_, err = tmpl.Render(tc.proc)
			wantErr(t, err, tc.want)
		})
	}
}

func TestRenderHelpersAndEmptySubjectValues(t *testing.T) {
	tmpl, err := Compile(Spec{
		Subject: Subject{
			CommonName:         `{{.User.Email | emailLocal | upper}}`,
			Organization:       []string{`{{.User.Email | emailDomain}}`},
			OrganizationalUnit: []string{`{{.Device.SerialNumber | default "no-device"}}`, `{{.User.DirectoryID}}`},
			Locality:           `{{.ProcessID | trimPrefix "0123" | trimSuffix "CDEF" | lower}}`,
			Province:           `{{.ProfileID | replace "-" "_"}}`,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := testProcess()
	p.Device = nil
	p.User.DirectoryID = ""
	req, err := tmpl.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	checkSubject(t, req.Subject, pkix.Name{
		CommonName: "ALICE", Organization: []string{"example.com"},
		OrganizationalUnit: []string{"no-device"}, // the empty user id is left out
		Locality:           []string{"456789abcdef0123456789ab"}, Province: []string{"wifi_profile"},
	})
	if d := DataFor(nil); !reflect.DeepEqual(d, TemplateData{}) {
		t.Errorf("DataFor(nil) = %+v", d)
	}
	if d := DataFor(testProcess()); d.ProcessName != testProcess().Name || d.ProcessID != testProcess().ID ||
		d.Device.DirectoryID == "" || d.User.Email != "alice@example.com" {
		t.Errorf("DataFor = %+v", d)
	}
}

func TestFromSCEPProfile(t *testing.T) {
	testKeys(t)
	sp := &process.SCEPProfile{
		CommonName:          "Alice, Example",
		Organization:        "Example Corp",
		OrganizationalUnits: []string{"IT", "Devices"},
		Locality:            "Berlin",
		State:               "BE",
		Country:             "DE",
		TemplateName:        "ChromeOSUser",
		SANs: []process.SAN{
			{Type: process.SANEmail, Value: "alice@example.com"},
			{Type: process.SANDNS, Value: "host.example.com"},
			{Type: process.SANUPN, Value: "alice@corp.example.com"},
			{Type: process.SANURI, Value: "urn:uuid:6f1c2c3e-0000-4000-8000-000000000000"},
		},
		KeyUsages: []string{process.KeyUsageSigning, process.KeyUsageKeyEncipherment},
	}
	req, err := FromSCEPProfile(sp)
	if err != nil {
		t.Fatal(err)
	}
	checkSubject(t, req.Subject, pkix.Name{CommonName: "Alice, Example", Organization: []string{"Example Corp"},
		OrganizationalUnit: []string{"IT", "Devices"}, Locality: []string{"Berlin"}, Province: []string{"BE"}, Country: []string{"DE"}})
	if req.TemplateName != "ChromeOSUser" || req.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Errorf("TemplateName %q KeyUsage %b", req.TemplateName, req.KeyUsage)
	}
	cri, err := BuildCRI(req, spkiOf(t, rsaKey))
	if err != nil {
		t.Fatal(err)
	}
	der, err := Assemble(cri, process.AlgorithmRSAPKCS1SHA256, deviceSign(t, rsaKey, cri, sigStandard))
	if err != nil {
		t.Fatal(err)
	}
	csr, err := Verify(der, spkiOf(t, rsaKey))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(csr.EmailAddresses, []string{"alice@example.com"}) || !slices.Equal(csr.DNSNames, []string{"host.example.com"}) ||
		len(csr.URIs) != 1 || csr.URIs[0].String() != "urn:uuid:6f1c2c3e-0000-4000-8000-000000000000" {
		t.Errorf("SANs: %q %q %v", csr.EmailAddresses, csr.DNSNames, csr.URIs)
	}
	exts := requestedExtensions(t, csr)
	upns, err := ParseUPNs(exts[oidSubjectAltName().String()].Value)
	if err != nil || !slices.Equal(upns, []string{"alice@corp.example.com"}) {
		t.Errorf("UPNs = %q, %v", upns, err)
	}
	if got := decodeKeyUsage(t, exts[oidKeyUsage().String()].Value); got != req.KeyUsage {
		t.Errorf("keyUsage = %b", got)
	}
	if _, ok := exts[oidExtKeyUsage().String()]; ok {
		t.Error("extKeyUsage requested although the scepProfile names none")
	}

	bad := []struct {
		name string
		edit func(*process.SCEPProfile)
		want string
	}{
		{"unknown SAN type", func(p *process.SCEPProfile) {
			p.SANs = append(p.SANs, process.SAN{Type: "IP_ADDRESS", Value: "10.0.0.1"})
		},
			`scepProfile.subjectAltNames[4]: unsupported subject alternative name type "IP_ADDRESS"`},
		{"bad email", func(p *process.SCEPProfile) { p.SANs[0].Value = "jé@example.com" },
			`scepProfile.subjectAltNames[0]: "jé@example.com": e-mail address must be ASCII`},
		{"bad DNS", func(p *process.SCEPProfile) { p.SANs[1].Value = "a_b.example.com" }, `scepProfile.subjectAltNames[1]: "a_b.example.com"`},
		{"bad UPN", func(p *process.SCEPProfile) { p.SANs[2].Value = "alice" }, `scepProfile.subjectAltNames[2]: "alice"`},
		{"bad URI", func(p *process.SCEPProfile) { p.SANs[3].Value = "no scheme" }, `scepProfile.subjectAltNames[3]: "no scheme"`},
		{"unknown key usage", func(p *process.SCEPProfile) { p.KeyUsages = []string{"KEY_USAGE_CRL_SIGN"} },
			`scepProfile.keyUsages[0]: unsupported key usage "KEY_USAGE_CRL_SIGN"`},
		{"newline in CN", func(p *process.SCEPProfile) { p.CommonName = "a\nb" }, `scepProfile.subjectCommonName: "a\nb": contains control character`},
		{"bad OU", func(p *process.SCEPProfile) { p.OrganizationalUnits[1] = "x\x00" }, `scepProfile.organizationalUnits[1]: "x\x00"`},
		{"bad country", func(p *process.SCEPProfile) { p.Country = "Germany" }, `scepProfile.country: "Germany"`},
		{"nobody", func(p *process.SCEPProfile) { p.CommonName = ""; p.SANs = nil }, "would name nobody"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c := *sp
			c.SANs = slices.Clone(sp.SANs)
			c.OrganizationalUnits = slices.Clone(sp.OrganizationalUnits)
			tc.edit(&c)
			_, err := FromSCEPProfile(&c)
			wantErr(t, err, tc.want)
		})
	}
	if _, err := FromSCEPProfile(nil); err == nil {
		t.Error("nil scepProfile accepted")
	}
}

func TestBuildCRIChecksRequest(t *testing.T) {
	testKeys(t)
	spki := spkiOf(t, ecKey)
	cases := []struct {
		name string
		req  *Request
		want string
	}{
		{"nil", nil, "no request"},
		{"newline in hand-made CN", &Request{Subject: pkix.Name{CommonName: "a\nb"}}, `subject.commonName: "a\nb"`},
		{"bad DNS", &Request{DNSNames: []string{"a b"}}, `dnsNames[0]: "a b"`},
		{"nil URI", &Request{Subject: pkix.Name{CommonName: "x"}, URIs: []*url.URL{nil}}, "uris[0]: nil URI"},
		{"unsupported subject field", &Request{Subject: pkix.Name{CommonName: "x", SerialNumber: "1"}}, "only commonName"},
		{"CA key usage", &Request{Subject: pkix.Name{CommonName: "x"}, KeyUsage: x509.KeyUsageCertSign}, "for CA certificates"},
		{"unknown EKU", &Request{Subject: pkix.Name{CommonName: "x"}, ExtKeyUsage: []x509.ExtKeyUsage{999}}, "extended key usage 999"},
		{"extensionRequest from a connector", &Request{Subject: pkix.Name{CommonName: "x"},
			Attributes: []Attribute{{Type: oidExtensionRequest(), Values: []asn1.RawValue{{Tag: asn1.TagNull}}}}}, "built from the profile"},
		{"attribute twice", &Request{Subject: pkix.Name{CommonName: "x"},
			Attributes: []Attribute{mustPassword(t, "a"), mustPassword(t, "b")}}, "given twice"},
		{"attribute without values", &Request{Subject: pkix.Name{CommonName: "x"},
			Attributes: []Attribute{{Type: oidChallengePassword()}}}, "no values"},
		{"attribute with broken DER", &Request{Subject: pkix.Name{CommonName: "x"},
			Attributes: []Attribute{{Type: oidChallengePassword(), Values: []asn1.RawValue{{FullBytes: []byte{0x13, 0x05, 'a'}}}}}}, "not one DER element"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildCRI(tc.req, spki)
			wantErr(t, err, tc.want)
		})
	}
	// A connector may also give an attribute value as class/tag/bytes instead of full DER, and a
	// challenge password that PrintableString cannot hold becomes a UTF8String.
	pw, err := ChallengePassword("pässword*")
	if err != nil {
		t.Fatal(err)
	}
	if pw.Values[0].FullBytes[0] != asn1.TagUTF8String {
		t.Errorf("challengePassword tag %#x, want UTF8String", pw.Values[0].FullBytes[0])
	}
	other := Attribute{Type: asn1.ObjectIdentifier{1, 2, 3}, Values: []asn1.RawValue{{Tag: asn1.TagUTF8String, Bytes: []byte("v")}}}
	cri, err := BuildCRI(&Request{Subject: pkix.Name{CommonName: "x"}, Attributes: []Attribute{other, pw}}, spki)
	if err != nil {
		t.Fatal(err)
	}
	attrs := attributes(t, cri)
	if len(attrs) != 2 || len(attrs["1.2.3"]) != 1 || string(attrs["1.2.3"][0].Bytes) != "v" {
		t.Errorf("attributes = %v", attrs)
	}
	if _, err := ChallengePassword(""); err == nil {
		t.Error("empty challenge password accepted")
	}
}

func mustPassword(t *testing.T, pw string) Attribute {
	t.Helper()
	a, err := ChallengePassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestCompileSuggestsFields: a misspelt field or function is named with what it should have
// been, taken from the data templates really get, and the error carries its key.
func TestCompileSuggestsFields(t *testing.T) {
	type signals struct{ SerialNumber, Hostname string }
	type vaData struct {
		Identity string
		Signals  signals
		Labels   map[string]string
	}
	vaSample := vaData{Identity: "example.com", Signals: signals{SerialNumber: "5CD", Hostname: "h"}, Labels: map[string]string{"site": "x", "floor": "1"}}
	cases := []struct {
		name   string
		text   string
		sample any
		want   string
	}{
		{"nested field", "{{.Device.SerialNumbr}}", sampleData(),
			`subject.commonName: template: no field "SerialNumbr" in .Device; did you mean "SerialNumber"?`},
		{"top-level field", "{{.Devcie.SerialNumber}}", sampleData(),
			`subject.commonName: template: no field "Devcie" in .; did you mean "Device"?`},
		{"case only", "{{.user.Email}}", sampleData(),
			`subject.commonName: template: no field "user" in .; did you mean "User"?`},
		{"nothing close", "{{.User.Phone}}", sampleData(),
			`subject.commonName: template: no field "Phone" in .User (it has Email, DirectoryID, Directory)`},
		{"inside a pipeline", `{{.User.Emial | emailLocal | lower}}`, sampleData(),
			`subject.commonName: template: no field "Emial" in .User; did you mean "Email"?`},
		{"as a function argument", `{{default .Device.SerialNumber .Device.DirectoryId}}`, sampleData(),
			`subject.commonName: template: no field "DirectoryId" in .Device; did you mean "DirectoryID"?`},
		{"in a condition", `{{if .Devce.SerialNumber}}x{{end}}`, sampleData(),
			`subject.commonName: template: no field "Devce" in .; did you mean "Device"?`},
		{"through $", `{{$.Customr}}`, sampleData(),
			`subject.commonName: template: no field "Customr" in .; did you mean "Customer"?`},
		{"other data", "{{.Signals.SerialNumbr}}", vaSample,
			`subject.commonName: template: no field "SerialNumbr" in .Signals; did you mean "SerialNumber"?`},
		{"map key", "{{.Labels.flor}}", vaSample,
			`subject.commonName: template: no field "flor" in .Labels; did you mean "floor"?`},
		{"function", "{{.User.Email | lowr}}", sampleData(),
			`subject.commonName: template: function "lowr" not defined; did you mean "lower"?`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CompileData(Spec{Subject: Subject{CommonName: tc.text}}, tc.sample)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error\n %v\nwant\n %s", err, tc.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "subject.commonName" {
				t.Errorf("error %v does not carry its field", err)
			}
		})
	}
}

// TestNeededEmpty: a template needs the data it prints unconditionally; default, or, and, if and
// with are the template dealing with absence itself, and method calls are not followed.
func TestNeededEmpty(t *testing.T) {
	tmpl, err := Compile(Spec{
		Subject: Subject{CommonName: "{{.Device.SerialNumber}}", Organization: []string{"{{.User.Email | default \"none\"}}"},
			OrganizationalUnit: []string{"{{or .User.DirectoryID .Device.SerialNumber}}", "{{if .User.Email}}{{.User.Email}}{{end}}",
				"{{with .User.DirectoryID}}{{.}}{{end}}"}},
		SubjectAltNames: SANs{URI: []string{"urn:user:{{.User.DirectoryID}}", "urn:device:{{.Device.DirectoryID}}"},
			Email: []string{"{{.User.Email}}{{$.User.Email}}"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := tmpl.NeededEmpty(DataFor(deviceProcess("ABC")))
	want := []EmptyField{
		{Field: "subjectAltNames.email[0]", Empty: []string{".User.Email"}},
		{Field: "subjectAltNames.uri[0]", Empty: []string{".User.DirectoryID"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("NeededEmpty:\n got %+v\nwant %+v", got, want)
	}
}
