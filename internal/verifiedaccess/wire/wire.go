// Package wire is the Verified Access enrollment's wire protocol, written once for the three
// parties that speak it: the adapter's enrollment server (package verifiedaccess), the
// emulator's stand-in for Google, and the reference client with which the emulator plays the
// extension. It holds the adapter's enrollment API (paths, JSON bodies, error codes and their
// HTTP statuses: docs/verified-access-api.md, section 2) and the Verified Access messages more
// than one party reads: SignedData, the challenge a ChromeOS ChallengeResponse answers, and the
// SPKAC (SignedPublicKeyAndChallenge) a device registers its key with.
package wire

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/protobuf/encoding/protowire"
)

// Paths of the enrollment API.
const (
	BasePath      = "/v1/verifiedaccess"
	ChallengePath = BasePath + "/challenge"
	EnrollPath    = BasePath + "/enroll"
)

// Code is a stable error code of the enrollment API. Clients branch on it; its text never
// changes.
type Code string

// The enrollment API's error codes.
const (
	CodeBadRequest        Code = "BAD_REQUEST"
	CodeUnknownProfile    Code = "UNKNOWN_PROFILE"
	CodeBadChallenge      Code = "BAD_CHALLENGE"
	CodeChallengeExpired  Code = "CHALLENGE_EXPIRED"
	CodeChallengeReplayed Code = "CHALLENGE_REPLAYED"
	CodePolicyDenied      Code = "POLICY_DENIED"
	CodeCAFailure         Code = "CA_FAILURE"
	CodeUnavailable       Code = "UNAVAILABLE"
	// CodeMisconfigured: Google refused the adapter itself (401, 403, 404): its credentials, its
	// service account's permission or its endpoint need the administrator, not another try.
	CodeMisconfigured Code = "ADAPTER_MISCONFIGURED"
	// CodeRateLimited: this client address sent more requests, or more at once, than its share.
	CodeRateLimited Code = "RATE_LIMITED"
	// CodeBusy: every slot of the endpoint and its queue were taken, whoever the client.
	CodeBusy Code = "BUSY"
)

// Status is the HTTP status that goes with the code.
func (c Code) Status() int {
	switch c {
	case CodeBadRequest, CodeBadChallenge, CodeChallengeExpired:
		return http.StatusBadRequest
	case CodeUnknownProfile:
		return http.StatusNotFound
	case CodeChallengeReplayed:
		return http.StatusConflict
	case CodePolicyDenied:
		return http.StatusForbidden
	case CodeMisconfigured:
		return http.StatusInternalServerError
	case CodeCAFailure:
		return http.StatusBadGateway
	case CodeRateLimited:
		return http.StatusTooManyRequests
	default:
		return http.StatusServiceUnavailable
	}
}

// ChallengeRequest is the body of POST ChallengePath.
type ChallengeRequest struct {
	Profile string `json:"profile"`
}

// ChallengeResponse answers POST ChallengePath.
type ChallengeResponse struct {
	Challenge        string `json:"challenge"` // base64 of the bytes the extension hands to challengeKey
	APIVersion       string `json:"apiVersion"`
	ExpiresInSeconds int    `json:"expiresInSeconds"`
}

// EnrollRequest is the body of POST EnrollPath.
type EnrollRequest struct {
	Profile           string `json:"profile"`
	Scope             string `json:"scope"`
	ChallengeResponse string `json:"challengeResponse"` // base64
	Identity          string `json:"identity,omitempty"`
}

// EnrollResponse answers a successful enrollment.
type EnrollResponse struct {
	Certificate string   `json:"certificate"` // PEM leaf
	Chain       []string `json:"chain"`       // PEM, the leaf's issuer first
}

// ErrorBody is the enrollment API's error envelope.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is what an error says: its code, a message for a person, and the policy rules an
// enrollment failed.
type ErrorDetail struct {
	Code        Code     `json:"code"`
	Message     string   `json:"message"`
	FailedRules []string `json:"failedRules,omitempty"`
}

