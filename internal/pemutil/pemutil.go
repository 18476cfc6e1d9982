// Package pemutil reads certificates from PEM and writes the PEM blocks this project exchanges
// (certificates, certificate requests, PKCS#8 and public keys, CRLs): the one format every CA, config file and
// test in this project uses.
package pemutil

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ErrNoCertificates is returned when PEM data holds no CERTIFICATE block.
var ErrNoCertificates = errors.New("no PEM CERTIFICATE block")

// ParseCertificates returns every CERTIFICATE block of data, in order. Other blocks are skipped,
// so that a combined key-and-certificate file works too.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != TypeCertificate {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, ErrNoCertificates
	}
	return certs, nil
}

// ReadCertificates is ParseCertificates of a file.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseCertificates(data)
}

// PEM block types.
const (
	TypeCertificate = "CERTIFICATE"
	TypeCSR         = "CERTIFICATE REQUEST"
	TypePrivateKey  = "PRIVATE KEY" // PKCS#8
	TypePublicKey   = "PUBLIC KEY"  // SubjectPublicKeyInfo
	TypeCRL         = "X509 CRL"
)

// Encode returns the PEM of one certificate.
func Encode(c *x509.Certificate) []byte { return EncodeCertificateDER(c.Raw) }

// EncodeCertificateDER returns the PEM of one DER certificate.
func EncodeCertificateDER(der []byte) []byte { return block(TypeCertificate, der) }

// EncodeCSR returns the PEM of a DER PKCS#10 certificate request.
func EncodeCSR(der []byte) []byte { return block(TypeCSR, der) }

// EncodePrivateKey returns the PEM of a DER PKCS#8 private key.
func EncodePrivateKey(pkcs8 []byte) []byte { return block(TypePrivateKey, pkcs8) }

// EncodePublicKey returns the PEM of a DER SubjectPublicKeyInfo.
func EncodePublicKey(spki []byte) []byte { return block(TypePublicKey, spki) }

// EncodeCRL returns the PEM of a DER certificate revocation list.
func EncodeCRL(der []byte) []byte { return block(TypeCRL, der) }

func block(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
