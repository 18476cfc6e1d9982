package ca

import "testing"

func TestParseReason(t *testing.T) {
	for in, want := range map[string]Reason{
		"keyCompromise":        ReasonKeyCompromise,
		"key-compromise":       ReasonKeyCompromise,
		"KEY_COMPROMISE":       ReasonKeyCompromise,
		"superseded":           ReasonSuperseded,
		"cessationOfOperation": ReasonCessationOfOperation,
		"unspecified":          ReasonUnspecified,
		"privilegeWithdrawn":   ReasonPrivilegeWithdrawn,
	} {
		got, err := ParseReason(in)
		if err != nil || got != want {
			t.Errorf("ParseReason(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "removeFromCRL", "7", "compromised"} {
		if r, err := ParseReason(bad); err == nil {
			t.Errorf("ParseReason(%q) = %v, want an error", bad, r)
		}
	}
	for r := range reasonNames {
		back, err := ParseReason(r.String())
		if err != nil || back != r {
			t.Errorf("round trip of %v: %v, %v", r, back, err)
		}
	}
}
