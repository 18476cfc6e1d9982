package wire

import (
	"bytes"
	"testing"
)

func TestSignedData(t *testing.T) {
	b := MarshalSignedData([]byte("data"), []byte("sig"))
	d, s, err := UnmarshalSignedData(b)
	if err != nil || string(d) != "data" || string(s) != "sig" {
		t.Fatalf("round trip: %q %q %v", d, s, err)
	}
	bad := map[string][]byte{
		"empty":          nil,
		"no data":        MarshalSignedData(nil, []byte("sig"))[2:],
		"unknown field":  append(append([]byte{}, b...), 0x1a, 0x00),
		"varint field":   {0x08, 0x01},
		"repeated data":  append(append([]byte{}, b...), 0x0a, 0x01, 'x'),
		"truncated":      b[:len(b)-1],
		"bad tag":        {0xff},
		"length too big": {0x0a, 0x7f, 'x'},
	}
	for name, in := range bad {
		if _, _, err := UnmarshalSignedData(in); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestAnsweredChallenge: the challenge an answer names is read from field 1 of its
// ChallengeResponse, whatever else the message holds; anything else is refused.
func TestAnsweredChallenge(t *testing.T) {
	challenge := MarshalSignedData([]byte("challenge-data"), []byte("google-sig"))
	answer := MarshalSignedData(MarshalChallengeResponse(challenge, []byte("nonce"), []byte("key info")), []byte("sig"))
	if got, err := AnsweredChallenge(answer); err != nil || string(got) != "challenge-data" {
		t.Fatalf("answeredChallenge = %q, %v", got, err)
	}
	// Fields the adapter does not know (a later ChromeOS may add some) are skipped.
	extra := append(MarshalChallengeResponse(challenge, []byte("n"), nil), 0x20, 0x07, 0x3a, 0x01, 'x')
	if got, err := AnsweredChallenge(MarshalSignedData(extra, nil)); err != nil || string(got) != "challenge-data" {
		t.Errorf("with unknown fields: %q, %v", got, err)
	}
	for name, in := range map[string][]byte{
		"not a SignedData":          []byte("AAAA"),
		"no challenge":              MarshalSignedData([]byte{0x12, 0x01, 0x00}, nil),
		"challenge twice":           MarshalSignedData(append(MarshalChallengeResponse(challenge, nil, nil), 0x0a, 0x00), nil),
		"challenge a varint":        MarshalSignedData([]byte{0x08, 0x01}, nil),
		"challenge not signed data": MarshalSignedData(MarshalChallengeResponse([]byte("plain"), nil, nil), nil),
		"truncated":                 MarshalSignedData([]byte{0x0a, 0x05, 0x01}, nil),
	} {
		if got, err := AnsweredChallenge(in); err == nil {
			t.Errorf("%s: answeredChallenge = %q", name, got)
		}
	}
}

// FuzzAnsweredChallenge: arbitrary input never panics; what is accepted names a challenge with
// data, the data a server could have handed out (a SignedData around it answers to it again).
func FuzzAnsweredChallenge(f *testing.F) {
	challenge := MarshalSignedData([]byte("challenge-data"), []byte("google-sig"))
	f.Add(MarshalSignedData(MarshalChallengeResponse(challenge, []byte("nonce"), []byte("key info")), []byte("sig")))
	f.Add(MarshalSignedData([]byte{0x12, 0x01, 0x00}, nil))
	f.Add([]byte("AAAA"))
	f.Fuzz(func(t *testing.T, in []byte) {
		data, err := AnsweredChallenge(in)
		if err != nil {
			return
		}
		if len(data) == 0 {
			t.Fatal("accepted an answer to a challenge without data")
		}
		again := MarshalSignedData(MarshalChallengeResponse(MarshalSignedData(data, nil), nil, nil), nil)
		if got, err := AnsweredChallenge(again); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("the named challenge does not round-trip: %v", err)
		}
	})
}

// FuzzSignedData: the strict protobuf reader never panics and round-trips what it accepts.
func FuzzSignedData(f *testing.F) {
	f.Add(MarshalSignedData([]byte("d"), []byte("s")))
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, s, err := UnmarshalSignedData(b)
		if err != nil {
			return
		}
		d2, s2, err := UnmarshalSignedData(MarshalSignedData(d, s))
		if err != nil || !bytes.Equal(d, d2) || !bytes.Equal(s, s2) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
