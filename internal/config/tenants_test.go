package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tenantsYAML has two valid tenants; tests append to it or replace parts of it.
const tenantsYAML = `
instanceId: a1
journal: {type: sqlite, path: state/journal.db}
tenants:
  - name: acme
    customers: [C0acme01]
    pubsub: {project: p, subscription: acme}
    google: {credentials: {type: serviceAccountKey, file: keys/sa.json}, rateLimit: {requestsPerSecond: 3, burst: 6}}
    profiles:
      Device-WiFi: {subject: {commonName: "{{.Device.SerialNumber}}"}}
    caConnections:
      Corp: {type: local, certificateFile: a.crt, keyFile: a.key}
  - name: beta
    customers: [C0beta01, C0beta02]
    pubsub: {project: p, subscription: projects/q/subscriptions/beta}
    google: {credentials: {type: adc}}
    profiles:
      user: {subject: {commonName: "{{.User.Email}}"}, validity: 720h}
    caConnections:
      corp: {type: webhook, url: "https://ca.beta.example/issue", timeout: 10s}
`

// TestTenantsLoad: each tenant's keys are decoded with their defaults and their map keys' case,
// relative files resolve against the file's directory, and each tenant has its own journal part.
func TestTenantsLoad(t *testing.T) {
	cleanEnv(t)
	path := writeConfig(t, tenantsYAML)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	ts := cfg.AllTenants()
	if len(ts) != 2 || ts[0].Name != "acme" || ts[1].Name != "beta" || ts[0].Implicit || ts[1].Path != "tenants[1]" {
		t.Fatalf("tenants %+v", ts)
	}
	a, b := ts[0], ts[1]
	if a.Google.RateLimit != (RateLimit{3, 6}) || a.Google.RequestTimeout != DefaultRequestTimeout || a.PubSub.MaxOutstandingMessages != DefaultMaxOutstandingMessages || a.PubSub.Streams != DefaultStreams {
		t.Errorf("acme google %+v pubsub %+v: want its rate limit and the defaults", a.Google, a.PubSub)
	}
	if a.Google.Credentials.File != filepath.Join(dir, "keys", "sa.json") {
		t.Errorf("acme key file %q", a.Google.Credentials.File)
	}
	if _, ok := a.Profiles["Device-WiFi"]; !ok || a.CAConnections["Corp"].Settings["certificateFile"] != "a.crt" || a.CAConnections["Corp"].Timeout != DefaultCATimeout {
		t.Errorf("acme profiles %v connections %+v", a.Profiles, a.CAConnections)
	}
	if b.Profiles["user"].Validity.Hours() != 720 || b.Profiles["user"].SignDeadline != DefaultSignDeadline || b.Google.RateLimit.RequestsPerSecond != DefaultRateLimit {
		t.Errorf("beta %+v", b)
	}
	if j := cfg.TenantJournal(a); j.Path != filepath.Join(dir, "state", "journal.acme.db") || j.Tenant != "acme" {
		t.Errorf("acme journal %+v", j)
	}
	files := cfg.Files()
	if len(files) != 1 || files[0].Path != "tenants[0].google.credentials.file" {
		t.Errorf("files %+v", files)
	}
}

// TestSingleFormIsTheImplicitTenant: without tenants the top-level keys are one tenant, named
// ImplicitTenant, whose journal is journal itself and whose keys keep their top-level paths.
func TestSingleFormIsTheImplicitTenant(t *testing.T) {
	cleanEnv(t)
	cfg := mustLoad(t, minimalYAML+"journal: {path: j.db}\n")
	ts := cfg.AllTenants()
	if len(ts) != 1 || !ts[0].Implicit || ts[0].Name != ImplicitTenant || ts[0].Path != "" || cfg.HasTenants() {
		t.Fatalf("tenants %+v", ts)
	}
	if ts[0].Customers[0] != "C0abc123" || ts[0].PubSub.Subscription != "s" || len(ts[0].Profiles) != 1 {
		t.Errorf("implicit tenant %+v", ts[0])
	}
	if j := cfg.TenantJournal(ts[0]); j != cfg.Journal {
		t.Errorf("implicit journal %+v, want journal %+v", j, cfg.Journal)
	}
	if got := ts[0].Key("pubsub.subscription"); got != "pubsub.subscription" {
		t.Errorf("key %q", got)
	}
}

