package scep

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Signer key and certificate parameters. The certificate only identifies the adapter to the SCEP
// server (which encrypts its answers to it); a long lifetime spares operators a renewal that
// would break requests still pending under the old certificate.
const (
	signerKeyBits  = 2048
	signerValidity = 10 * 365 * 24 * time.Hour
)

// loadOrCreateSigner returns the adapter's SCEP requester key and self-signed certificate,
// creating whichever file is absent: both (first start), or the certificate alone for an
// existing key. A certificate without its key is refused rather than replaced, since a new key
// could not decrypt answers to requests the old one made.
func loadOrCreateSigner(keyPath, certPath, name string, log *zap.Logger) (*rsa.PrivateKey, *x509.Certificate, error) {
	key, err := readSignerKey(keyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, statErr := os.Stat(certPath); statErr == nil {
			return nil, nil, ca.SettingErrorf("signerKeyFile", "%q is missing but signerCertFile %q exists: restore the key, or delete both to have a new pair created", keyPath, certPath)
		}
		if key, err = rsa.GenerateKey(rand.Reader, signerKeyBits); err != nil {
			return nil, nil, ca.SettingErrorf("signerKeyFile", "generate key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, nil, ca.SettingErrorf("signerKeyFile", "%w", err)
		}
		created, err := createFile(keyPath, pemutil.EncodePrivateKey(der), 0o600)
		if err != nil {
			return nil, nil, ca.SettingErrorf("signerKeyFile", "%q: %w", keyPath, err)
		}
		if !created { // another adapter replica was quicker: use its key
			if key, err = readSignerKey(keyPath); err != nil {
				return nil, nil, ca.SettingErrorf("signerKeyFile", "%q: %w", keyPath, err)
			}
		} else {
			log.Info("created the SCEP signer key", zap.String("path", keyPath))
		}
	case err != nil:
		return nil, nil, ca.SettingErrorf("signerKeyFile", "%q: %w", keyPath, err)
	default:
		if fi, err := os.Stat(keyPath); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("SCEP signer key file is readable by group or others", zap.String("path", keyPath), zap.Stringer("mode", fi.Mode().Perm()))
		}
	}

	cert, err := readSignerCert(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		der, err := selfSigned(key, name)
		if err != nil {
			return nil, nil, ca.SettingErrorf("signerCertFile", "%w", err)
		}
		created, err := createFile(certPath, pemutil.EncodeCertificateDER(der), 0o644)
		if err != nil {
			return nil, nil, ca.SettingErrorf("signerCertFile", "%q: %w", certPath, err)
		}
		if created {
			log.Info("created the SCEP signer certificate", zap.String("path", certPath))
		}
		cert, err = readSignerCert(certPath)
		if err != nil {
			return nil, nil, ca.SettingErrorf("signerCertFile", "%q: %w", certPath, err)
		}
	} else if err != nil {
		return nil, nil, ca.SettingErrorf("signerCertFile", "%q: %w", certPath, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, ca.SettingErrorf("signerCertFile", "%q does not belong to signerKeyFile %q", certPath, keyPath)
	}
	if now := time.Now(); now.After(cert.NotAfter) {
		return nil, nil, ca.SettingErrorf("signerCertFile", "%q expired on %s: delete it to have a new one created for the same key", certPath, cert.NotAfter.Format(time.DateOnly))
	}
	return key, cert, nil
}

func readSignerKey(path string) (*rsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q, want PRIVATE KEY or RSA PRIVATE KEY (unencrypted)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%T key: SCEP servers encrypt their answers to RSA keys only", key)
	}
	return rk, nil
}

func readSignerCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// selfSigned makes the requester certificate. keyEncipherment lets servers that check key usage
// encrypt the CertRep to it; the subject names the adapter connection for the server's logs.
func selfSigned(key *rsa.PrivateKey, name string) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	cn := "certprov-adapter SCEP requester"
	if name != "" {
		cn += " " + name
	}
	if len(cn) > 64 {
		cn = cn[:64]
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"certprov-adapter"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(signerValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
}

// createFile writes data to path with perm unless path exists, atomically: the content goes to a
// temporary file first and is linked into place, so that two replicas starting at once never
// see half a key, and the second keeps the first one's. It reports whether it created the file.
func createFile(path string, data []byte, perm os.FileMode) (bool, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
