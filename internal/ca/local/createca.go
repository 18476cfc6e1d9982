package local

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Defaults and file names of CreateCA.
const (
	DefaultCACommonName = "certprov-adapter local CA"
	DefaultCAValidity   = 10 * 8760 * time.Hour
	CACertificateFile   = "ca.crt"
	CAKeyFile           = "ca.key"
)

// CreateCA creates a self-signed root for the local connector in dir: ca.crt and ca.key (PKCS#8,
// mode 0600). keyType is "ecdsa" (P-256, the default when empty) or "rsa" (3072 bits). Empty
// commonName and non-positive validity take the defaults. It never overwrites: if either file
// exists, it fails and changes nothing, because replacing a CA key orphans every certificate it
// issued.
func CreateCA(dir, keyType, commonName string, validity time.Duration) (certPath, keyPath string, err error) {
	if commonName == "" {
		commonName = DefaultCACommonName
	}
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	var key crypto.Signer
	switch keyType {
	case "", "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return "", "", fmt.Errorf("create CA: key type %q: want ecdsa or rsa", keyType)
	}
	if err != nil {
		return "", "", fmt.Errorf("create CA: generate key: %w", err)
	}
	certPath = filepath.Join(dir, CACertificateFile)
	keyPath = filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("create CA: %s: %w (refusing to overwrite)", p, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("create CA: %w", err)
		}
	}

	serial, err := randomSerial()
	if err != nil {
		return "", "", fmt.Errorf("create CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The adapter signs leaves directly with this root; it has no business creating subordinates.
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return "", "", fmt.Errorf("create CA: sign certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("create CA: encode key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create CA: %w", err)
	}
	if err := writeNew(keyPath, pemutil.EncodePrivateKey(keyDER), 0o600); err != nil {
		return "", "", fmt.Errorf("create CA: %w", err)
	}
	if err := writeNew(certPath, pemutil.EncodeCertificateDER(certDER), 0o644); err != nil {
		// Do not leave a key without its certificate behind.
		_ = os.Remove(keyPath)
		return "", "", fmt.Errorf("create CA: %w", err)
	}
	return certPath, keyPath, nil
}

// writeNew creates path exclusively (O_EXCL closes the race with a concurrent CreateCA) and syncs it.
func writeNew(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}
