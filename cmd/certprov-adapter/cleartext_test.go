package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `validate` refuses every setting that would carry a secret in clear to another host, with the
// YAML path, through the same checks the daemon runs at start-up; each opt-out clears its own.
func TestValidateRefusesCleartextSecrets(t *testing.T) {
	for _, v := range []string{"PGSSLMODE", "PGHOST", "CERTPROV_JOURNAL_DSN", "CERTPROV_GOOGLE_ENDPOINT", "CERTPROV_VERIFIEDACCESS_ENDPOINT"} {
		t.Setenv(v, "")
	}
	t.Setenv("HOME", t.TempDir()) // pgx would read ~/.postgresql/root.crt, which turns require into verify-ca
	dir := t.TempDir()
	for name, content := range map[string]string{"sa.json": `{"type":"service_account"}`, "ndes.pw": "pw"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write := func(optOuts map[string]bool) string {
		opt := func(key string) string {
			if optOuts[key] {
				return ", insecureAllowCleartext: true"
			}
			return ""
		}
		cfg := `instanceId: a1
customers: [C0abc123]
pubsub: {project: p, subscription: s}
google: {credentials: {type: serviceAccountKey, file: sa.json}, endpoint: "http://chromemanagement.corp.example/"` + opt("google") + `}
verifiedAccess: {endpoint: "http://verifiedaccess.corp.example/"` + opt("verifiedAccess") + `}
journal: {type: postgres, dsn: "postgres://certprov:Pg-s3cret@db.corp.example/certprov?sslmode=require"` + opt("journal") + `}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  ndes:
    type: scep
    url: https://ndes.corp.example/certsrv/mscep/mscep.dll
    signerKeyFile: signer.key
    signerCertFile: signer.pem
    dynamicChallenge: {url: "http://ndes.corp.example/certsrv/mscep_admin/", username: svc, passwordFile: ndes.pw` + opt("scep") + `}
`
		path := filepath.Join(dir, "adapter.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	// The configuration's own settings are refused when it loads...
	code, _, stderr := runCmd(t, "validate", "--config", write(nil))
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, stderr)
	}
	for _, want := range []string{
		"google.endpoint: http://chromemanagement.corp.example/ is plain http",
		"verifiedAccess.endpoint: http://verifiedaccess.corp.example/ is plain http",
		"journal.dsn: sslmode=require encrypts but does not verify the server",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "Pg-s3cret") {
		t.Errorf("stderr shows the DSN's password:\n%s", stderr)
	}

	// ...the connector's when it is built.
	code, _, stderr = runCmd(t, "validate", "--config", write(map[string]bool{"google": true, "verifiedAccess": true, "journal": true}))
	if code != 1 || !strings.Contains(stderr, `caConnections.ndes.dynamicChallenge.url: http://ndes.corp.example/certsrv/mscep_admin/ is plain http`) {
		t.Fatalf("exit %d, want 1 naming the dynamic challenge:\n%s", code, stderr)
	}

	code, out, stderr := runCmd(t, "validate", "--config", write(map[string]bool{"google": true, "verifiedAccess": true, "journal": true, "scep": true}))
	if code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("with every opt-out: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
}
