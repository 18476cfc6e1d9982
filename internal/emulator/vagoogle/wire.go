package vagoogle

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/certprov/certprov-adapter/internal/emulator/devicekey"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// The fields of ChromeOS's ChallengeResponse are wire's (ChallengeResponse*): the adapter reads
// the challenge it answers, Google (here) the rest.
const (
	challengeResponseFieldChallenge        = wire.ChallengeResponseChallenge
	challengeResponseFieldNonce            = wire.ChallengeResponseNonce
	challengeResponseFieldEncryptedKeyInfo = wire.ChallengeResponseEncryptedKeyInfo
)

// Field numbers of EncryptedData and KeyInfo (system_api attestation_ca.proto).
const (
	encryptedDataFieldWrappedKey    protowire.Number = 2
	encryptedDataFieldIV            protowire.Number = 3
	encryptedDataFieldMAC           protowire.Number = 4
	encryptedDataFieldData          protowire.Number = 5
	encryptedDataFieldWrappingKeyID protowire.Number = 6

	keyInfoFieldKeyType    protowire.Number = 1 // varint: keyTypeEMK or keyTypeEUK
	keyInfoFieldDomain     protowire.Number = 2 // the enrolled domain (EMK) or the user's e-mail (EUK)
	keyInfoFieldDeviceID   protowire.Number = 3
	keyInfoFieldSPKAC      protowire.Number = 5 // signed_public_key_and_challenge
	keyInfoFieldCustomerID protowire.Number = 6
)

// KeyInfo key types: an Enterprise Machine Key or an Enterprise User Key.
const (
	keyTypeEMK = 1
	keyTypeEUK = 2
)

// challengeResponse is ChromeOS's ChallengeResponse.
type challengeResponse struct {
	challenge        []byte // serialized SignedData
	nonce            []byte
	encryptedKeyInfo encryptedData
}

// encryptedData is attestation_ca.proto's EncryptedData.
type encryptedData struct {
	wrappedKey, iv, mac, data, wrappingKeyID []byte
}