// Field numbers of Verified Access's SignedData message, which wraps both the challenge handed
// to the extension and the extension's answer.
const (
	SignedDataData      protowire.Number = 1
	SignedDataSignature protowire.Number = 2
)

// MarshalSignedData serializes SignedData{data, signature}: the form in which a v1 challenge is
// handed to the extension (v2 challenges arrive serialized already) and in which a device's
// answer comes back.
func MarshalSignedData(data, signature []byte) []byte {
	b := protowire.AppendTag(nil, SignedDataData, protowire.BytesType)
	b = protowire.AppendBytes(b, data)
	b = protowire.AppendTag(b, SignedDataSignature, protowire.BytesType)
	return protowire.AppendBytes(b, signature)
}

// UnmarshalSignedData parses a serialized SignedData. It is strict — fields 1 and 2 only, as
// bytes, each at most once, data present — so that garbage is an error here rather than a
// silently different message.
func UnmarshalSignedData(b []byte) (data, signature []byte, err error) {
	var seen [3]bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, fmt.Errorf("signed data: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if (num != SignedDataData && num != SignedDataSignature) || typ != protowire.BytesType {
			return nil, nil, fmt.Errorf("signed data: unexpected field %d (wire type %d)", num, typ)
		}
		if seen[num] {
			return nil, nil, fmt.Errorf("signed data: field %d repeated", num)
		}
		seen[num] = true
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, nil, fmt.Errorf("signed data: field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if num == SignedDataData {
			data = v
		} else {
			signature = v
		}
	}
	if len(data) == 0 {
		return nil, nil, errors.New("signed data: no data")
	}
	return data, signature, nil
}

// Field numbers of ChromeOS's ChallengeResponse (system_api attestation): the data of the
// SignedData a device answers a challenge with.
const (
	// ChallengeResponseChallenge is the challenge's SignedData, exactly as handed to challengeKey.
	ChallengeResponseChallenge protowire.Number = 1
	// ChallengeResponseNonce is random bytes the device makes up.
	ChallengeResponseNonce protowire.Number = 2
	// ChallengeResponseEncryptedKeyInfo is an EncryptedData holding the KeyInfo (with the
	// SPKAC), for Google only.
	ChallengeResponseEncryptedKeyInfo protowire.Number = 3
)

// MarshalChallengeResponse serializes a ChallengeResponse; encryptedKeyInfo is the serialized
// EncryptedData.
func MarshalChallengeResponse(challenge, nonce, encryptedKeyInfo []byte) []byte {
	b := protowire.AppendTag(nil, ChallengeResponseChallenge, protowire.BytesType)
	b = protowire.AppendBytes(b, challenge)
	b = protowire.AppendTag(b, ChallengeResponseNonce, protowire.BytesType)
	b = protowire.AppendBytes(b, nonce)
	b = protowire.AppendTag(b, ChallengeResponseEncryptedKeyInfo, protowire.BytesType)
	return protowire.AppendBytes(b, encryptedKeyInfo)
}

