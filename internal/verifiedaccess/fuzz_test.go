package verifiedaccess

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	va1 "google.golang.org/api/verifiedaccess/v1"
	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/config"
)

// FuzzVerifyResult decodes arbitrary challenge:verify answers (v1 and v2) as the generated
// clients do and runs them through what enrollment does with them: the SPKAC, a policy with
// every kind of rule, and the certificate templates. Nothing panics; every failed rule reads as
// one printable line; a device the policy lets through has what the policy demands; rendered
// values carry the reported ones unchanged, and only printable text.
func FuzzVerifyResult(f *testing.F) {
	testKeys(f)
	p, err := CompileProfile("fuzz", withCA(config.VerifiedAccessProfile{
		APIVersion: config.VAv2, Scopes: []string{config.VAScopeMachine}, EnrollmentDomain: "example.com",
		Subject:         config.Subject{CommonName: "{{.DevicePermanentID}}", Organization: []string{"{{.Signals.DeviceManufacturer}}"}},
		SubjectAltNames: config.SANs{DNS: []string{"{{.Signals.Hostname}}.devices.example.com"}, URI: []string{"urn:va:{{.VirtualDeviceID}}"}},
		Policy: config.VerifiedAccessPolicy{
			KeyTrustLevels: []string{"CHROME_OS_VERIFIED_MODE"},
			Signals: map[string][]string{
				"diskEncryption": {"DISK_ENCRYPTION_ENCRYPTED"}, "siteIsolationEnabled": {"true"},
				"antivirus.state": {"ENABLED"}, "deviceAffiliationIds": {"aff-corp"}, "systemDnsServers": {"10.0.0.0/8"},
				"macAddresses": {"02:00:5e:10:00:01"},
			},
			MinOSVersion: "15183.69", MinBrowserVersion: "120",
			CustomerIDs: []string{"C0abc123"}, EnrollmentDomains: []string{"example.com"},
		},
	}))
	if err != nil {
		f.Fatal(err)
	}
	minOS, err := config.ParseVersion("15183.69")
	if err != nil {
		f.Fatal(err)
	}
	spkac := base64.StdEncoding.EncodeToString(makeSPKAC(f, chromeOSSPKAC(ecKey, chromeOSChallenge(f, 32), false)))
	add := func(version uint8, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(version, b)
	}
	healthy := chromeOS()
	healthy.Signals.Hostname = "chromebook-1"
	healthy.Signals.DeviceManufacturer = "Google"
	add(2, &va2.VerifyChallengeResponseResult{
		DevicePermanentId: healthy.DevicePermanentID, CustomerId: healthy.CustomerID, KeyTrustLevel: healthy.KeyTrustLevel,
		VirtualDeviceId: "00000000-0000-0000-0000-000000000001", DeviceSignals: healthy.Signals, SignedPublicKeyAndChallenge: spkac,
	})
	listed := withSignals()
	add(2, &va2.VerifyChallengeResponseResult{
		DevicePermanentId: listed.DevicePermanentID, CustomerId: listed.CustomerID, KeyTrustLevel: listed.KeyTrustLevel,
		DeviceSignals:               listed.Signals,
		SignedPublicKeyAndChallenge: base64.RawURLEncoding.EncodeToString(makeSPKAC(f, chromeOSSPKAC(ecKey, chromeOSChallenge(f, 20), true))),
	})
	add(2, map[string]any{"devicePermanentId": "5CD\n123", "keyTrustLevel": "CHROME_OS_DEVELOPER_MODE",
		"deviceSignals": map[string]any{"osVersion": "15183.x", "hostname": "a b", "deviceManufacturer": "\u202eelgooG"}})
	add(1, &va1.VerifyChallengeResponseResult{DevicePermanentId: "5CD123", DeviceEnrollmentId: "e-1", SignedPublicKeyAndChallenge: spkac})
	f.Add(uint8(2), []byte(`{"deviceSignals":null,"signedPublicKeyAndChallenge":"MAA="}`))

	f.Fuzz(func(t *testing.T, version uint8, data []byte) {
		var r *Result
		if version%2 == 1 {
			var got va1.VerifyChallengeResponseResult
			if json.Unmarshal(data, &got) != nil {
				return
			}
			r = resultFromV1(&got)
		} else {
			var got va2.VerifyChallengeResponseResult
			if json.Unmarshal(data, &got) != nil {
				return
			}
			r = resultFromV2(&got)
		}

		if der, err := decodeBase64(r.SignedPublicKeyAndChallenge); err == nil {
			if s, err := ParseSPKAC(der); err == nil {
				pub, err := x509.ParsePKIXPublicKey(s.SPKI)
				if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); err != nil || !ok || !eq.Equal(s.PublicKey) {
					t.Fatalf("SPKAC key does not parse back from its SPKI: %v", err)
				}
			}
		}

		failed := p.Policy.Evaluate(r)
		for _, rule := range failed {
			if !utf8.ValidString(rule) || strings.ContainsFunc(rule, unicode.IsControl) || !strings.Contains(rule, ": got ") {
				t.Fatalf("failed rule not one readable line: %q", rule)
			}
		}
		if len(failed) == 0 {
			s := r.Signals
			if r.APIVersion != config.VAv2 || s == nil || r.KeyTrustLevel != "CHROME_OS_VERIFIED_MODE" || r.CustomerID != "C0abc123" ||
				s.DiskEncryption != "DISK_ENCRYPTION_ENCRYPTED" || !s.SiteIsolationEnabled || s.Antivirus == nil || s.Antivirus.State != "ENABLED" ||
				!strings.EqualFold(s.DeviceEnrollmentDomain, "example.com") || !slices.Contains(s.DeviceAffiliationIds, "aff-corp") ||
				len(s.SystemDnsServers) == 0 || len(s.MacAddresses) == 0 {
				t.Fatalf("policy let through %+v with signals %+v", r, s)
			}
			for _, d := range s.SystemDnsServers {
				if a, err := netip.ParseAddr(d); err != nil || !netip.MustParsePrefix("10.0.0.0/8").Contains(a.Unmap()) {
					t.Fatalf("policy let through DNS server %q", d)
				}
			}
			if v, err := config.ParseVersion(s.OsVersion); err != nil || config.CompareVersions(v, minOS) < 0 {
				t.Fatalf("policy let through OS version %q", s.OsVersion)
			}
		}

		req, err := p.Template.RenderData(templateData(p.Name, config.VAScopeMachine, p.EnrollmentDomain, r))
		if err != nil {
			// One problem per line (errors.Join), each printable: values are quoted.
			for _, line := range strings.Split(err.Error(), "\n") {
				if !utf8.ValidString(line) || strings.ContainsFunc(line, unicode.IsControl) {
					t.Fatalf("render error not printable: %q", line)
				}
			}
			return
		}
		if req.Subject.CommonName != r.DevicePermanentID {
			t.Fatalf("common name %q, device %q", req.Subject.CommonName, r.DevicePermanentID)
		}
		values := append([]string{req.Subject.CommonName}, req.Subject.Organization...)
		values = append(values, req.DNSNames...)
		for _, u := range req.URIs {
			values = append(values, u.String())
		}
		for _, v := range values {
			if !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) }) {
				t.Fatalf("rendered value %q", v)
			}
		}
	})
}
