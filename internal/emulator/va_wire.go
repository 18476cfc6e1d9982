package emulator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the SignedData message (google.chrome.verifiedaccess SignedData), which wraps
// both the challenge handed to the extension and the extension's challenge response.
const (
	signedDataFieldData      protowire.Number = 1
	signedDataFieldSignature protowire.Number = 2
)

// Field numbers of the emulator's own challenge-response payload (the SignedData's data). Real
// Chrome puts a ChallengeResponse message there whose key info is encrypted for Google; nobody but
// Google reads it, so the emulator uses its own small message instead.
const (
	vaPayloadFieldChallenge  protowire.Number = 1 // the challenge exactly as handed to challengeKey
	vaPayloadFieldResponseID protowire.Number = 2 // key of the response record the emulator keeps
	vaPayloadFieldSPKAC      protowire.Number = 3 // the SPKAC, as Chrome's key info carries it
)

// MarshalSignedData serializes a SignedData message (data = field 1, signature = field 2), the
// form in which a v1 challenge is handed to the extension and in which the extension's answer
// comes back. Exported for clients and tests that play the adapter's part.
func MarshalSignedData(data, signature []byte) []byte {
	b := protowire.AppendTag(nil, signedDataFieldData, protowire.BytesType)
	b = protowire.AppendBytes(b, data)
	b = protowire.AppendTag(b, signedDataFieldSignature, protowire.BytesType)
	return protowire.AppendBytes(b, signature)
}

// UnmarshalSignedData parses a serialized SignedData message. It is strict: only fields 1 and 2,
// each as bytes and at most once, so that corrupted input is an error rather than a silently
// different message.
func UnmarshalSignedData(b []byte) (data, signature []byte, err error) {
	fields, err := parseBytesFields(b, signedDataFieldData, signedDataFieldSignature)
	if err != nil {
		return nil, nil, fmt.Errorf("signed data: %w", err)
	}
	return fields[signedDataFieldData], fields[signedDataFieldSignature], nil
}

