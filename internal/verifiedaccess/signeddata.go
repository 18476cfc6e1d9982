package verifiedaccess

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of Verified Access's SignedData message.
const (
	signedDataData      protowire.Number = 1
	signedDataSignature protowire.Number = 2
)

// marshalSignedData serializes SignedData{data, signature}: the form in which a v1 challenge is
// handed to the extension (v2 challenges arrive serialized already).
func marshalSignedData(data, signature []byte) []byte {
	b := protowire.AppendTag(nil, signedDataData, protowire.BytesType)
	b = protowire.AppendBytes(b, data)
	b = protowire.AppendTag(b, signedDataSignature, protowire.BytesType)
	return protowire.AppendBytes(b, signature)
}

// unmarshalSignedData parses a serialized SignedData: the extension's answer to a v1 challenge,
// and the v2 challenge whose data the SPKAC refers to. It is strict — fields 1 and 2 only, as
// bytes, each at most once, data present — so that garbage is refused here instead of being
// sent to Google.
func unmarshalSignedData(b []byte) (data, signature []byte, err error) {
	var seen [3]bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, fmt.Errorf("signed data: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if (num != signedDataData && num != signedDataSignature) || typ != protowire.BytesType {
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
		if num == signedDataData {
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

// Field numbers of ChromeOS's ChallengeResponse (system_api attestation: the data of the
// SignedData a device answers a challenge with).
const (
	// challengeResponseChallenge is the SignedData challenge exactly as the server handed it out.
	challengeResponseChallenge protowire.Number = 1
	// 2 is the nonce the device makes up and 3 the KeyInfo (with the SPKAC) encrypted for
	// Google: neither is for the adapter to read.
)

// answeredChallenge returns the data of the challenge a challenge response answers: response is
// the serialized SignedData{data = ChallengeResponse, signature} the extension posts (v1 and v2
// alike), and field 1 of the ChallengeResponse is the challenge's SignedData. Nothing here is
// authenticated — Google checks the signature — so the result only says which challenge the
// answer claims to answer; fields the adapter does not read are skipped, as protobuf readers do.
func answeredChallenge(response []byte) ([]byte, error) {
	data, _, err := unmarshalSignedData(response)
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
		if num != challengeResponseChallenge {
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
	chData, _, err := unmarshalSignedData(challenge)
	if err != nil {
		return nil, fmt.Errorf("challenge response: challenge: %w", err)
	}
	return chData, nil
}
