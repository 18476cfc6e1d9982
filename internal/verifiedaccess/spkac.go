package verifiedaccess

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// Signature algorithms an SPKAC must not use (RFC 8017); those it may use are wire's.
var (
	oidMD5WithRSA    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 4}
	oidSHA1WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidECDSAWithSHA1 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
)

// maxSPKAC bounds the DER size: an RSA-4096 SPKAC with a long challenge is under 2 KiB.
const maxSPKAC = 16 << 10

// minRSABits is the smallest RSA key certified; Chrome registers RSA-2048 keys.
const minRSABits = 2048

// SPKAC is a SignedPublicKeyAndChallenge whose signature verified with the key inside it.
type SPKAC struct {
	// SPKI is the DER SubjectPublicKeyInfo exactly as the device encoded it.
	SPKI []byte
	// PublicKey is the parsed key: *rsa.PublicKey or *ecdsa.PublicKey (P-256).
	PublicKey crypto.PublicKey
	// Challenge is the challenge string the device signed along with its key. ChromeOS makes it
	// up itself (the hex of 20 or 32 random bytes): it is not the Verified Access challenge and
	// proves nothing about freshness, which the challenge response says (answeredChallenge).
	Challenge string
	// Algorithm is the signature algorithm: "SHA256-RSA" or "ECDSA-SHA256".
	Algorithm string
}

// ParseSPKAC decodes a DER SignedPublicKeyAndChallenge and verifies that the key inside it made
// the signature — the proof that whoever answered the challenge holds the private key. Only
// RSA (at least 2048 bits) with PKCS#1 v1.5 and SHA-256, and ECDSA on P-256 with SHA-256 are
// accepted: what ChromeOS produces. MD5 and SHA-1 signatures are refused by name, since an
// attacker can forge them. Trailing bytes and a challenge that is not an IA5String are errors.
//
// It accepts what devices send (platform2 CryptoUtilityImpl::CreateSPKACInternal): the
// algorithm's parameters are NULL for both algorithms, as X509_ALGOR_set0(alg, nid, V_ASN1_NULL,
// NULL) writes them, or absent, as RFC 5758 writes ecdsa-with-SHA256; an ECDSA signature is DER
// SEQUENCE{r,s} or the raw 64-byte r||s a TPM returns (which one ChromeOS sends is not
// documented).
func ParseSPKAC(der []byte) (*SPKAC, error) {
	if len(der) == 0 {
		return nil, errors.New("spkac: empty")
	}
	if len(der) > maxSPKAC {
		return nil, fmt.Errorf("spkac: %d bytes, at most %d allowed", len(der), maxSPKAC)
	}
	s, pkac, err := wire.UnmarshalSPKAC(der)
	if err != nil {
		return nil, err
	}
	if pkac.Challenge.Class != asn1.ClassUniversal || pkac.Challenge.Tag != asn1.TagIA5String || pkac.Challenge.IsCompound {
		return nil, fmt.Errorf("spkac: challenge is not an IA5String (tag %d)", pkac.Challenge.Tag)
	}
	for _, c := range pkac.Challenge.Bytes {
		if c >= 0x80 {
			return nil, errors.New("spkac: challenge is not ASCII")
		}
	}
	pub, err := x509.ParsePKIXPublicKey(pkac.SPKI.FullBytes)
	if err != nil {
		return nil, fmt.Errorf("spkac: public key: %w", err)
	}
	if s.Signature.BitLength%8 != 0 {
		return nil, errors.New("spkac: signature is not a whole number of bytes")
	}
	algorithm, err := verifySPKAC(pub, s.Algorithm, s.PublicKeyAndChallenge.FullBytes, s.Signature.Bytes)
	if err != nil {
		return nil, err
	}
	return &SPKAC{
		SPKI:      pkac.SPKI.FullBytes,
		PublicKey: pub,
		Challenge: string(pkac.Challenge.Bytes),
		Algorithm: algorithm,
	}, nil
}

// verifySPKAC checks the signature over signed with the algorithm the SPKAC names, which must
// fit the key.
func verifySPKAC(pub crypto.PublicKey, alg pkix.AlgorithmIdentifier, signed, sig []byte) (string, error) {
	switch {
	case alg.Algorithm.Equal(oidMD5WithRSA):
		return "", errors.New("spkac: md5WithRSAEncryption is refused: MD5 signatures can be forged (Chrome signs with SHA-256)")
	case alg.Algorithm.Equal(oidSHA1WithRSA), alg.Algorithm.Equal(oidECDSAWithSHA1):
		return "", errors.New("spkac: SHA-1 signatures are refused (Chrome signs with SHA-256)")
	}
	digest := sha256.Sum256(signed)
	switch key := pub.(type) {
	case *rsa.PublicKey:
		if !alg.Algorithm.Equal(wire.OIDSHA256WithRSA) {
			return "", fmt.Errorf("spkac: signature algorithm %v does not fit an RSA key (want sha256WithRSAEncryption)", alg.Algorithm)
		}
		if !nullOrAbsent(alg.Parameters) {
			return "", errors.New("spkac: sha256WithRSAEncryption with parameters other than NULL")
		}
		if key.N.BitLen() < minRSABits {
			return "", fmt.Errorf("spkac: RSA key of %d bits, at least %d required", key.N.BitLen(), minRSABits)
		}
		if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig); err != nil {
			return "", errors.New("spkac: the signature does not verify with the key inside")
		}
		return "SHA256-RSA", nil
	case *ecdsa.PublicKey:
		if !alg.Algorithm.Equal(wire.OIDECDSAWithSHA256) {
			return "", fmt.Errorf("spkac: signature algorithm %v does not fit an ECDSA key (want ecdsa-with-SHA256)", alg.Algorithm)
		}
		if !nullOrAbsent(alg.Parameters) {
			return "", errors.New("spkac: ecdsa-with-SHA256 with parameters other than NULL")
		}
		if key.Curve != elliptic.P256() {
			return "", fmt.Errorf("spkac: ECDSA curve %s, want P-256", key.Curve.Params().Name)
		}
		der, err := csr.ECDSASignatureDER(sig)
		if err != nil {
			return "", fmt.Errorf("spkac: %w", err)
		}
		if !ecdsa.VerifyASN1(key, digest[:], der) {
			return "", errors.New("spkac: the signature does not verify with the key inside")
		}
		return "ECDSA-SHA256", nil
	default:
		return "", fmt.Errorf("spkac: unsupported public key type %T (want RSA or ECDSA P-256)", pub)
	}
}

// nullOrAbsent reports whether an AlgorithmIdentifier's parameters are an ASN.1 NULL or left out.
func nullOrAbsent(p asn1.RawValue) bool {
	if len(p.FullBytes) == 0 {
		return true
	}
	return p.Class == asn1.ClassUniversal && p.Tag == asn1.TagNull && !p.IsCompound && len(p.Bytes) == 0
}

// decodeBase64 accepts standard or URL-safe base64, padded or not, ignoring surrounding space:
// Google's JSON uses standard base64, clients and tools vary.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty")
	}
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	}
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}
