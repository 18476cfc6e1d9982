package adapter

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// TestVerifiedAccessChallengesSharedByPostgres: two daemons on one PostgreSQL journal keep
// their Verified Access challenges there, so a challenge one hands out is answered at the other,
// and only once.
func TestVerifiedAccessChallengesSharedByPostgres(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.DSN(t), "certprov_adapter_va")
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	emu, rest := startEmulator(t, log)
	dir := t.TempDir()
	certPath, keyPath, err := local.CreateCA(dir, "ecdsa", "adapter test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	start := func(name string) string {
		listen := freeLoopbackAddr(t)
		cfg, err := config.Parse([]byte(fmt.Sprintf(`
instanceId: a1
customers: [C0demo]
pubsub: {project: p, subscription: s, endpoint: %q, insecure: true}
ops: {listen: "127.0.0.1:0"}
google: {credentials: {type: none}, endpoint: %q}
journal: {type: postgres, dsn: %q}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  builtin: {type: local, certificateFile: %q, keyFile: %q}
verifiedAccess:
  enabled: true
  insecure: true
  listen: %q
  endpoint: %q
  profiles:
    wifi:
      enrollmentDomain: example.com
      caConnection: builtin
      subject: {commonName: "{{.Signals.SerialNumber}}"}
      extendedKeyUsage: [clientAuth]
`, emu.PubSubAddr(), rest.URL+"/", dsn, certPath, keyPath, listen, rest.URL+"/")), dir)
		if err != nil {
			t.Fatalf("config: %v", err)
		}
		a, err := New(ctx, cfg, log.Named(name))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(runCtx) }()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("%s: Run: %v", name, err)
			}
			_ = a.Close()
		})
		return "http://" + listen
	}
	a, b := start("a"), start("b")

	post := func(url string, in, out any) int {
		t.Helper()
		body, _ := json.Marshal(in)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			r, err := http.Post(url, "application/json", bytes.NewReader(body))
			if err != nil && strings.Contains(err.Error(), "connection refused") && time.Now().Before(deadline) {
				continue // the server is still starting
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Body.Close()
			_ = json.NewDecoder(r.Body).Decode(out)
			return r.StatusCode
		}
	}
	var ch wire.ChallengeResponse
	if status := post(a+wire.ChallengePath, wire.ChallengeRequest{Profile: "wifi"}, &ch); status != http.StatusOK {
		t.Fatalf("challenge at a: %d", status)
	}
	raw, _ := base64.StdEncoding.DecodeString(ch.Challenge)
	resp, err := emu.VerifiedAccess().Respond(ctx, vagoogle.RespondRequest{Challenge: raw, KeyType: emulator.KeyECDSA})
	if err != nil {
		t.Fatal(err)
	}
	req := wire.EnrollRequest{Profile: "wifi", Scope: "machine", ChallengeResponse: base64.StdEncoding.EncodeToString(resp.ChallengeResponse)}
	var issued wire.EnrollResponse
	if status := post(b+wire.EnrollPath, req, &issued); status != http.StatusOK || issued.Certificate == "" {
		t.Fatalf("enroll at b of a's challenge: %d", status)
	}
	var refused wire.ErrorBody
	if status := post(a+wire.EnrollPath, req, &refused); status != http.StatusConflict || refused.Error.Code != wire.CodeChallengeReplayed {
		t.Errorf("the same answer at a: %d %+v", status, refused)
	}
}
