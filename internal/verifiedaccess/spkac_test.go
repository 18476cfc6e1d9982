package verifiedaccess

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// TestParseSPKACAsChromeOSBuildsIt: what CryptoUtilityImpl::CreateSPKACInternal produces — a
// random hex challenge of 20 (TPM 1.2) or 32 (TPM 2.0) bytes, NULL parameters for both
// algorithms, and for ECDSA a DER or a raw r||s signature — is accepted, and the challenge read
// back as the device wrote it.
func TestParseSPKACAsChromeOSBuildsIt(t *testing.T) {
	testKeys(t)
	for _, tpm := range []struct {
		name  string
		bytes int
	}{{"TPM 1.2", 20}, {"TPM 2.0", 32}} {
		for _, k := range []struct {
			name    string
			key     crypto.Signer
			raw     bool
			wantAlg string
		}{
			{"RSA", rsaKey, false, "SHA256-RSA"},
			{"ECDSA, DER signature", ecKey, false, "ECDSA-SHA256"},
			{"ECDSA, raw r||s signature", ecKey, true, "ECDSA-SHA256"},
		} {
			t.Run(tpm.name+", "+k.name, func(t *testing.T) {
				challenge := chromeOSChallenge(t, tpm.bytes)
				if len(challenge) != 2*tpm.bytes {
					t.Fatalf("challenge %q", challenge)
				}
				got, err := ParseSPKAC(makeSPKAC(t, chromeOSSPKAC(k.key, challenge, k.raw)))
				if err != nil {
					t.Fatalf("a ChromeOS SPKAC is refused: %v", err)
				}
				want, _ := x509.MarshalPKIXPublicKey(k.key.Public())
				if got.Algorithm != k.wantAlg || got.Challenge != challenge || !bytes.Equal(got.SPKI, want) {
					t.Errorf("algorithm %s challenge %q SPKI equal %v", got.Algorithm, got.Challenge, bytes.Equal(got.SPKI, want))
				}
			})
		}
	}
}

func TestParseSPKAC(t *testing.T) {
	testKeys(t)
	tests := []struct {
		name    string
		spec    spkacSpec
		raw     []byte // instead of spec
		wantAlg string
		wantErr string
	}{
		{name: "RSA", spec: spkacSpec{key: rsaKey, challenge: "Y2hhbGxlbmdl"}, wantAlg: "SHA256-RSA"},
		{name: "RSA without NULL parameters", spec: spkacSpec{key: rsaKey, challenge: "c", alg: wire.OIDSHA256WithRSA}, wantAlg: "SHA256-RSA"},
		{name: "ECDSA P-256", spec: spkacSpec{key: ecKey, challenge: "Y2hhbGxlbmdl"}, wantAlg: "ECDSA-SHA256"},
		{name: "empty challenge", spec: spkacSpec{key: ecKey}, wantAlg: "ECDSA-SHA256"},
		{name: "tampered RSA", spec: spkacSpec{key: rsaKey, challenge: "c", tamper: true}, wantErr: "does not verify"},
		{name: "tampered ECDSA", spec: spkacSpec{key: ecKey, challenge: "c", tamper: true}, wantErr: "does not verify"},
		{name: "MD5 with RSA refused", spec: spkacSpec{key: rsaKey, challenge: "c", alg: oidMD5WithRSA, params: asn1.NullRawValue, hash: crypto.MD5}, wantErr: "MD5"},
		{name: "SHA-1 with RSA refused", spec: spkacSpec{key: rsaKey, challenge: "c", alg: oidSHA1WithRSA, params: asn1.NullRawValue, hash: crypto.SHA1}, wantErr: "SHA-1"},
		{name: "ECDSA algorithm on RSA key", spec: spkacSpec{key: rsaKey, challenge: "c", alg: wire.OIDECDSAWithSHA256}, wantErr: "does not fit an RSA key"},
		{name: "RSA algorithm on ECDSA key", spec: spkacSpec{key: ecKey, challenge: "c", alg: wire.OIDSHA256WithRSA, params: asn1.NullRawValue}, wantErr: "does not fit an ECDSA key"},
		{name: "ECDSA without parameters (RFC 5758)", spec: spkacSpec{key: ecKey, challenge: "c", alg: wire.OIDECDSAWithSHA256}, wantAlg: "ECDSA-SHA256"},
		{name: "ECDSA raw r||s", spec: spkacSpec{key: ecKey, challenge: "c", rawSignature: true}, wantAlg: "ECDSA-SHA256"},
		{name: "tampered raw ECDSA", spec: spkacSpec{key: ecKey, challenge: "c", rawSignature: true, tamper: true}, wantErr: "does not verify"},
		{name: "ECDSA signature neither DER nor raw", spec: spkacSpec{key: ecKey, challenge: "c", trailingSig: true}, wantErr: "neither DER"},
		{name: "ECDSA with odd parameters", spec: spkacSpec{key: ecKey, challenge: "c", alg: wire.OIDECDSAWithSHA256, params: asn1.RawValue{FullBytes: []byte{0x06, 0x03, 0x2a, 0x03, 0x04}}}, wantErr: "other than NULL"},
		{name: "ECDSA with SHA-1 refused", spec: spkacSpec{key: ecKey, challenge: "c", alg: oidECDSAWithSHA1, hash: crypto.SHA1}, wantErr: "SHA-1"},
		{name: "RSA with odd parameters", spec: spkacSpec{key: rsaKey, challenge: "c", alg: wire.OIDSHA256WithRSA, params: asn1.RawValue{FullBytes: []byte{0x02, 0x01, 0x00}}}, wantErr: "other than NULL"},
		{name: "unknown algorithm", spec: spkacSpec{key: rsaKey, challenge: "c", alg: asn1.ObjectIdentifier{1, 2, 3}}, wantErr: "does not fit"},
		{name: "small RSA key", spec: spkacSpec{key: rsaSmall, challenge: "c"}, wantErr: "at least 2048"},
		{name: "P-384", spec: spkacSpec{key: ec384Key, challenge: "c"}, wantErr: "want P-256"},
		{name: "challenge not IA5", spec: spkacSpec{key: ecKey, challenge: "c", challengeTag: asn1.TagUTF8String}, wantErr: "not an IA5String"},
		{name: "challenge not ASCII", spec: spkacSpec{key: ecKey, challenge: "\xff"}, wantErr: "not ASCII"},
		{name: "trailing data", spec: spkacSpec{key: ecKey, challenge: "c", trailing: true}, wantErr: "trailing data"},
		{name: "empty", raw: []byte{}, wantErr: "empty"},
		{name: "garbage", raw: []byte("not der"), wantErr: "spkac"},
		{name: "too large", raw: bytes.Repeat([]byte{0x30}, maxSPKAC+1), wantErr: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			der := tt.raw
			if der == nil {
				der = makeSPKAC(t, tt.spec)
			}
			got, err := ParseSPKAC(der)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v; want one mentioning %q", err, tt.wantErr)
				}
				if got != nil {
					t.Error("a refused SPKAC returned a key")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Algorithm != tt.wantAlg || got.Challenge != tt.spec.challenge {
				t.Errorf("algorithm %s challenge %q", got.Algorithm, got.Challenge)
			}
			want, _ := x509.MarshalPKIXPublicKey(tt.spec.key.Public())
			if !bytes.Equal(got.SPKI, want) {
				t.Error("SPKI differs from the key's")
			}
			if !got.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(tt.spec.key.Public()) {
				t.Error("public key differs")
			}
		})
	}
}

