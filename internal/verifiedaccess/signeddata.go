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
