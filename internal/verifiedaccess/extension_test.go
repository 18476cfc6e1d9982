package verifiedaccess

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// TestSampleExtension runs the sample extension's own enrollment code
// (examples/verified-access-extension/enroll.js) under Node, with its test stand-in for
// chrome.enterprise.platformKeys (WebCrypto keys answering as ChromeOS does), against this
// package's enrollment server and the emulator — real HTTP both ways. The Node suite checks
// what the extension imported; this test checks what the adapter and Google saw.
func TestSampleExtension(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is required in CI for the sample extension's test (Node.js 20: apt-get install nodejs)")
		}
		t.Skip("node not found: install Node.js 20 to run the sample extension's test (examples/verified-access-extension)")
	}
	x := newE2E(t)
	limits := noLimits()
	limits.RateLimit = config.RateLimit{RequestsPerSecond: 1, Burst: 2}
	limited, _ := x.startServer(serverSetup{limits: limits, realClock: true})
	caPath := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caPath, pemutil.EncodeCertificateDER(x.ca.conn.Certificate().Raw), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "examples/verified-access-extension/test/enroll.test.mjs")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "ADAPTER_URL="+x.adapterURL, "ADAPTER_LIMITED_URL="+limited, "EMULATOR_URL="+x.emuURL, "CA_CERT="+caPath)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("the sample extension's test failed: %v", err)
	}

	// Four enrollments and three rate-limited ones issued; the refused device reached Google and
	// the policy, the unknown profile did not reach Google at all.
	st := x.emu.VerifiedAccess().Stats()
	if n := x.ca.conn.IssuedTotal(); n != 7 {
		t.Errorf("the CA issued %d certificates; want 7", n)
	}
	if st.Verifies[vagoogle.OutcomeVerified] != 8 || st.VerifyCalls["v1"] != 1 || st.VerifyCalls["v2"] != 7 {
		t.Errorf("emulator saw %+v; want 8 verified answers (1 through v1)", st)
	}
	if st.Responses != 0 {
		t.Errorf("the emulator's own device answered %d challenges; the extension's stand-in should have", st.Responses)
	}
}
