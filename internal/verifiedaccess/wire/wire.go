// Package wire is the Verified Access enrollment's wire protocol, written once for the three
// parties that speak it: the adapter's enrollment server (package verifiedaccess), the
// emulator's stand-in for Google, and the reference client with which the emulator plays the
// extension. It holds the adapter's enrollment API (paths, JSON bodies, error codes and their
// HTTP statuses: docs/verified-access-api.md, section 2) and the Verified Access messages more
// than one party reads: SignedData, and the challenge a ChromeOS ChallengeResponse answers.
package wire

import (
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
