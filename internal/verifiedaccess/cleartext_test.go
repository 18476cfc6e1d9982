package verifiedaccess

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/cleartext"
	"github.com/certprov/certprov-adapter/internal/googleauth"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// NewClient refuses to send google.credentials' token over plain http to a host that is not
// loopback, unless verifiedAccess.insecureAllowCleartext is set, which it then logs.
func TestNewClientRefusesTokenInClear(t *testing.T) {
	testKeys(t)
	der, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := json.Marshal(map[string]string{
		"type": "service_account", "client_email": "adapter@p.iam.gserviceaccount.com", "private_key_id": "k1",
		"private_key": string(pemutil.EncodePrivateKey(der)),
		"token_uri":   "http://127.0.0.1:1/token",
	})
	file := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(file, key, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := ClientOptions{
		Endpoint:    "http://verifiedaccess.example.com/",
		Credentials: googleauth.Credentials{Type: googleauth.ServiceAccountKey, File: file},
	}
	_, err = NewClient(context.Background(), opts)
	var e *cleartext.Exposure
	if !errors.As(err, &e) || e.Setting != "verifiedAccess.endpoint" || e.OptOut != "verifiedAccess.insecureAllowCleartext" {
		t.Fatalf("NewClient = %v, want the verifiedAccess.endpoint exposure", err)
	}

	core, logs := observer.New(zapcore.WarnLevel)
	opts.InsecureAllowCleartext, opts.Logger = true, zap.New(core)
	if _, err := NewClient(context.Background(), opts); err != nil {
		t.Fatalf("NewClient with the opt-out: %v", err)
	}
	if w := logs.FilterField(zap.String("setting", "verifiedAccess.endpoint")).All(); len(w) != 1 {
		t.Fatalf("start-up warnings %+v, want one for verifiedAccess.endpoint", logs.All())
	}

	// Without credentials no token travels: an emulator elsewhere on the network is fine.
	opts = ClientOptions{Endpoint: "http://emulator:8480/", Credentials: googleauth.Credentials{Type: googleauth.None}}
	if _, err := NewClient(context.Background(), opts); err != nil {
		t.Fatalf("NewClient without credentials: %v", err)
	}
}
