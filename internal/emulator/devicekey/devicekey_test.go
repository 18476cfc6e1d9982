package devicekey

import "testing"

// TestSignVerify: what a device signs verifies with its SPKI, in each form ChromeOS uses, and not
// with another key's or over other data.
func TestSignVerify(t *testing.T) {
	for _, tc := range []struct {
		keyType string
		raw     bool
		sigLen  int // 0: any
	}{{RSA, false, 256}, {ECDSA, false, 0}, {ECDSA, true, 64}} {
		k, err := New(tc.keyType)
		if err != nil {
			t.Fatal(err)
		}
		other, err := New(tc.keyType)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := k.Sign([]byte("data"), tc.raw)
		if err != nil {
			t.Fatal(err)
		}
		if tc.sigLen != 0 && len(sig) != tc.sigLen {
			t.Errorf("%s raw=%v: signature of %d bytes, want %d", tc.keyType, tc.raw, len(sig), tc.sigLen)
		}
		if err := Verify(k.SPKI, []byte("data"), sig); err != nil {
			t.Errorf("%s raw=%v: %v", tc.keyType, tc.raw, err)
		}
		if Verify(other.SPKI, []byte("data"), sig) == nil || Verify(k.SPKI, []byte("other"), sig) == nil {
			t.Errorf("%s raw=%v: verified with another key or over other data", tc.keyType, tc.raw)
		}
	}
	if _, err := New("dsa"); err == nil {
		t.Error("New(dsa) succeeded")
	}
}

func TestParseType(t *testing.T) {
	for in, want := range map[string]string{"": "", "rsa": RSA, "RSA": RSA, "ecdsa": ECDSA, "EC": ECDSA} {
		if got, err := ParseType(in); err != nil || got != want {
			t.Errorf("ParseType(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseType("dsa"); err == nil {
		t.Error("ParseType(dsa) succeeded")
	}
}
