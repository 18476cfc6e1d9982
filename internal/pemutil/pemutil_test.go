package pemutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

func selfSigned(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseCertificates(t *testing.T) {
	a, b := selfSigned(t, "a"), selfSigned(t, "b")
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	bundle := append(append(append([]byte{}, Encode(a)...), key...), Encode(b)...)
	certs, err := ParseCertificates(bundle)
	if err != nil || len(certs) != 2 || !certs[0].Equal(a) || !certs[1].Equal(b) {
		t.Fatalf("got %d certificates, %v", len(certs), err)
	}
	if _, err := ParseCertificates(key); !errors.Is(err, ErrNoCertificates) {
		t.Fatalf("key only: %v", err)
	}
	broken := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x01}})
	if _, err := ParseCertificates(append(Encode(a), broken...)); err == nil || !strings.Contains(err.Error(), "certificate 2") {
		t.Fatalf("broken second certificate: %v", err)
	}
}

// TestEncode: each encoder writes one block of its type around the DER it was given, and a
// certificate written from DER reads back as the same certificate.
func TestEncode(t *testing.T) {
	c := selfSigned(t, "c")
	der := []byte{0x30, 0x03, 0x02, 0x01, 0x07}
	for _, tc := range []struct {
		name, typ string
		out       []byte
		body      []byte
	}{
		{"certificate", TypeCertificate, Encode(c), c.Raw},
		{"certificate DER", TypeCertificate, EncodeCertificateDER(c.Raw), c.Raw},
		{"request", TypeCSR, EncodeCSR(der), der},
		{"key", TypePrivateKey, EncodePrivateKey(der), der},
		{"public key", TypePublicKey, EncodePublicKey(der), der},
		{"crl", TypeCRL, EncodeCRL(der), der},
	} {
		block, rest := pem.Decode(tc.out)
		if block == nil || block.Type != tc.typ || string(block.Bytes) != string(tc.body) || len(rest) != 0 {
			t.Errorf("%s: got %+v (rest %q), want one %s block around the DER", tc.name, block, rest, tc.typ)
		}
	}
	certs, err := ParseCertificates(EncodeCertificateDER(c.Raw))
	if err != nil || len(certs) != 1 || !certs[0].Equal(c) {
		t.Fatalf("certificate from DER: %v", err)
	}
}