func TestTenantsProblems(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		path string
		msg  string // a substring of the message
	}{
		{"both forms: customers", tenantsYAML + "customers: [C0abc123]\n", "customers", "must not be set with tenants"},
		{"both forms: profiles", tenantsYAML + "profiles: {x: {subject: {commonName: x}}}\n", "profiles", "must not be set with tenants"},
		{"both forms: caConnections", tenantsYAML + "caConnections: {x: {type: local}}\n", "caConnections", "must not be set with tenants"},
		{"both forms: pubsub", tenantsYAML + "pubsub: {project: p, subscription: s}\n", "pubsub", "must not be set with tenants"},
		{"both forms: google", tenantsYAML + "google: {requestTimeout: 5s}\n", "google", "must not be set with tenants"},
		{"verified access", tenantsYAML + "verifiedAccess: {enabled: true}\n", "verifiedAccess.enabled", "single-customer form only"},
		{"duplicate name", strings.Replace(tenantsYAML, "name: beta", "name: acme", 1), "tenants[1].name", `"acme" is the name of tenants[0] too`},
		{"bad name", strings.Replace(tenantsYAML, "name: beta", "name: Beta-1", 1), "tenants[1].name", "lower-case letters"},
		{"long name", strings.Replace(tenantsYAML, "name: beta", "name: "+strings.Repeat("b", 32), 1), "tenants[1].name", "at most 31"},
		{"missing name", strings.Replace(tenantsYAML, "  - name: beta\n    customers", "  - customers", 1), "tenants[1].name", "must not be empty"},
		{"customer in two tenants", strings.Replace(tenantsYAML, "C0beta02", "C0acme01", 1), "tenants[1].customers[1]", "served by tenants[0] too"},
		{"my_customer", strings.Replace(tenantsYAML, "C0beta02", "my_customer", 1), "tenants[1].customers[1]", "cannot be told apart"},
		{"no customers", strings.Replace(tenantsYAML, "customers: [C0beta01, C0beta02]", "customers: []", 1), "tenants[1].customers", "at least one customer id"},
		{"bad customer", strings.Replace(tenantsYAML, "C0beta02", "nope", 1), "tenants[1].customers[1]", "is not a customer id"},
		{"subscription shared", strings.Replace(tenantsYAML, "projects/q/subscriptions/beta", "projects/p/subscriptions/acme", 1), "tenants[1].pubsub.subscription", "is the subscription of tenants[0] too"},
		{"missing subscription", strings.Replace(tenantsYAML, "subscription: projects/q/subscriptions/beta", "subscription: \"\"", 1), "tenants[1].pubsub.subscription", "must not be empty"},
		{"missing project", strings.Replace(tenantsYAML, "{project: p, subscription: acme}", "{subscription: acme}", 1), "tenants[0].pubsub.project", "must not be empty"},
		{"bad credentials type", strings.Replace(tenantsYAML, "type: adc", "type: magic", 1), "tenants[1].google.credentials.type", "is not one of"},
		{"key file missing", strings.Replace(tenantsYAML, "file: keys/sa.json", "file: keys/other.json", 1), "tenants[0].google.credentials.file", "cannot use"},
		{"bad rate limit", strings.Replace(tenantsYAML, "requestsPerSecond: 3", "requestsPerSecond: 0", 1), "tenants[0].google.rateLimit.requestsPerSecond", "positive"},
		{"no profiles", strings.Replace(tenantsYAML, "    profiles:\n      user: {subject: {commonName: \"{{.User.Email}}\"}, validity: 720h}\n", "", 1), "tenants[1].profiles", "at least one profile"},
		{"bad profile", strings.Replace(tenantsYAML, "validity: 720h", "validity: -1h", 1), "tenants[1].profiles.user.validity", "positive duration"},
		{"connection without type", strings.Replace(tenantsYAML, "type: webhook, ", "", 1), "tenants[1].caConnections.corp.type", "must not be empty"},
		{"unknown key", strings.Replace(tenantsYAML, "pubsub: {project: p, subscription: acme}", "pubsub: {project: p, subscription: acme, subscripton: x}", 1), "tenants[0].pubsub.subscripton", "did you mean"},
		{"unknown tenant key", tenantsYAML + "    journal: {path: x}\n", "tenants[1].journal", "unknown key"},
		{"not a list", "instanceId: a1\ntenants: {acme: {}}\n", "tenants", "must be a list"},
		{"bad duration", strings.Replace(tenantsYAML, "timeout: 10s", "timeout: 10", 1), "tenants[1].caConnections.corp.timeout", "needs a unit"},
		{"routes without the tenant's directory", strings.Replace(tenantsYAML, "validity: 720h}", "validity: 720h, routes: [{orgUnit: /Sales, validity: 24h}]}", 1), "tenants[1].profiles.user.routes", "google.directory.enabled"},
		{"route to another tenant's connection", strings.Replace(strings.Replace(tenantsYAML, "validity: 720h}", "validity: 720h, routes: [{orgUnit: /Sales, caConnection: Corp}]}", 1), "google: {credentials: {type: adc}}", "google: {credentials: {type: adc}, directory: {enabled: true}}", 1), "tenants[1].profiles.user.routes[0].caConnection", `no caConnections entry is named "Corp"`},
		{"tenant directory subject", strings.Replace(tenantsYAML, "google: {credentials: {type: adc}}", "google: {credentials: {type: adc}, directory: {enabled: true, subject: admin}}", 1), "tenants[1].google.directory.subject", "e-mail address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			p := problemAt(t, loadProblems(t, tt.yaml), tt.path)
			if !strings.Contains(p.Message, tt.msg) {
				t.Errorf("%s: %q, want it to say %q", tt.path, p.Message, tt.msg)
			}
		})
	}
}

