package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/ca/local"
)

// TestConnectorProblemsAtTheirPath: every connector's settings problems come out at their full
// YAML path, unknown keys and types with the name meant.
func TestConnectorProblemsAtTheirPath(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "a.yaml"), base+`profiles:
  wifi: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  builtin: {type: local, certificateFile: ca/ca.crt, keyFlie: ca/ca.key}
  corp: {type: scep, url: "ftp://ndes.example.com/", signerKeyFile: s.key, signerCertFile: s.crt, tls: {certFile: c.crt}}
  est: {type: est, url: "http://est.example.com", username: "a:b", passwordFile: pw}
  step: {type: stepca, url: "https://ca.example.com:9000", rootFingerprint: abc, provisioner: adapter, provisionerPasswordFile: pw}
  hook: {type: webhook, url: "https://ca.example.com/issue", headers: {Host: x}}
  typo: {type: scpe}
`)
	code, _, stderr := runCLI(t, "validate", "--config", cfg)
	if code != ExitFailure {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		cfg + `: caConnections.builtin.keyFlie: unknown key (did you mean "keyFile"?)`,
		cfg + `: caConnections.corp.url: "ftp://ndes.example.com/": must be an http or https URL`,
		cfg + `: caConnections.corp.tls.keyFile: required: tls.certFile and tls.keyFile go together`,
		cfg + `: caConnections.est.url: "http://est.example.com": must start with https://`,
		cfg + `: caConnections.est.username: must not contain a colon`,
		cfg + `: caConnections.step.rootFingerprint: "abc": want the SHA-256`,
		cfg + `: caConnections.hook.headers.Host: set by the connector itself`,
		cfg + `: caConnections.typo.type: unsupported CA connector type "scpe"`,
		`did you mean "scep"?`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	// The same paths offline.
	code, _, offErr := runCLI(t, "validate", "--offline", "--config", cfg)
	if code != ExitFailure || !strings.Contains(offErr, "caConnections.corp.tls.keyFile") || !strings.Contains(offErr, "caConnections.hook.headers.Host") {
		t.Errorf("offline: exit %d:\n%s", code, offErr)
	}
}

func TestTemplateSuggestion(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "a.yaml"), base+`profiles:
  wifi:
    subject: {commonName: "{{.Device.SerialNumbr}}"}
    subjectAltNames: {email: ["{{.User.Emial | lower}}"]}
caConnections:
  c: {type: local, certificateFile: ca.crt, keyFile: ca.key}
`)
	for _, args := range [][]string{{"validate", "--config", cfg}, {"validate", "--offline", "--config", cfg}} {
		code, _, stderr := runCLI(t, args...)
		for _, want := range []string{
			cfg + `: profiles.wifi.subject.commonName: template: no field "SerialNumbr" in .Device; did you mean "SerialNumber"?` + "\n",
			cfg + `: profiles.wifi.subjectAltNames.email[0]: template: no field "Emial" in .User; did you mean "Email"?` + "\n",
		} {
			if code != ExitFailure || !strings.Contains(stderr, want) {
				t.Errorf("%v: exit %d, stderr lacks %q:\n%s", args, code, want, stderr)
			}
		}
	}
}

