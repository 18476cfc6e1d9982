package verifiedaccess

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
)

// TestDocumentedConfiguration loads the YAML example of docs/verified-access.md and compiles its
// profiles, so that what the documentation shows stays valid.
func TestDocumentedConfiguration(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "verified-access.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## Configuration\n\n```yaml\n")
	if !ok {
		t.Fatal("no YAML example under ## Configuration")
	}
	example, _, _ := strings.Cut(rest, "```")
	dir := t.TempDir()
	if _, _, err := local.CreateCA(filepath.Join(dir, "ca"), "ecdsa", "docs CA", 0); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tls/enroll.crt", "tls/enroll.key", "sa.json"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	example = strings.ReplaceAll(example, "/etc/certprov/sa.json", "sa.json")
	full := `instanceId: a1
customers: [C01b2c3d4]
pubsub: {project: p, subscription: s}
journal: {type: memory}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
` + example
	cfg, err := config.Parse([]byte(full), dir)
	if err != nil {
		t.Fatalf("the documented configuration does not load:\n%v", err)
	}
	c := cfg.CAConnections["builtin"]
	conn, err := ca.New(c.Type, ca.Settings(c.Settings), ca.Env{Name: "builtin", BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	profiles, err := Profiles(cfg, map[string]CAConnection{"builtin": {Type: c.Type, Connector: conn}})
	if err != nil {
		t.Fatalf("the documented profiles do not compile:\n%v", err)
	}
	if len(profiles) != 2 || !cfg.VerifiedAccess.Enabled {
		t.Errorf("profiles %v", profiles)
	}
}