// TestTenantsEnv: a tenant's keys are overridden by variables named after the tenant, its CA
// connections' settings too; the single-customer form's variables are refused beside tenants.
func TestTenantsEnv(t *testing.T) {
	cleanEnv(t)
	t.Setenv("CERTPROV_TENANTS_BETA_GOOGLE_RATELIMIT_REQUESTSPERSECOND", "7")
	t.Setenv("CERTPROV_TENANTS_BETA_CUSTOMERS", "C0beta09")
	t.Setenv("CERTPROV_TENANTS_BETA_CACONNECTIONS_CORP_URL", "https://ca2.beta.example/issue")
	t.Setenv("CERTPROV_TENANTS_BETA_PROFILES_USER_VALIDITY", "48h")
	cfg := mustLoad(t, tenantsYAML)
	b := cfg.Tenants[1]
	if b.Google.RateLimit.RequestsPerSecond != 7 || len(b.Customers) != 1 || b.Customers[0] != "C0beta09" ||
		b.CAConnections["corp"].Settings["url"] != "https://ca2.beta.example/issue" || b.Profiles["user"].Validity.Hours() != 48 {
		t.Errorf("beta from the environment: %+v", b)
	}
	if a := cfg.Tenants[0]; a.Google.RateLimit.RequestsPerSecond != 3 || a.Customers[0] != "C0acme01" {
		t.Errorf("acme changed by beta's variables: %+v", a)
	}

	t.Setenv("CERTPROV_TENANTS_BETA_GOOGLE_REQUESTTIMEOUT", "soon")
	p := problemAt(t, loadProblems(t, tenantsYAML), "tenants[1].google.requestTimeout")
	if !strings.Contains(p.Message, "CERTPROV_TENANTS_BETA_GOOGLE_REQUESTTIMEOUT") {
		t.Errorf("message %q does not name the variable", p.Message)
	}
	t.Setenv("CERTPROV_TENANTS_BETA_GOOGLE_REQUESTTIMEOUT", "")

	t.Setenv("CERTPROV_PUBSUB_SUBSCRIPTION", "s")
	if p := problemAt(t, loadProblems(t, tenantsYAML), "pubsub"); !strings.Contains(p.Message, "environment") {
		t.Errorf("message %q", p.Message)
	}
}

// TestTenantsEmulatorHost: PUBSUB_EMULATOR_HOST points every tenant without an endpoint at the
// emulator.
func TestTenantsEmulatorHost(t *testing.T) {
	cleanEnv(t)
	t.Setenv(EmulatorHostEnv, "127.0.0.1:8085")
	cfg := mustLoad(t, strings.Replace(tenantsYAML, "{project: p, subscription: acme}", "{project: p, subscription: acme, endpoint: \"10.0.0.1:8085\"}", 1))
	if a, b := cfg.Tenants[0].PubSub, cfg.Tenants[1].PubSub; a.Endpoint != "10.0.0.1:8085" || a.Insecure || b.Endpoint != "127.0.0.1:8085" || !b.Insecure {
		t.Errorf("acme %+v beta %+v", a, b)
	}
	if cfg.PubSub.Endpoint != "" {
		t.Errorf("top-level pubsub set to %+v beside tenants", cfg.PubSub)
	}
}

// TestTenantsPrintRedacted: config print lists the tenants, their CA connections' secrets
// redacted.
func TestTenantsPrintRedacted(t *testing.T) {
	cleanEnv(t)
	cfg := mustLoad(t, strings.Replace(tenantsYAML, `url: "https://ca.beta.example/issue"`, `url: "https://ca.beta.example/issue", headers: {Authorization: "Bearer s3cret-beta"}`, 1))
	out, err := cfg.MarshalRedacted()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret-beta") || !strings.Contains(string(out), "- name: beta") {
		t.Errorf("config print:\n%s", out)
	}
	back, err := Parse(out, filepath.Dir(writeConfig(t, "")))
	if err == nil && len(back.Tenants) != 2 {
		t.Errorf("printed tenants read back as %d", len(back.Tenants))
	}
}

// TestTenantsExample: configs/tenants.example.yaml loads, with key files substituted through the
// tenants' environment variables, and has no warnings.
func TestTenantsExample(t *testing.T) {
	cleanEnv(t)
	key := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(key, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CERTPROV_TENANTS_ACME_GOOGLE_CREDENTIALS_FILE", key)
	cfg, err := Load(filepath.Join("..", "..", "configs", "tenants.example.yaml"))
	if err != nil {
		t.Fatalf("tenants.example.yaml: %v", err)
	}
	if len(cfg.Tenants) != 2 || cfg.Tenants[0].Google.Credentials.File != key || len(cfg.Tenants[1].Customers) != 2 {
		t.Errorf("tenants.example.yaml: %+v", cfg.Tenants)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Errorf("warnings: %v", w)
	}
}