// AnsweredChallenge returns the data of the challenge a challenge response answers: response is
// the serialized SignedData{data = ChallengeResponse, signature} the extension posts (v1 and v2
// alike), and field 1 of the ChallengeResponse is the challenge's SignedData. Nothing here is
// authenticated — Google checks the signature — so the result only says which challenge the
// answer claims to answer; fields not read here are skipped, as protobuf readers do.
func AnsweredChallenge(response []byte) ([]byte, error) {
	data, _, err := UnmarshalSignedData(response)
	if err != nil {
		return nil, err
	}
	var challenge []byte
	seen := false
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("challenge response: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num != ChallengeResponseChallenge {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, fmt.Errorf("challenge response: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		if typ != protowire.BytesType {
			return nil, fmt.Errorf("challenge response: field %d has wire type %d, want a message", num, typ)
		}
		if seen {
			return nil, fmt.Errorf("challenge response: field %d repeated", num)
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, fmt.Errorf("challenge response: field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		challenge, seen = v, true
	}
	if !seen {
		return nil, errors.New("challenge response: no challenge (field 1)")
	}
	chData, _, err := UnmarshalSignedData(challenge)
	if err != nil {
		return nil, fmt.Errorf("challenge response: challenge: %w", err)
	}
	return chData, nil
}

// Signature algorithms of an SPKAC, as ChromeOS signs one (RFC 4055, RFC 5758).
var (
	OIDSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	OIDECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

// SPKAC is the DER form of a SignedPublicKeyAndChallenge, the proof of possession a device
// registers with its key: SEQUENCE { PublicKeyAndChallenge, AlgorithmIdentifier, BIT STRING }.
// Decoding it checks the structure only; the signature is the relying party's to check
// (verifiedaccess.ParseSPKAC).
type SPKAC struct {
	PublicKeyAndChallenge asn1.RawValue // the signed bytes
	Algorithm             pkix.AlgorithmIdentifier
	Signature             asn1.BitString
}

// PublicKeyAndChallenge is the signed part of an SPKAC. The challenge stays raw, so that a reader
// can check its type (an IA5String).
type PublicKeyAndChallenge struct {
	SPKI      asn1.RawValue
	Challenge asn1.RawValue
}

// UnmarshalSPKAC decodes a DER SPKAC and the PublicKeyAndChallenge inside it; trailing bytes after
// either are errors.
func UnmarshalSPKAC(der []byte) (SPKAC, PublicKeyAndChallenge, error) {
	var s SPKAC
	rest, err := asn1.Unmarshal(der, &s)
	if err != nil {
		return SPKAC{}, PublicKeyAndChallenge{}, fmt.Errorf("spkac: %w", err)
	}
	if len(rest) > 0 {
		return SPKAC{}, PublicKeyAndChallenge{}, errors.New("spkac: trailing data after the structure")
	}
	var pkac PublicKeyAndChallenge
	rest, err = asn1.Unmarshal(s.PublicKeyAndChallenge.FullBytes, &pkac)
	if err != nil {
		return SPKAC{}, PublicKeyAndChallenge{}, fmt.Errorf("spkac: public key and challenge: %w", err)
	}
	if len(rest) > 0 {
		return SPKAC{}, PublicKeyAndChallenge{}, errors.New("spkac: trailing data in the public key and challenge")
	}
	return s, pkac, nil
}

// MarshalSPKAC builds the DER SPKAC of the key whose DER SubjectPublicKeyInfo is spki, with the
// challenge string as an IA5String, signed by sign over the PublicKeyAndChallenge with algorithm
// alg. ChromeOS writes both of its algorithms with NULL parameters.
func MarshalSPKAC(spki []byte, challenge string, alg pkix.AlgorithmIdentifier, sign func(signed []byte) ([]byte, error)) ([]byte, error) {
	ch, err := asn1.MarshalWithParams(challenge, "ia5")
	if err != nil {
		return nil, fmt.Errorf("spkac: challenge: %w", err)
	}
	pkac, err := asn1.Marshal(PublicKeyAndChallenge{SPKI: asn1.RawValue{FullBytes: spki}, Challenge: asn1.RawValue{FullBytes: ch}})
	if err != nil {
		return nil, fmt.Errorf("spkac: marshal public key and challenge: %w", err)
	}
	sig, err := sign(pkac)
	if err != nil {
		return nil, fmt.Errorf("spkac: %w", err)
	}
	return MarshalSPKACParts(SPKAC{PublicKeyAndChallenge: asn1.RawValue{FullBytes: pkac}, Algorithm: alg,
		Signature: asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
}

// MarshalSPKACParts encodes an SPKAC whose parts are given, such as one decoded and changed.
func MarshalSPKACParts(s SPKAC) ([]byte, error) {
	der, err := asn1.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("spkac: marshal: %w", err)
	}
	return der, nil
}