// TestParseSPKACSwappedKey replaces the key inside a valid SPKAC with another: the signature must
// no longer verify, whatever else stays intact.
func TestParseSPKACSwappedKey(t *testing.T) {
	testKeys(t)
	good := makeSPKAC(t, spkacSpec{key: ecKey, challenge: "c"})
	other, _ := x509.MarshalPKIXPublicKey(newECKey(t).Public())
	mine, _ := x509.MarshalPKIXPublicKey(ecKey.Public())
	swapped := bytes.Replace(good, mine, other, 1)
	if bytes.Equal(swapped, good) {
		t.Fatal("test did not swap")
	}
	if _, err := ParseSPKAC(swapped); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("err %v", err)
	}
}

func TestDecodeBase64(t *testing.T) {
	raw := []byte{0xfb, 0xff, 0xfe, 0x01}
	for _, s := range []string{
		base64.StdEncoding.EncodeToString(raw), base64.RawStdEncoding.EncodeToString(raw),
		base64.URLEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw),
		" " + base64.StdEncoding.EncodeToString(raw) + "\n",
	} {
		got, err := decodeBase64(s)
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("decodeBase64(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "   ", "not base64!", "a+b-"} {
		if _, err := decodeBase64(s); err == nil {
			t.Errorf("decodeBase64(%q) succeeded", s)
		}
	}
}

// FuzzParseSPKAC: arbitrary input never panics, and whatever parses came with a signature that
// verifies, so re-parsing it gives the same key.
func FuzzParseSPKAC(f *testing.F) {
	testKeys(f)
	f.Add(makeSPKAC(f, spkacSpec{key: rsaKey, challenge: "c"}))
	f.Add(makeSPKAC(f, spkacSpec{key: ecKey, challenge: "Y2hhbGxlbmdl"}))
	f.Add(makeSPKAC(f, spkacSpec{key: ecKey, challenge: "c", tamper: true}))
	f.Add(makeSPKAC(f, chromeOSSPKAC(ecKey, "00112233445566778899aabbccddeeff00112233", true)))
	f.Add(makeSPKAC(f, chromeOSSPKAC(rsaKey, "00112233445566778899aabbccddeeff0011223344556677889900aabbccddee", false)))
	f.Add([]byte{0x30, 0x03, 0x30, 0x01, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, der []byte) {
		got, err := ParseSPKAC(der)
		if err != nil {
			if got != nil {
				t.Fatal("error with a result")
			}
			return
		}
		if got.PublicKey == nil || len(got.SPKI) == 0 {
			t.Fatalf("parsed without a key: %+v", got)
		}
		again, err := ParseSPKAC(der)
		if err != nil || !bytes.Equal(again.SPKI, got.SPKI) {
			t.Fatalf("not deterministic: %v", err)
		}
	})
}
