package local

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// readCertificates returns every CERTIFICATE block of a PEM file, in order.
func readCertificates(path string) ([]*x509.Certificate, error) {
	return pemutil.ReadCertificates(path)
}

// readPrivateKey returns the first private key of a PEM file: PKCS#1 RSA, SEC1 EC or PKCS#8
// (RSA, ECDSA, Ed25519). Encrypted keys are refused with a hint, since the daemon has no one to
// ask for a passphrase.
func readPrivateKey(path string, log *zap.Logger) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("CA key file is readable by group or others", zap.String("path", path), zap.Stringer("mode", fi.Mode().Perm()))
	}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if _, ok := block.Headers["DEK-Info"]; ok || block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, errors.New("the key is encrypted; store it unencrypted with restrictive permissions (openssl pkey -in key.pem -out plain.pem)")
		}
		var key any
		switch block.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		default:
			continue // EC PARAMETERS, CERTIFICATE, …
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("unsupported issuer key type %T: want RSA, ECDSA or Ed25519", key)
		}
	}
	return nil, errors.New("no PEM private key block (RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)")
}
