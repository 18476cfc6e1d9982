package csr

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"math/big"
	"sync"
	"testing"

	"github.com/certprov/certprov-adapter/internal/process"
)

// Device keys are generated once per test binary: RSA-2048 generation is slow under -race.
var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	ecKey2   *ecdsa.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		// Key generation from crypto/rand cannot fail on a working system.
		rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048)
		rsaKey2, _ = rsa.GenerateKey(rand.Reader, 2048)
		ecKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		ecKey2, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
}

func spkiOf(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatalf("marshal public key: %v", err)
	}
	return der
}

// sigFormat says how the simulated device returns its signature.
type sigFormat int

const (
	sigStandard sigFormat = iota // RSA PKCS#1 v1.5, or ECDSA DER
	sigRaw                       // ECDSA raw r||s
)

// deviceSign signs data the way a ChromeOS device answers signData.
func deviceSign(t testing.TB, key crypto.Signer, data []byte, format sigFormat) []byte {
	t.Helper()
	digest := sha256.Sum256(data)
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest[:])
		if err != nil {
			t.Fatalf("RSA sign: %v", err)
		}
		return sig
	case *ecdsa.PrivateKey:
		der, err := ecdsa.SignASN1(rand.Reader, k, digest[:])
		if err != nil {
			t.Fatalf("ECDSA sign: %v", err)
		}
		if format == sigStandard {
			return der
		}
		return rawECDSA(t, der)
	}
	t.Fatalf("unsupported key %T", key)
	return nil
}

func algorithmOf(key crypto.Signer) string {
	if _, ok := key.(*rsa.PrivateKey); ok {
		return process.AlgorithmRSAPKCS1SHA256
	}
	return process.AlgorithmECDSASHA256
}

func testProcess() *process.Process {
	return &process.Process{
		Name:      process.Name("C01abcdef", "0123456789ABCDEF0123456789ABCDEF"),
		Customer:  "C01abcdef",
		ID:        "0123456789ABCDEF0123456789ABCDEF",
		ProfileID: "wifi-profile",
		Device:    &process.Device{SerialNumber: "5CD1234XYZ", DirectoryID: "d7a1c0de-0000-4000-8000-000000000001"},
		User:      &process.User{Email: "alice@example.com", DirectoryID: "112233445566778899"},
	}
}

// deviceProcess is a device-scoped process: no user.
func deviceProcess(serial string) *process.Process {
	p := testProcess()
	p.User = nil
	p.Device.SerialNumber = serial
	return p
}

// attributes returns the attributes of a CertificationRequestInfo by type.
func attributes(t testing.TB, cri []byte) map[string][]asn1.RawValue {
	t.Helper()
	info, err := parseCRI(cri)
	if err != nil {
		t.Fatalf("parse CRI: %v", err)
	}
	out := map[string][]asn1.RawValue{}
	rest := info.Attributes.Bytes
	for len(rest) > 0 {
		var a pkcs10Attribute
		rest, err = asn1.Unmarshal(rest, &a)
		if err != nil {
			t.Fatalf("parse attribute: %v", err)
		}
		out[a.Type.String()] = a.Values
	}
	return out
}

// rawECDSA converts a DER ECDSA P-256 signature to the raw 64-byte r||s form.
func rawECDSA(t testing.TB, der []byte) []byte {
	t.Helper()
	var v struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &v); err != nil {
		t.Fatalf("parse ECDSA signature: %v", err)
	}
	raw := make([]byte, 64)
	v.R.FillBytes(raw[:32])
	v.S.FillBytes(raw[32:])
	return raw
}