// TestValidateOffline: a production configuration whose files exist only in production passes
// offline, which opens none of them (nor creates the SCEP signer validate would), says what it
// skipped, and still finds the problems of the file itself.
func TestValidateOffline(t *testing.T) {
	dir := t.TempDir()
	prod := `instanceId: a1
customers: [C0abc]
pubsub: {project: corp, subscription: certprov}
google: {credentials: {type: serviceAccountKey, file: /etc/certprov/sa.json}}
journal: {type: postgres, dsn: "postgres://certprov@db.internal/certprov"} # no sslmode: refused online only
profiles:
  wifi: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  issuing: {type: local, certificateFile: /etc/certprov/ca/issuing.crt, keyFile: /etc/certprov/ca/issuing.key}
  ndes:
    type: scep
    url: https://ndes.corp.example.com/certsrv/mscep/mscep.dll
    signerKeyFile: state/ndes-signer.key
    signerCertFile: state/ndes-signer.crt
    tls: {caFile: /etc/certprov/corp-root.pem}
    dynamicChallenge: {url: "https://ndes.corp.example.com/certsrv/mscep_admin/", username: svc, passwordFile: /etc/certprov/ndes.pw}
verifiedAccess:
  enabled: true
  listen: 0.0.0.0:8443
  tls: {certFile: /etc/certprov/tls/enroll.crt, keyFile: /etc/certprov/tls/enroll.key}
  profiles:
    machine: {enrollmentDomain: example.com, caConnection: issuing, subject: {commonName: "{{.Signals.SerialNumber}}"}}
`
	cfg := writeFile(t, filepath.Join(dir, "prod.yaml"), prod)

	code, _, stderr := runCLI(t, "validate", "--config", cfg)
	if code != ExitFailure {
		t.Fatalf("online validation of missing files: exit %d", code)
	}
	for _, want := range []string{"google.credentials.file", "verifiedAccess.tls.certFile", "caConnections.issuing.certificateFile", "caConnections.ndes.tls.caFile", "journal.dsn: sslmode=prefer"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("online: stderr lacks %q:\n%s", want, stderr)
		}
	}
	// Online validation creates the SCEP signer (it is created on first start); start afresh.
	if err := os.RemoveAll(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := runCLI(t, "validate", "--offline", "--config", cfg)
	if code != ExitOK {
		t.Fatalf("offline: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	for _, want := range []string{
		cfg + ": OK offline (1 profiles, 2 CA connections, 1 Verified Access profiles)",
		"not checked offline: google.credentials.file: the file /etc/certprov/sa.json is not opened",
		"not checked offline: verifiedAccess.tls.certFile: the file /etc/certprov/tls/enroll.crt is not opened",
		"not checked offline: caConnections.issuing: the files of certificateFile, keyFile are not opened",
		"not checked offline: caConnections.ndes: the files of dynamicChallenge.passwordFile, signerCertFile, signerKeyFile, tls.caFile are not opened",
		"whether the connection can issue for a public key",
		"not checked offline: journal.dsn: whether it protects the connection",
		"no CA, Google API or Pub/Sub endpoint is contacted",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("offline: stdout lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Errorf("offline validation touched the signer's directory: %v", err)
	}

	// What the file says is still checked.
	broken := strings.Replace(prod, "url: https://ndes.corp.example.com/certsrv/mscep/mscep.dll", "url: ndes.corp.example.com", 1)
	broken = strings.Replace(broken, `commonName: "{{.Signals.SerialNumber}}"`, `commonName: "{{.Signals.SerialNumbr}}"`, 1)
	code, _, stderr = runCLI(t, "validate", "--offline", "--config", writeFile(t, filepath.Join(dir, "broken.yaml"), broken))
	if code != ExitFailure || !strings.Contains(stderr, `verifiedAccess.profiles.machine.subject.commonName: template: no field "SerialNumbr" in .Signals; did you mean "SerialNumber"?`) ||
		!strings.Contains(stderr, "caConnections.ndes.url:") {
		t.Errorf("offline misses problems: exit %d:\n%s", code, stderr)
	}
}

// TestValidateOfflineOps: the ops listener's settings are checked offline too: a socket the
// enrollment server takes is a problem at ops.listen, the profiler beyond loopback a warning.
func TestValidateOfflineOps(t *testing.T) {
	dir := t.TempDir()
	rest := `profiles: {d: {subject: {commonName: x}}}
caConnections: {ca: {type: local, certificateFile: /etc/certprov/ca.crt, keyFile: /etc/certprov/ca.key}}
`
	va := rest + `verifiedAccess:
  enabled: true
  listen: 0.0.0.0:8443
  tls: {certFile: /etc/certprov/tls.crt, keyFile: /etc/certprov/tls.key}
  profiles: {m: {enrollmentDomain: example.com, caConnection: ca, subject: {commonName: x}}}
`
	cfg := writeFile(t, filepath.Join(dir, "clash.yaml"), base+va+"ops: {listen: \":8443\"}\n")
	code, _, stderr := runCLI(t, "validate", "--offline", "--config", cfg)
	if code != ExitFailure || !strings.Contains(stderr, cfg+`: ops.listen: ":8443" is also verifiedAccess.listen ("0.0.0.0:8443")`) {
		t.Errorf("clash: exit %d:\n%s", code, stderr)
	}
	t.Setenv("CERTPROV_OPS_LISTEN", ":9090")
	cfg = writeFile(t, filepath.Join(dir, "pprof.yaml"), base+rest+"ops: {pprof: true}\n")
	code, out, stderr := runCLI(t, "validate", "--offline", "--config", cfg)
	if code != ExitOK || !strings.Contains(out, "OK offline") || !strings.Contains(stderr, cfg+`: ops.pprof: warning: the Go profiler (stacks, heap, command line) is served on ":9090"`) {
		t.Errorf("pprof: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
}

// TestConfigPrint: the effective configuration with secrets redacted, from a production file
// whose key files do not exist here.
func TestConfigPrint(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CERTPROV_JOURNAL_DSN", "postgres://certprov:pg-Secret-1@db.internal/certprov?sslmode=verify-full")
	t.Setenv("CERTPROV_CACONNECTIONS_NDES_CHALLENGE", "env-Secret-2")
	t.Setenv("CERTPROV_ENGINE_WORKERS", "3")
	t.Setenv("CERTPROV_OPS_LISTEN", ":9191") // as the container image sets it
	cfg := writeFile(t, filepath.Join(dir, "prod.yaml"), `instanceId: a1
customers: [C0abc]
pubsub: {project: corp, subscription: certprov}
google: {credentials: {type: serviceAccountKey, file: /etc/certprov/sa.json}}
journal: {type: postgres, dsn: "postgres://certprov:file-Secret-3@db.internal/certprov"}
profiles:
  wifi: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  ndes:
    type: scep
    url: https://ndes.corp.example.com/certsrv/mscep/mscep.dll
    challenge: file-Secret-4
    signerKeyFile: /var/lib/certprov/ndes-signer.key
    signerCertFile: /var/lib/certprov/ndes-signer.crt
  hook: {type: webhook, url: "https://ca.example.com/issue", headers: {Authorization: "Bearer hdr-Secret-5"}, hmacSecretFile: /etc/certprov/hmac}
`)
	code, out, stderr := runCLI(t, "config", "print", "--config", cfg)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(out, "Secret-") {
		t.Errorf("a secret is printed:\n%s", out)
	}
	for _, want := range []string{
		"dsn: postgres://certprov:[redacted]@db.internal/certprov?sslmode=verify-full",
		"challenge: '[redacted]'",
		"Authorization: '[redacted]'",
		"workers: 3",
		"signerKeyFile: /var/lib/certprov/ndes-signer.key",
		"hmacSecretFile: /etc/certprov/hmac",
		"file: /etc/certprov/sa.json",
		"retention: 720h",
		"ops:\n  listen: :9191\n  pprof: false\n  checkInterval: 15s\n  checkTimeout: 5s\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// A configuration with problems is not printed: they are.
	code, out, stderr = runCLI(t, "config", "print", "--config", writeFile(t, filepath.Join(dir, "bad.yaml"), "instanceId: [x]\n"))
	if code != ExitFailure || out != "" || !strings.Contains(stderr, "instanceId") {
		t.Errorf("bad config: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
}

func TestInitCAAndValidateCheckConnections(t *testing.T) {
	dir := t.TempDir()
	if code, out, stderr := runCLI(t, "init-ca", "--dir", filepath.Join(dir, "ca"), "--key-type", "rsa"); code != ExitOK || !strings.Contains(out, "ca.crt") {
		t.Fatalf("init-ca: exit %d %s %s", code, out, stderr)
	}
	if code, _, stderr := runCLI(t, "init-ca", "--dir", filepath.Join(dir, "ca")); code != ExitFailure || !strings.Contains(stderr, "init-ca:") {
		t.Fatalf("init-ca over an existing CA: exit %d %s", code, stderr)
	}
	if _, _, err := local.CreateCA(filepath.Join(dir, "old"), "ecdsa", "old", 1); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, filepath.Join(dir, "a.yaml"), base+`profiles: {d: {subject: {commonName: x}}}
caConnections:
  good: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}
  old: {type: local, certificateFile: old/ca.crt, keyFile: old/ca.key}
`)
	code, out, stderr := runCLI(t, "validate", "--check-connections", "--config", cfg)
	if code != ExitFailure || !strings.Contains(out, "caConnections.good: OK") || !strings.Contains(stderr, "caConnections.old: unreachable or misconfigured") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
}

// TestShippedConfigsValidOffline: the configurations in configs/ pass offline validation, where
// their key files do not exist.
func TestShippedConfigsValidOffline(t *testing.T) {
	for _, name := range []string{"example.yaml", "demo.yaml"} {
		path := filepath.Join("..", "..", "configs", name)
		if code, out, stderr := runCLI(t, "validate", "--offline", "--config", path); code != ExitOK || !strings.Contains(out, "OK offline") {
			t.Errorf("%s: exit %d\n%s%s", name, code, out, stderr)
		}
		if code, out, stderr := runCLI(t, "config", "print", "--config", path); code != ExitOK || !strings.Contains(out, "caConnections:") {
			t.Errorf("config print %s: exit %d\n%s%s", name, code, out, stderr)
		}
	}
}
