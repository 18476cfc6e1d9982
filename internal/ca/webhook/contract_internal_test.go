package webhook

import (
	"encoding/json"
	"testing"
	"time"
)

// TestSignatureVector pins the example in docs/ca-webhook.md, which server authors test against.
func TestSignatureVector(t *testing.T) {
	body, err := json.Marshal(pingRequest{APIVersion: APIVersion, Ping: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"apiVersion":"certprov.webhook/v1","ping":true}`; string(body) != want {
		t.Fatalf("ping body %s, want %s", body, want)
	}
	got := signature([]byte("7f3a9c1e5b2d8f4a6c0e1b3d5f7a9c2e"), time.Unix(1767225600, 0), body)
	if want := "t=1767225600,v1=5d890a01e825d1396af432e4dfbd00de0f967457fb1cbb87dd3ce68d2e0284b1"; got != want {
		t.Errorf("signature %s, want %s", got, want)
	}
}
