// Package devicekey is the key pair a simulated ChromeOS device holds, for both of the
// emulator's Google sides: the device key of a certificate provisioning process and the key a
// Verified Access answer registers. A device signs the way ChromeOS does (RSASSA-PKCS1-v1_5 or
// ECDSA, both over SHA-256), and Verify checks such a signature.
package devicekey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// Key types.
const (
	RSA   = "rsa"   // RSA-2048
	ECDSA = "ecdsa" // ECDSA P-256
)

// ParseType normalises a key type as requests write it: RSA or ECDSA in any case, "ec" for
// ECDSA; empty stays empty, for the caller's default.
func ParseType(s string) (string, error) {
	switch strings.ToLower(s) {
	case "":
		return "", nil
	case RSA:
		return RSA, nil
	case ECDSA, "ec":
		return ECDSA, nil
	default:
		return "", fmt.Errorf("key type %q: want %q or %q", s, RSA, ECDSA)
	}
}

// Key is a device's key pair.
type Key struct {
	Signer crypto.Signer
	SPKI   []byte // DER SubjectPublicKeyInfo of Signer's public key
}

// New generates a fresh RSA-2048 or P-256 key, as a ChromeOS device does per key it registers.
func New(keyType string) (*Key, error) {
	var signer crypto.Signer
	var err error
	switch keyType {
	case RSA:
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	case ECDSA:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		err = fmt.Errorf("unknown key type %q", keyType)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", keyType, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal %s public key: %w", keyType, err)
	}
	return &Key{Signer: signer, SPKI: spki}, nil
}

// Sign produces what a ChromeOS device returns: RSASSA-PKCS1-v1_5 with SHA-256, or ECDSA with
// SHA-256 as DER SEQUENCE{r,s} (raw 32-byte r || 32-byte s when raw is set, as a TPM signs).
func (k *Key) Sign(data []byte, raw bool) ([]byte, error) {
	digest := sha256.Sum256(data)
	switch key := k.Signer.(type) {
	case *rsa.PrivateKey:
		sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
		if err != nil {
			return nil, fmt.Errorf("rsa sign: %w", err)
		}
		return sig, nil
	case *ecdsa.PrivateKey:
		der, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
		if err != nil {
			return nil, fmt.Errorf("ecdsa sign: %w", err)
		}
		if !raw {
			return der, nil
		}
		return derToRaw(der, 32)
	default:
		return nil, fmt.Errorf("unsupported device key %T", k.Signer)
	}
}

// derToRaw converts an ASN.1 ECDSA signature into the fixed-width r || s form.
func derToRaw(der []byte, size int) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil {
		return nil, fmt.Errorf("parse ecdsa signature: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("parse ecdsa signature: %d trailing bytes", len(rest))
	}
	if sig.R.Sign() <= 0 || sig.S.Sign() <= 0 || sig.R.BitLen() > size*8 || sig.S.BitLen() > size*8 {
		return nil, errors.New("ecdsa signature component out of range")
	}
	out := make([]byte, 2*size)
	sig.R.FillBytes(out[:size])
	sig.S.FillBytes(out[size:])
	return out, nil
}

// Verify reports whether sig is a valid device signature of data for the public key in spki:
// RSASSA-PKCS1-v1_5 SHA-256 for RSA keys, ECDSA SHA-256 for P-256 keys in DER or raw 64-byte
// r||s form. It is exported for tests that check the emulator's devices.
func Verify(spki, data, sig []byte) error {
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return fmt.Errorf("parse spki: %w", err)
	}
	digest := sha256.Sum256(data)
	switch key := pub.(type) {
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig); err != nil {
			return fmt.Errorf("rsa signature: %w", err)
		}
		return nil
	case *ecdsa.PublicKey:
		if len(sig) == 64 {
			r := new(big.Int).SetBytes(sig[:32])
			s := new(big.Int).SetBytes(sig[32:])
			if ecdsa.Verify(key, digest[:], r, s) {
				return nil
			}
		}
		if ecdsa.VerifyASN1(key, digest[:], sig) {
			return nil
		}
		return errors.New("ecdsa signature does not verify")
	default:
		return fmt.Errorf("unsupported public key %T", pub)
	}
}