// parseBytesFields reads a protobuf message made only of the allowed length-delimited fields,
// each present at most once.
func parseBytesFields(b []byte, allowed ...protowire.Number) (map[protowire.Number][]byte, error) {
	out := map[protowire.Number][]byte{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		known := false
		for _, a := range allowed {
			known = known || a == num
		}
		if !known || typ != protowire.BytesType {
			return nil, fmt.Errorf("unexpected field %d (wire type %d)", num, typ)
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		if _, dup := out[num]; dup {
			return nil, fmt.Errorf("field %d repeated", num)
		}
		out[num] = v
		b = b[n:]
	}
	return out, nil
}

// marshalVAPayload builds the data part of the emulator's challenge response.
func marshalVAPayload(challenge, responseID, spkac []byte) []byte {
	b := protowire.AppendTag(nil, vaPayloadFieldChallenge, protowire.BytesType)
	b = protowire.AppendBytes(b, challenge)
	b = protowire.AppendTag(b, vaPayloadFieldResponseID, protowire.BytesType)
	b = protowire.AppendBytes(b, responseID)
	b = protowire.AppendTag(b, vaPayloadFieldSPKAC, protowire.BytesType)
	return protowire.AppendBytes(b, spkac)
}

func unmarshalVAPayload(b []byte) (challenge, responseID []byte, err error) {
	f, err := parseBytesFields(b, vaPayloadFieldChallenge, vaPayloadFieldResponseID, vaPayloadFieldSPKAC)
	if err != nil {
		return nil, nil, fmt.Errorf("challenge response payload: %w", err)
	}
	if len(f[vaPayloadFieldChallenge]) == 0 || len(f[vaPayloadFieldResponseID]) == 0 {
		return nil, nil, errors.New("challenge response payload: challenge or response id missing")
	}
	return f[vaPayloadFieldChallenge], f[vaPayloadFieldResponseID], nil
}

var (
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

// publicKeyAndChallenge is the signed part of an SPKAC.
type publicKeyAndChallenge struct {
	SPKI      asn1.RawValue
	Challenge string `asn1:"ia5"`
}

// spkacASN1 is SignedPublicKeyAndChallenge: SEQUENCE { PublicKeyAndChallenge, AlgorithmIdentifier,
// BIT STRING }.
type spkacASN1 struct {
	PKAC      asn1.RawValue
	Algorithm pkix.AlgorithmIdentifier
	Signature asn1.BitString
}

// buildSPKAC returns the DER SPKAC for key with the given challenge string, signed by the key:
// sha256WithRSAEncryption for RSA, ecdsa-with-SHA256 (DER signature) for P-256. This is the proof
// of possession Google hands the adapter in signedPublicKeyAndChallenge.
func buildSPKAC(key *deviceKey, challenge string) ([]byte, error) {
	pkac, err := asn1.Marshal(publicKeyAndChallenge{SPKI: asn1.RawValue{FullBytes: key.spki}, Challenge: challenge})
	if err != nil {
		return nil, fmt.Errorf("spkac: marshal public key and challenge: %w", err)
	}
	var alg pkix.AlgorithmIdentifier
	switch key.signer.(type) {
	case *rsa.PrivateKey:
		alg = pkix.AlgorithmIdentifier{Algorithm: oidSHA256WithRSA, Parameters: asn1.NullRawValue}
	case *ecdsa.PrivateKey:
		alg = pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256}
	default:
		return nil, fmt.Errorf("spkac: unsupported key %T", key.signer)
	}
	sig, err := key.sign(pkac, false)
	if err != nil {
		return nil, fmt.Errorf("spkac: %w", err)
	}
	der, err := asn1.Marshal(spkacASN1{
		PKAC:      asn1.RawValue{FullBytes: pkac},
		Algorithm: alg,
		Signature: asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		return nil, fmt.Errorf("spkac: marshal: %w", err)
	}
	return der, nil
}

// corruptSPKACSignature flips bits in the signature of a DER SPKAC while keeping it well-formed,
// so that only the signature check fails.
func corruptSPKACSignature(der []byte) ([]byte, error) {
	var s spkacASN1
	if _, err := asn1.Unmarshal(der, &s); err != nil {
		return nil, fmt.Errorf("spkac: %w", err)
	}
	sig := append([]byte(nil), s.Signature.Bytes...)
	sig[len(sig)/2] ^= 0xff
	s.Signature = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	out, err := asn1.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("spkac: marshal: %w", err)
	}
	return out, nil
}

// SPKAC is a parsed, signature-checked SignedPublicKeyAndChallenge.
type SPKAC struct {
	SPKI      []byte // DER SubjectPublicKeyInfo of the key that signed it
	PublicKey crypto.PublicKey
	Challenge string
}

// ParseSPKAC decodes a base64 (standard or URL-safe, padded or not) DER SPKAC and checks
// that the key inside signed it. The emulator's stand-in adapter uses it; the adapter has its own
// parser, which the emulator's tests must not depend on.
func ParseSPKAC(b64 string) (*SPKAC, error) {
	der, err := decodeBase64(b64)
	if err != nil {
		return nil, fmt.Errorf("spkac: %w", err)
	}
	var s spkacASN1
	rest, err := asn1.Unmarshal(der, &s)
	if err != nil {
		return nil, fmt.Errorf("spkac: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("spkac: trailing data")
	}
	var pkac publicKeyAndChallenge
	if rest, err := asn1.Unmarshal(s.PKAC.FullBytes, &pkac); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("spkac: public key and challenge: %v", errOrTrailing(err))
	}
	pub, err := x509.ParsePKIXPublicKey(pkac.SPKI.FullBytes)
	if err != nil {
		return nil, fmt.Errorf("spkac: public key: %w", err)
	}
	if s.Signature.BitLength%8 != 0 {
		return nil, errors.New("spkac: signature is not a whole number of bytes")
	}
	digest := sha256.Sum256(s.PKAC.FullBytes)
	switch key := pub.(type) {
	case *rsa.PublicKey:
		if !s.Algorithm.Algorithm.Equal(oidSHA256WithRSA) {
			return nil, fmt.Errorf("spkac: algorithm %v for an RSA key", s.Algorithm.Algorithm)
		}
		if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], s.Signature.Bytes); err != nil {
			return nil, fmt.Errorf("spkac: signature: %w", err)
		}
	case *ecdsa.PublicKey:
		if !s.Algorithm.Algorithm.Equal(oidECDSAWithSHA256) {
			return nil, fmt.Errorf("spkac: algorithm %v for an ECDSA key", s.Algorithm.Algorithm)
		}
		if !ecdsa.VerifyASN1(key, digest[:], s.Signature.Bytes) {
			return nil, errors.New("spkac: signature does not verify")
		}
	default:
		return nil, fmt.Errorf("spkac: unsupported public key %T", pub)
	}
	return &SPKAC{SPKI: pkac.SPKI.FullBytes, PublicKey: pub, Challenge: pkac.Challenge}, nil
}

func errOrTrailing(err error) error {
	if err != nil {
		return err
	}
	return errors.New("trailing data")
}

// b64 is the base64 flavour the emulator answers in: standard, padded, as proto3 JSON does.
func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// randomBytes returns n bytes from crypto/rand.
func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("random: %w", err)
	}
	return b, nil
}
