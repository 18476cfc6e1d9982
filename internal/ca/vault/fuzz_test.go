package vault

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	vaultapi "github.com/hashicorp/vault/api"
)

// FuzzSignAnswer: whatever Vault (or something in its place) answers to a sign request, reading
// it either fails with an error or yields a leaf, a chain without nil entries and a serial.
func FuzzSignAnswer(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := string(pemCert(selfSigned(f, key, "fuzz")))
	good, _ := json.Marshal(map[string]any{"data": map[string]any{
		"certificate": leaf, "issuing_ca": leaf, "ca_chain": []string{leaf}, "serial_number": "01:02",
	}})
	f.Add(good)
	f.Add([]byte(`{"data":{"certificate":""}}`))
	f.Add([]byte(`{"data":{"certificate":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}}`))
	f.Add([]byte(`{"data":{"certificate":` + string(mustJSON(leaf)) + `,"ca_chain":[1,null,"x"]}}`))
	f.Add([]byte(`{"data":null,"warnings":["w"]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sec, err := vaultapi.ParseSecret(bytes.NewReader(b))
		if err != nil {
			return
		}
		issued, serial, err := signed(sec)
		if err != nil {
			if issued != nil {
				t.Fatal("an error with a certificate")
			}
			return
		}
		if issued.Leaf == nil || serial == "" {
			t.Fatalf("accepted without a leaf or serial: %v %q", issued, serial)
		}
		for i, c := range issued.Chain {
			if c == nil {
				t.Fatalf("chain[%d] is nil", i)
			}
		}
	})
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// FuzzVaultText: Vault's reasons become one printable line of bounded length, without the
// secrets named.
func FuzzVaultText(f *testing.F) {
	f.Add("1 error occurred:\n\t* permission denied\n\n", "hvs.secret")
	f.Add("invalid secret id hvs.secret\x00\x1b[31m", "hvs.secret")
	f.Add(strings.Repeat("é", 400), "x")
	f.Fuzz(func(t *testing.T, msg, secret string) {
		out := vaultText([]string{msg, msg}, []string{secret})
		if !utf8.ValidString(out) || strings.ContainsFunc(out, func(r rune) bool { return !unicode.IsPrint(r) }) {
			t.Fatalf("unprintable: %q", out)
		}
		if len(out) > maxMessage+len("…") {
			t.Fatalf("%d bytes", len(out))
		}
		token := len(secret) >= 4 && !strings.ContainsFunc(secret, func(r rune) bool {
			return !(r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '_'))
		})
		if token && !strings.Contains("[redacted]", secret) && strings.Contains(out, secret) {
			t.Fatalf("secret %q in %q", secret, out)
		}
	})
}