// keyInfo is the part of attestation_ca.proto's KeyInfo the emulator reads and writes.
type keyInfo struct {
	keyType    uint64
	domain     string
	deviceID   []byte
	spkac      []byte
	customerID string
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func (r challengeResponse) marshal() []byte {
	return wire.MarshalChallengeResponse(r.challenge, r.nonce, r.encryptedKeyInfo.marshal())
}

func (e encryptedData) marshal() []byte {
	b := appendBytesField(nil, encryptedDataFieldWrappedKey, e.wrappedKey)
	b = appendBytesField(b, encryptedDataFieldIV, e.iv)
	b = appendBytesField(b, encryptedDataFieldMAC, e.mac)
	b = appendBytesField(b, encryptedDataFieldData, e.data)
	return appendBytesField(b, encryptedDataFieldWrappingKeyID, e.wrappingKeyID)
}

func (k keyInfo) marshal() []byte {
	b := protowire.AppendTag(nil, keyInfoFieldKeyType, protowire.VarintType)
	b = protowire.AppendVarint(b, k.keyType)
	b = appendBytesField(b, keyInfoFieldDomain, []byte(k.domain))
	b = appendBytesField(b, keyInfoFieldDeviceID, k.deviceID)
	b = appendBytesField(b, keyInfoFieldSPKAC, k.spkac)
	if k.customerID != "" {
		b = appendBytesField(b, keyInfoFieldCustomerID, []byte(k.customerID))
	}
	return b
}

// parseFields reads a protobuf message field by field, as proto2 readers do: unknown fields are
// skipped, a known field must have its wire type and appear once.
func parseFields(b []byte, known map[protowire.Number]protowire.Type) (map[protowire.Number][]byte, map[protowire.Number]uint64, error) {
	bytesOut := map[protowire.Number][]byte{}
	varints := map[protowire.Number]uint64{}
	seen := map[protowire.Number]bool{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, fmt.Errorf("bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		want, ok := known[num]
		if !ok {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		if typ != want {
			return nil, nil, fmt.Errorf("field %d has wire type %d, want %d", num, typ, want)
		}
		if seen[num] {
			return nil, nil, fmt.Errorf("field %d repeated", num)
		}
		seen[num] = true
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			varints[num], b = v, b[n:]
		default:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			bytesOut[num], b = v, b[n:]
		}
	}
	return bytesOut, varints, nil
}

func parseChallengeResponse(b []byte) (challengeResponse, error) {
	f, _, err := parseFields(b, map[protowire.Number]protowire.Type{
		challengeResponseFieldChallenge: protowire.BytesType, challengeResponseFieldNonce: protowire.BytesType,
		challengeResponseFieldEncryptedKeyInfo: protowire.BytesType,
	})
	if err != nil {
		return challengeResponse{}, fmt.Errorf("challenge response: %w", err)
	}
	if len(f[challengeResponseFieldChallenge]) == 0 || len(f[challengeResponseFieldNonce]) == 0 {
		return challengeResponse{}, errors.New("challenge response: challenge or nonce missing")
	}
	ed, err := parseEncryptedData(f[challengeResponseFieldEncryptedKeyInfo])
	if err != nil {
		return challengeResponse{}, fmt.Errorf("challenge response: %w", err)
	}
	return challengeResponse{challenge: f[challengeResponseFieldChallenge], nonce: f[challengeResponseFieldNonce], encryptedKeyInfo: ed}, nil
}

func parseEncryptedData(b []byte) (encryptedData, error) {
	f, _, err := parseFields(b, map[protowire.Number]protowire.Type{
		encryptedDataFieldWrappedKey: protowire.BytesType, encryptedDataFieldIV: protowire.BytesType,
		encryptedDataFieldMAC: protowire.BytesType, encryptedDataFieldData: protowire.BytesType,
		encryptedDataFieldWrappingKeyID: protowire.BytesType,
	})
	if err != nil {
		return encryptedData{}, fmt.Errorf("encrypted key info: %w", err)
	}
	return encryptedData{wrappedKey: f[encryptedDataFieldWrappedKey], iv: f[encryptedDataFieldIV], mac: f[encryptedDataFieldMAC],
		data: f[encryptedDataFieldData], wrappingKeyID: f[encryptedDataFieldWrappingKeyID]}, nil
}

func parseKeyInfo(b []byte) (keyInfo, error) {
	f, v, err := parseFields(b, map[protowire.Number]protowire.Type{
		keyInfoFieldKeyType: protowire.VarintType, keyInfoFieldDomain: protowire.BytesType,
		keyInfoFieldDeviceID: protowire.BytesType, keyInfoFieldSPKAC: protowire.BytesType,
		keyInfoFieldCustomerID: protowire.BytesType,
	})
	if err != nil {
		return keyInfo{}, fmt.Errorf("key info: %w", err)
	}
	k := keyInfo{keyType: v[keyInfoFieldKeyType], domain: string(f[keyInfoFieldDomain]), deviceID: f[keyInfoFieldDeviceID],
		spkac: f[keyInfoFieldSPKAC], customerID: string(f[keyInfoFieldCustomerID])}
	if k.keyType != keyTypeEMK && k.keyType != keyTypeEUK {
		return keyInfo{}, fmt.Errorf("key info: key type %d, want EMK (1) or EUK (2)", k.keyType)
	}
	if len(k.spkac) == 0 {
		return keyInfo{}, errors.New("key info: no signed public key and challenge (registerKey was not used)")
	}
	return k, nil
}

// spkacChallenge is the challenge string ChromeOS signs into an SPKAC: the hex of random bytes,
// 20 on a TPM 1.2 device and 32 on TPM 2.0 (CryptoUtilityImpl::CreateSPKACInternal). It is not
// the Verified Access challenge.
func spkacChallenge(tpm string) (string, error) {
	n := 32
	if tpm == TPM12 {
		n = 20
	}
	return randomHex(n)
}

// buildSPKAC returns the DER SPKAC for key with the given challenge string, signed by the key,
// as ChromeOS builds it: sha256WithRSAEncryption or ecdsa-with-SHA256, both with NULL parameters
// (X509_ALGOR_set0(alg, nid, V_ASN1_NULL, NULL)); an ECDSA signature in DER or, with raw, as the
// TPM's 64-byte r||s. This is the proof of possession Google hands the adapter in
// signedPublicKeyAndChallenge.
func buildSPKAC(key *devicekey.Key, challenge string, raw bool) ([]byte, error) {
	var alg pkix.AlgorithmIdentifier
	switch key.Signer.(type) {
	case *rsa.PrivateKey:
		alg = pkix.AlgorithmIdentifier{Algorithm: wire.OIDSHA256WithRSA, Parameters: asn1.NullRawValue}
	case *ecdsa.PrivateKey:
		alg = pkix.AlgorithmIdentifier{Algorithm: wire.OIDECDSAWithSHA256, Parameters: asn1.NullRawValue}
	default:
		return nil, fmt.Errorf("spkac: unsupported key %T", key.Signer)
	}
	return wire.MarshalSPKAC(key.SPKI, challenge, alg, func(signed []byte) ([]byte, error) { return key.Sign(signed, raw) })
}

// spkacSPKI reads the SubjectPublicKeyInfo of a DER SPKAC without checking its signature: the
// service verifies the answer's signature with it and hands the SPKAC on, whose own signature is
// the relying party's to check.
func spkacSPKI(der []byte) ([]byte, error) {
	_, pkac, err := wire.UnmarshalSPKAC(der)
	if err != nil {
		return nil, err
	}
	return pkac.SPKI.FullBytes, nil
}

// corruptSPKACSignature flips bits in the signature of a DER SPKAC while keeping it well-formed,
// so that only the signature check fails.
func corruptSPKACSignature(der []byte) ([]byte, error) {
	s, _, err := wire.UnmarshalSPKAC(der)
	if err != nil {
		return nil, err
	}
	sig := append([]byte(nil), s.Signature.Bytes...)
	sig[len(sig)/2] ^= 0xff
	s.Signature = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	return wire.MarshalSPKACParts(s)
}

// randomBytes returns n bytes from crypto/rand.
func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("random: %w", err)
	}
	return b, nil
}

// randomHex is the hex of n bytes from crypto/rand.
func randomHex(n int) (string, error) {
	b, err := randomBytes(n)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
