package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// fullYAML uses every key of the schema; credentials.file is relative and written by writeConfig.
const fullYAML = `
instanceId: adapter-1.prod:eu
customers: [C01b2c3d4, my_customer]
shutdownGracePeriod: 20s
pubsub:
  project: corp
  subscription: projects/corp/subscriptions/certprov
  endpoint: pubsub.internal:8085
  insecure: false
  maxOutstandingMessages: 50
  streams: 4
google:
  credentials:
    type: serviceAccountKey
    file: keys/sa.json
    subject: admin@example.com
  endpoint: https://chromemanagement.example.com/
  rateLimit:
    requestsPerSecond: 2.5
    burst: 5
  requestTimeout: 10s
engine:
  workers: 4
  pollInterval: 1s
  maxPollInterval: 30s
  longWaitAfter: 20m
  longWaitPollInterval: 10m
  retry:
    initialBackoff: 500ms
    maxBackoff: 1m
    maxDuration: 2h
journal:
  type: memory
log:
  level: debug
  format: console
profiles:
  Device-WiFi:
    subject:
      commonName: "{{.Device.SerialNumber}}"
      organization: [Example Corp]
      organizationalUnit: [ChromeOS devices]
      locality: Berlin
      province: Berlin
      country: DE
    subjectAltNames:
      dns: [device.example.com, "{{.Device.SerialNumber}}.devices.example.com"]
      email: [devices@example.com]
      uri: ["urn:chromeos:device:{{.Device.DirectoryID}}"]
      upn: ["{{.Device.SerialNumber}}@example.com"]
    keyUsage: [digitalSignature, keyEncipherment]
    extendedKeyUsage: [clientAuth, 1.3.6.1.4.1.311.20.2.2]
    templateName: ChromeOSDevice
    validity: 720h
    signDeadline: 90m
    strict: true
    revokeSuperseded: {enabled: true, gracePeriod: 12h}
  user:
    subject:
      commonName: "{{.User.Email}}"
caConnections:
  Corp-CA:
    type: scep
    timeout: 45s
    url: https://ndes.example.com/certsrv/mscep/mscep.dll
    challengeURL: https://ndes.example.com/certsrv/mscep_admin/
    retries: 3
    verifyTLS: true
    Auth:
      userName: svc-ndes
`

// cleanEnv blanks every variable Load reads, so that the tests do not depend on the environment
// they run in (an empty variable counts as unset).
func cleanEnv(t testing.TB) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") || name == EmulatorHostEnv {
			t.Setenv(name, "")
		}
	}
}

// writeConfig writes content as config.yaml in a fresh directory, with keys/sa.json beside it,
// and returns the file's path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keys", "sa.json"), []byte(`{"type":"service_account"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustLoad loads content and fails the test on any error.
func mustLoad(t *testing.T, content string) *Config {
	t.Helper()
	cfg, err := Load(writeConfig(t, content))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

// loadProblems loads content and returns its problems, failing the test if it loads cleanly.
func loadProblems(t *testing.T, content string) []Problem {
	t.Helper()
	_, err := Load(writeConfig(t, content))
	if err == nil {
		t.Fatal("Load succeeded; want problems")
	}
	var pe *ProblemsError
	if !errors.As(err, &pe) {
		t.Fatalf("Load error %T %q; want *ProblemsError", err, err)
	}
	return pe.Problems
}

// problemAt returns the problem at path, failing the test with every problem if there is none.
func problemAt(t *testing.T, ps []Problem, path string) Problem {
	t.Helper()
	for _, p := range ps {
		if p.Path == path {
			return p
		}
	}
	t.Fatalf("no problem at %q; got:\n%s", path, (&ProblemsError{Problems: ps}).Error())
	return Problem{}
}

// minimalYAML is the smallest valid configuration, leaving everything else to defaults.
const minimalYAML = `
instanceId: a1
customers: [C0abc123]
pubsub: {project: p, subscription: s}
profiles:
  dev:
    subject: {commonName: "{{.Device.SerialNumber}}"}
caConnections:
  ca:
    type: local
`

func TestLoadFull(t *testing.T) {
	cleanEnv(t)
	path := writeConfig(t, fullYAML)
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	dir := filepath.Dir(path)
	want := &Config{
		InstanceID:          "adapter-1.prod:eu",
		Customers:           []string{"C01b2c3d4", "my_customer"},
		ShutdownGracePeriod: 20 * time.Second,
		PubSub: PubSub{
			Project: "corp", Subscription: "projects/corp/subscriptions/certprov",
			Endpoint: "pubsub.internal:8085", MaxOutstandingMessages: 50, Streams: 4,
		},
		Google: Google{
			Credentials: Credentials{
				Type: CredentialsServiceAccountKey, File: filepath.Join(dir, "keys", "sa.json"),
				Subject: "admin@example.com",
			},
			Endpoint:       "https://chromemanagement.example.com/",
			RateLimit:      RateLimit{RequestsPerSecond: 2.5, Burst: 5},
			RequestTimeout: 10 * time.Second,
			Directory:      DefaultDirectory(),
		},
		Engine: Engine{
			Workers: 4, PollInterval: time.Second, MaxPollInterval: 30 * time.Second,
			LongWaitAfter: 20 * time.Minute, LongWaitPollInterval: 10 * time.Minute,
			Retry: Retry{InitialBackoff: 500 * time.Millisecond, MaxBackoff: time.Minute, MaxDuration: 2 * time.Hour},
		},
		Journal: Journal{Type: JournalMemory, LeaseDuration: DefaultLeaseDuration, Retention: DefaultRetention},
		Log:     Log{Level: "debug", Format: "console"},
		Profiles: map[string]Profile{
			"Device-WiFi": {
				Subject: Subject{
					CommonName: "{{.Device.SerialNumber}}", Organization: []string{"Example Corp"},
					OrganizationalUnit: []string{"ChromeOS devices"}, Locality: "Berlin", Province: "Berlin", Country: "DE",
				},
				SubjectAltNames: SANs{
					DNS:   []string{"device.example.com", "{{.Device.SerialNumber}}.devices.example.com"},
					Email: []string{"devices@example.com"},
					URI:   []string{"urn:chromeos:device:{{.Device.DirectoryID}}"},
					UPN:   []string{"{{.Device.SerialNumber}}@example.com"},
				},
				KeyUsage:     []string{"digitalSignature", "keyEncipherment"},
				ExtKeyUsage:  []string{"clientAuth", "1.3.6.1.4.1.311.20.2.2"},
				TemplateName: "ChromeOSDevice",
				Validity:     720 * time.Hour,
				SignDeadline: 90 * time.Minute,
				Strict:       true,
				// The reason is the default's.
				RevokeSuperseded: RevokeSuperseded{Enabled: true, GracePeriod: 12 * time.Hour, Reason: DefaultRevokeReason},
			},
			"user": {
				Subject:          Subject{CommonName: "{{.User.Email}}"},
				Validity:         DefaultValidity,
				SignDeadline:     DefaultSignDeadline,
				RevokeSuperseded: DefaultProfile().RevokeSuperseded,
			},
		},
		CAConnections: map[string]CAConnection{
			"Corp-CA": {
				Type: "scep", Timeout: 45 * time.Second,
				Settings: map[string]any{
					"url":          "https://ndes.example.com/certsrv/mscep/mscep.dll",
					"challengeURL": "https://ndes.example.com/certsrv/mscep_admin/",
					"retries":      3,
					"verifyTLS":    true,
					"Auth":         map[string]any{"userName": "svc-ndes"},
				},
			},
		},
		VerifiedAccess: Defaults().VerifiedAccess,
		Ops:            Defaults().Ops,
		BaseDir:        dir,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", cfg, want)
	}
}

func TestDefaults(t *testing.T) {
	cleanEnv(t)
	cfg := mustLoad(t, minimalYAML)
	checks := []struct {
		name      string
		got, want any
	}{
		{"google.credentials.type", cfg.Google.Credentials.Type, CredentialsADC},
		{"google.rateLimit.requestsPerSecond", cfg.Google.RateLimit.RequestsPerSecond, 40.0},
		{"google.rateLimit.burst", cfg.Google.RateLimit.Burst, 20},
		{"google.requestTimeout", cfg.Google.RequestTimeout, 30 * time.Second},
		{"engine.workers", cfg.Engine.Workers, 16},
		{"engine.pollInterval", cfg.Engine.PollInterval, 2 * time.Second},
		{"engine.maxPollInterval", cfg.Engine.MaxPollInterval, time.Minute},
		{"engine.longWaitAfter", cfg.Engine.LongWaitAfter, 10 * time.Minute},
		{"engine.longWaitPollInterval", cfg.Engine.LongWaitPollInterval, 5 * time.Minute},
		{"engine.retry.initialBackoff", cfg.Engine.Retry.InitialBackoff, time.Second},
		{"engine.retry.maxBackoff", cfg.Engine.Retry.MaxBackoff, 5 * time.Minute},
		{"engine.retry.maxDuration", cfg.Engine.Retry.MaxDuration, time.Hour},
		{"journal.type", cfg.Journal.Type, "sqlite"},
		{"shutdownGracePeriod", cfg.ShutdownGracePeriod, 25 * time.Second},
		{"log.level", cfg.Log.Level, "info"},
		{"log.format", cfg.Log.Format, "json"},
		{"pubsub.maxOutstandingMessages", cfg.PubSub.MaxOutstandingMessages, 100},
		{"pubsub.streams", cfg.PubSub.Streams, 1},
		{"pubsub.insecure", cfg.PubSub.Insecure, false},
		{"profiles.dev.validity", cfg.Profiles["dev"].Validity, 8760 * time.Hour},
		{"profiles.dev.signDeadline", cfg.Profiles["dev"].SignDeadline, 24 * time.Hour},
		{"caConnections.ca.timeout", cfg.CAConnections["ca"].Timeout, 30 * time.Second},
		{"caConnections.ca settings", cfg.CAConnections["ca"].Settings, map[string]any(nil)},
		{"verifiedAccess.enabled", cfg.VerifiedAccess.Enabled, false},
		{"verifiedAccess.listen", cfg.VerifiedAccess.Listen, "127.0.0.1:8443"},
		{"verifiedAccess.apiVersion", cfg.VerifiedAccess.APIVersion, "v2"},
		{"verifiedAccess.challengeLifetime", cfg.VerifiedAccess.ChallengeLifetime, time.Minute},
		{"verifiedAccess.profiles", cfg.VerifiedAccess.Profiles, map[string]VerifiedAccessProfile(nil)},
		{"verifiedAccess.rateLimit", cfg.VerifiedAccess.RateLimit, RateLimit{RequestsPerSecond: 5, Burst: 10}},
		{"verifiedAccess.maxConcurrentChallenges", cfg.VerifiedAccess.MaxConcurrentChallenges, 16},
		{"verifiedAccess.maxConcurrentEnrollments", cfg.VerifiedAccess.MaxConcurrentEnrollments, 32},
		{"verifiedAccess.maxConcurrentPerClient", cfg.VerifiedAccess.MaxConcurrentPerClient, 4},
		{"verifiedAccess.queueTimeout", cfg.VerifiedAccess.QueueTimeout, 5 * time.Second},
		{"verifiedAccess.trustedProxies", len(cfg.VerifiedAccess.TrustedProxies), 0},
		{"ops.listen", cfg.Ops.Listen, "127.0.0.1:9090"},
		{"ops.pprof", cfg.Ops.Pprof, false},
		{"ops.checkInterval", cfg.Ops.CheckInterval, 15 * time.Second},
		{"ops.checkTimeout", cfg.Ops.CheckTimeout, 5 * time.Second},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v; want %#v", c.name, c.got, c.want)
		}
	}
}

func TestMapKeysKeepCase(t *testing.T) {
	cleanEnv(t)
	cfg := mustLoad(t, `
instanceId: a1
customers: [C0abc123]
pubsub: {project: p, subscription: s}
profiles:
  Device-WiFi: {subject: {commonName: a}}
  device-wifi: {subject: {commonName: b}, validity: 1h}
  USER_VPN: {subject: {commonName: c}}
caConnections:
  CorpCA: {type: local, certificateFile: A.crt, KeyFile: A.key}
  corpca: {type: local}
`)
	if got := slices.Sorted(func(yield func(string) bool) {
		for k := range cfg.Profiles {
			if !yield(k) {
				return
			}
		}
	}); !slices.Equal(got, []string{"Device-WiFi", "USER_VPN", "device-wifi"}) {
		t.Errorf("profile names = %q", got)
	}
	if cn := cfg.Profiles["Device-WiFi"].Subject.CommonName; cn != "a" {
		t.Errorf("Device-WiFi commonName = %q; want a", cn)
	}
	if p := cfg.Profiles["device-wifi"]; p.Subject.CommonName != "b" || p.Validity != time.Hour {
		t.Errorf("device-wifi = %+v", p)
	}
	if _, ok := cfg.CAConnections["CorpCA"]; !ok {
		t.Errorf("CA connection CorpCA missing: %v", cfg.CAConnections)
	}
	if _, ok := cfg.CAConnections["corpca"]; !ok {
		t.Errorf("CA connection corpca missing: %v", cfg.CAConnections)
	}
	want := map[string]any{"certificateFile": "A.crt", "KeyFile": "A.key"}
	if got := cfg.CAConnections["CorpCA"].Settings; !reflect.DeepEqual(got, want) {
		t.Errorf("settings keep their case: got %v, want %v", got, want)
	}
}

func TestUnknownKeys(t *testing.T) {
	cleanEnv(t)
	tests := []struct {
		name, yaml, path, message string
	}{
		{"top level", "instanceID: x\n", "instanceID", `unknown key (did you mean "instanceId"?)`},
		{"top level, no suggestion", "frobnicate: 1\n", "frobnicate", "unknown key"},
		{"section", "pubsub: {project: p, subscription: s, topic: t}\n", "pubsub.topic", "unknown key"},
		{"depth 3", "google: {credentials: {type: adc, keyFile: k}}\n", "google.credentials.keyFile", "unknown key"},
		{"depth 3 engine", "engine: {retry: {maxBackof: 1m}}\n", "engine.retry.maxBackof", `unknown key (did you mean "maxBackoff"?)`},
		{"profile", "profiles: {dev: {subject: {commonName: x}, keyUsages: []}}\n", "profiles.dev.keyUsages", `unknown key (did you mean "keyUsage"?)`},
		{"profile subject", "profiles: {dev: {subject: {commonNmae: x}}}\n", "profiles.dev.subject.commonNmae", `unknown key (did you mean "commonName"?)`},
		{"profile SANs", "profiles: {Dev: {subjectAltNames: {ip: [1.2.3.4]}}}\n", "profiles.Dev.subjectAltNames.ip", "unknown key"},
		{"CA connection typed key in wrong case", "caConnections: {ca: {Type: local}}\n", "caConnections.ca.Type", `unknown key (did you mean "type"?)`},
		{"section that is a scalar", "log: info\n", "log", "must be a mapping of keys, not \"info\""},
		{"map that is a list", "profiles: [a, b]\n", "profiles", "must be a mapping of names to entries, not a list"},
		{"entry that is a scalar", "caConnections: {ca: local}\n", "caConnections.ca", "must be a mapping of keys, not \"local\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := problemAt(t, loadProblems(t, tt.yaml), tt.path)
			if p.Message != tt.message {
				t.Errorf("message = %q; want %q", p.Message, tt.message)
			}
		})
	}
}

func TestConnectorSettingsAreNotUnknown(t *testing.T) {
	cleanEnv(t)
	cfg := mustLoad(t, minimalYAML+"    anything: {nested: [1, 2]}\n    url: https://ca.example.com\n")
	got := cfg.CAConnections["ca"].Settings
	want := map[string]any{"anything": map[string]any{"nested": []any{1, 2}}, "url": "https://ca.example.com"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("settings = %#v; want %#v", got, want)
	}
}

func TestEnvOverrides(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{
			name: "absent key",
			yaml: minimalYAML,
			env:  map[string]string{"CERTPROV_ENGINE_RETRY_MAXDURATION": "3h", "CERTPROV_PUBSUB_INSECURE": "true", "CERTPROV_PUBSUB_ENDPOINT": "127.0.0.1:1"},
			check: func(t *testing.T, c *Config) {
				if c.Engine.Retry.MaxDuration != 3*time.Hour || !c.PubSub.Insecure || c.PubSub.Endpoint != "127.0.0.1:1" {
					t.Errorf("got retry.maxDuration %s, insecure %v, endpoint %q", c.Engine.Retry.MaxDuration, c.PubSub.Insecure, c.PubSub.Endpoint)
				}
			},
		},
		{
			name: "present key wins over the file",
			yaml: minimalYAML,
			env:  map[string]string{"CERTPROV_INSTANCEID": "from-env", "CERTPROV_PUBSUB_SUBSCRIPTION": "sub-env"},
			check: func(t *testing.T, c *Config) {
				if c.InstanceID != "from-env" || c.PubSub.Subscription != "sub-env" {
					t.Errorf("instanceId %q, subscription %q", c.InstanceID, c.PubSub.Subscription)
				}
			},
		},
		{
			name: "ops listener, as the container image sets it",
			yaml: minimalYAML,
			env:  map[string]string{"CERTPROV_OPS_LISTEN": ":9090", "CERTPROV_OPS_PPROF": "true"},
			check: func(t *testing.T, c *Config) {
				if c.Ops.Listen != ":9090" || !c.Ops.Pprof {
					t.Errorf("ops.listen %q, ops.pprof %v", c.Ops.Listen, c.Ops.Pprof)
				}
			},
		},
		{
			name: "top-level duration",
			yaml: minimalYAML,
			env:  map[string]string{"CERTPROV_SHUTDOWNGRACEPERIOD": "10s"},
			check: func(t *testing.T, c *Config) {
				if c.ShutdownGracePeriod != 10*time.Second {
					t.Errorf("shutdownGracePeriod %s", c.ShutdownGracePeriod)
				}
			},
		},
		{
			name: "nested key absent from the file",
			yaml: minimalYAML,
			env: map[string]string{
				"CERTPROV_GOOGLE_CREDENTIALS_TYPE": "serviceAccountKey",
				"CERTPROV_GOOGLE_CREDENTIALS_FILE": "keys/sa.json",
				"CERTPROV_GOOGLE_RATELIMIT_BURST":  "7",
			},
			check: func(t *testing.T, c *Config) {
				if c.Google.Credentials.Type != CredentialsServiceAccountKey || c.Google.RateLimit.Burst != 7 {
					t.Errorf("credentials %+v, burst %d", c.Google.Credentials, c.Google.RateLimit.Burst)
				}
				if want := filepath.Join(c.BaseDir, "keys", "sa.json"); c.Google.Credentials.File != want {
					t.Errorf("credentials file %q; want %q (relative to the config file)", c.Google.Credentials.File, want)
				}
			},
		},
		{
			name: "list from a comma-separated value",
			yaml: minimalYAML,
			env:  map[string]string{"CERTPROV_CUSTOMERS": "C0abc123, C0def456"},
			check: func(t *testing.T, c *Config) {
				if !slices.Equal(c.Customers, []string{"C0abc123", "C0def456"}) {
					t.Errorf("customers %q", c.Customers)
				}
			},
		},
		{
			name: "a YAML string is a one-item list, commas and all",
			yaml: strings.Replace(minimalYAML, `subject: {commonName: "{{.Device.SerialNumber}}"}`,
				`subject: {commonName: x, organization: "Example Corp, Inc.", organizationalUnit: Devices}`, 1),
			check: func(t *testing.T, c *Config) {
				s := c.Profiles["dev"].Subject
				if !slices.Equal(s.Organization, []string{"Example Corp, Inc."}) || !slices.Equal(s.OrganizationalUnit, []string{"Devices"}) {
					t.Errorf("subject %+v", s)
				}
			},
		},
		{
			name: "empty variable is unset",
			yaml: minimalYAML,
			env:  map[string]string{"CERTPROV_INSTANCEID": ""},
			check: func(t *testing.T, c *Config) {
				if c.InstanceID != "a1" {
					t.Errorf("instanceId %q", c.InstanceID)
				}
			},
		},
		{
			name: "profile and CA connection entries",
			yaml: minimalYAML + "    port: 443\n    verify: true\n    url: https://a\n    auth: {password: file-pw}\n",
			env: map[string]string{
				"CERTPROV_PROFILES_DEV_VALIDITY":           "48h",
				"CERTPROV_PROFILES_DEV_SUBJECT_COMMONNAME": "fixed",
				"CERTPROV_CACONNECTIONS_CA_TIMEOUT":        "5s",
				"CERTPROV_CACONNECTIONS_CA_PORT":           "8443",
				"CERTPROV_CACONNECTIONS_CA_VERIFY":         "false",
				"CERTPROV_CACONNECTIONS_CA_AUTH_PASSWORD":  "env-pw",
			},
			check: func(t *testing.T, c *Config) {
				p := c.Profiles["dev"]
				if p.Validity != 48*time.Hour || p.Subject.CommonName != "fixed" || p.SignDeadline != DefaultSignDeadline {
					t.Errorf("profile %+v", p)
				}
				ca := c.CAConnections["ca"]
				want := map[string]any{"port": 8443, "verify": false, "url": "https://a", "auth": map[string]any{"password": "env-pw"}}
				if ca.Timeout != 5*time.Second || !reflect.DeepEqual(ca.Settings, want) {
					t.Errorf("CA connection %+v; want settings %v", ca, want)
				}
			},
		},
		{
			name: "entry names become upper case with _",
			yaml: strings.Replace(minimalYAML, "  dev:", "  Device-WiFi.v2:", 1),
			env:  map[string]string{"CERTPROV_PROFILES_DEVICE_WIFI_V2_TEMPLATENAME": "T"},
			check: func(t *testing.T, c *Config) {
				if c.Profiles["Device-WiFi.v2"].TemplateName != "T" {
					t.Errorf("profiles %+v", c.Profiles)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			tt.check(t, mustLoad(t, tt.yaml))
		})
	}
}

func TestEnvProblems(t *testing.T) {
	tests := []struct {
		name, yaml string
		env        map[string]string
		path, msg  string
	}{
		{"bad int", minimalYAML, map[string]string{"CERTPROV_ENGINE_WORKERS": "many"}, "engine.workers",
			`must be a whole number, got "many" (from environment variable CERTPROV_ENGINE_WORKERS)`},
		{"bad duration", minimalYAML, map[string]string{"CERTPROV_PROFILES_DEV_SIGNDEADLINE": "soon"}, "profiles.dev.signDeadline",
			`invalid duration "soon": use a number with a unit (ms, s, m, h), e.g. 30s, 90m, 24h (from environment variable CERTPROV_PROFILES_DEV_SIGNDEADLINE)`},
		{"bad setting type", minimalYAML + "    port: 443\n", map[string]string{"CERTPROV_CACONNECTIONS_CA_PORT": "https"}, "caConnections.ca.port",
			`must be a whole number, got "https" (from environment variable CERTPROV_CACONNECTIONS_CA_PORT)`},
		{"ambiguous entry names", minimalYAML + "  a-b: {type: x}\n  a_b: {type: y}\n", map[string]string{"CERTPROV_CACONNECTIONS_A_B_TYPE": "z"}, "caConnections.a-b.type",
			"environment variable CERTPROV_CACONNECTIONS_A_B_TYPE is ambiguous: it names caConnections.a-b.type and caConnections.a_b.type; rename an entry or set the value in the file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			p := problemAt(t, loadProblems(t, tt.yaml), tt.path)
			if p.Message != tt.msg {
				t.Errorf("message = %q; want %q", p.Message, tt.msg)
			}
		})
	}
}

func TestAmbiguousEnvUnsetIsFine(t *testing.T) {
	cleanEnv(t)
	cfg := mustLoad(t, minimalYAML+"  a-b: {type: x}\n  a_b: {type: y}\n")
	if cfg.CAConnections["a-b"].Type != "x" || cfg.CAConnections["a_b"].Type != "y" {
		t.Errorf("CA connections %+v", cfg.CAConnections)
	}
}

func TestPubSubEmulatorHost(t *testing.T) {
	tests := []struct {
		name, yaml, envEndpoint string
		wantEndpoint            string
		wantInsecure            bool
	}{
		{"sets an empty endpoint", minimalYAML, "", "localhost:8085", true},
		{"file endpoint wins", minimalYAML + "pubsub: {project: p, subscription: s, endpoint: 'pubsub.internal:443'}\n", "", "pubsub.internal:443", false},
		{"CERTPROV_PUBSUB_ENDPOINT wins", minimalYAML, "other:1", "other:1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			t.Setenv(EmulatorHostEnv, "localhost:8085")
			if tt.envEndpoint != "" {
				t.Setenv("CERTPROV_PUBSUB_ENDPOINT", tt.envEndpoint)
			}
			// A later "pubsub:" key replaces the earlier one in YAML, which our test relies on.
			cfg, err := Parse([]byte(dedupPubSub(tt.yaml)), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if cfg.PubSub.Endpoint != tt.wantEndpoint || cfg.PubSub.Insecure != tt.wantInsecure {
				t.Errorf("endpoint %q insecure %v; want %q %v", cfg.PubSub.Endpoint, cfg.PubSub.Insecure, tt.wantEndpoint, tt.wantInsecure)
			}
		})
	}
}

// dedupPubSub keeps only the last top-level "pubsub:" line, since YAML forbids duplicate keys.
func dedupPubSub(s string) string {
	lines := strings.Split(s, "\n")
	last := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "pubsub:") {
			last = i
		}
	}
	var out []string
	for i, l := range lines {
		if strings.HasPrefix(l, "pubsub:") && i != last {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func TestDurations(t *testing.T) {
	tests := []struct {
		value string
		want  time.Duration
		msg   string
	}{
		{"30s", 30 * time.Second, ""},
		{"90m", 90 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"'24h'", 24 * time.Hour, ""},
		{"250ms", 250 * time.Millisecond, ""},
		{"24", 0, "invalid duration 24: a duration needs a unit (ms, s, m, h), e.g. 30s, 90m, 24h"},
		{"1.5", 0, "invalid duration 1.5: a duration needs a unit (ms, s, m, h), e.g. 30s, 90m, 24h"},
		{"1d", 0, `invalid duration "1d": use a number with a unit (ms, s, m, h), e.g. 30s, 90m, 24h`},
		{"''", 0, `invalid duration "": use a number with a unit (ms, s, m, h), e.g. 30s, 90m, 24h`},
		{"[1h]", 0, "invalid duration a list: a duration needs a unit (ms, s, m, h), e.g. 30s, 90m, 24h"},
		{"0s", 0, "must be a positive duration such as 30s, 90m or 24h"},
		{"-1m", 0, "must be a positive duration such as 30s, 90m or 24h"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			cleanEnv(t)
			yaml := minimalYAML + "engine: {retry: {maxDuration: " + tt.value + "}}\n"
			if tt.msg == "" {
				if got := mustLoad(t, yaml).Engine.Retry.MaxDuration; got != tt.want {
					t.Errorf("got %s; want %s", got, tt.want)
				}
				return
			}
			ps := loadProblems(t, yaml)
			p := problemAt(t, ps, "engine.retry.maxDuration")
			if p.Message != tt.msg {
				t.Errorf("message = %q; want %q", p.Message, tt.msg)
			}
			if n := countAt(ps, "engine.retry.maxDuration"); n != 1 {
				t.Errorf("%d problems at the path; want 1 (decode problems are not repeated by validation)", n)
			}
		})
	}
}

func countAt(ps []Problem, path string) int {
	n := 0
	for _, p := range ps {
		if p.Path == path {
			n++
		}
	}
	return n
}

func TestTypeProblems(t *testing.T) {
	cleanEnv(t)
	ps := loadProblems(t, minimalYAML+`
engine: {workers: lots}
google: {rateLimit: {requestsPerSecond: fast, burst: 2.5}}
log: {level: [debug]}
journal: {type: {name: memory}}
`)
	want := map[string]string{
		"engine.workers":                     `must be a whole number, got "lots"`,
		"google.rateLimit.requestsPerSecond": `must be a number, got "fast"`,
		"google.rateLimit.burst":             "must be a whole number, got 2.5",
		"log.level":                          "must be a string, got a list",
		"journal.type":                       "must be a string, got a mapping",
	}
	for path, msg := range want {
		if p := problemAt(t, ps, path); p.Message != msg {
			t.Errorf("%s: %q; want %q", path, p.Message, msg)
		}
	}
}

func TestStrictIsABoolean(t *testing.T) {
	cleanEnv(t)
	ps := loadProblems(t, strings.Replace(minimalYAML, `subject: {commonName: "{{.Device.SerialNumber}}"}`,
		`subject: {commonName: "{{.Device.SerialNumber}}"}
    strict: maybe`, 1))
	if p := problemAt(t, ps, "profiles.dev.strict"); !strings.Contains(p.Message, "true or false") {
		t.Errorf("profiles.dev.strict: %q", p.Message)
	}
}

func TestRelativePaths(t *testing.T) {
	cleanEnv(t)
	path := writeConfig(t, minimalYAML+"google: {credentials: {type: selfSignedJWT, file: keys/sa.json}}\n")
	// Load from another working directory: the path must still resolve against the file.
	t.Chdir(t.TempDir())
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	if cfg.BaseDir != dir {
		t.Errorf("BaseDir %q; want %q", cfg.BaseDir, dir)
	}
	if want := filepath.Join(dir, "keys", "sa.json"); cfg.Google.Credentials.File != want {
		t.Errorf("credentials file %q; want %q", cfg.Google.Credentials.File, want)
	}
	if got := cfg.ResolvePath("/abs/x"); got != "/abs/x" {
		t.Errorf("ResolvePath(abs) = %q", got)
	}

	// A relative config path works too, and a missing key file names the resolved path.
	t.Chdir(dir)
	ps := loadProblems(t, minimalYAML+"google: {credentials: {type: serviceAccountKey, file: nope.json}}\n")
	p := problemAt(t, ps, "google.credentials.file")
	if !strings.Contains(p.Message, filepath.Join(dir, "nope.json")) && !strings.Contains(p.Message, "nope.json") {
		t.Errorf("message %q does not name the file", p.Message)
	}
	if _, err := Load("config.yaml"); err != nil {
		t.Errorf("Load(relative): %v", err)
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	cleanEnv(t)
	ps := loadProblems(t, `
instanceId: ""
customers: [bogus]
pubsub: {topic: t}
engine: {workers: 0, pollInterval: 1x}
log: {level: loud}
profiles:
  dev:
    subject: {commonNmae: x}
    validity: 0s
caConnections:
  ca: {timeout: 1s}
`)
	paths := []string{
		"pubsub.topic", "profiles.dev.subject.commonNmae", // unknown keys
		"engine.pollInterval",                                                 // decoding
		"instanceId", "customers[0]", "pubsub.project", "pubsub.subscription", // validation
		"engine.workers", "log.level", "profiles.dev.validity", "profiles.dev", "caConnections.ca.type",
	}
	for _, path := range paths {
		problemAt(t, ps, path)
	}
	var pe error = &ProblemsError{Problems: ps}
	if lines := strings.Split(pe.Error(), "\n"); len(lines) != len(ps) {
		t.Errorf("Error() has %d lines for %d problems", len(lines), len(ps))
	}
}

func TestProblemsErrorFormat(t *testing.T) {
	err := &ProblemsError{Problems: []Problem{
		{Path: "profiles.dev.subject.commonNmae", Message: "unknown key"},
		{Path: "", Message: "invalid YAML: x"},
		{Path: "engine.workers", Message: "must be between 1 and 1024, got 0"},
	}}
	want := "profiles.dev.subject.commonNmae: unknown key\ninvalid YAML: x\nengine.workers: must be between 1 and 1024, got 0"
	if err.Error() != want {
		t.Errorf("Error() =\n%s\nwant\n%s", err.Error(), want)
	}
}

func TestDocumentProblems(t *testing.T) {
	cleanEnv(t)
	tests := []struct{ name, yaml, msg string }{
		{"syntax", "instanceId: [unclosed\n", "invalid YAML"},
		{"duplicate key", "instanceId: a\ninstanceId: b\n", "invalid YAML"},
		{"not a mapping", "- a\n- b\n", "the configuration must be a YAML mapping, not a list"},
		{"empty", "", "at least one profile is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := loadProblems(t, tt.yaml)
			found := false
			for _, p := range ps {
				found = found || strings.Contains(p.Message, tt.msg)
			}
			if !found {
				t.Errorf("no problem mentions %q: %v", tt.msg, ps)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || errors.As(err, new(*ProblemsError)) {
		t.Errorf("missing file: %v; want a plain error", err)
	}
	if _, err := Load(""); err == nil {
		t.Error("Load(\"\") succeeded")
	}
}

// TestShippedConfigs loads the files in configs/: what the demo and the documentation show
// must stay loadable.
func TestShippedConfigs(t *testing.T) {
	t.Run("demo", func(t *testing.T) {
		cleanEnv(t)
		cfg, err := Load(filepath.Join("..", "..", "configs", "demo.yaml"))
		if err != nil {
			t.Fatalf("demo.yaml: %v", err)
		}
		if cfg.InstanceID != "demo-adapter-1" || cfg.Google.Credentials.Type != CredentialsNone || !cfg.PubSub.Insecure {
			t.Errorf("demo.yaml: %+v", cfg)
		}
		for _, name := range []string{"device", "user"} {
			if _, ok := cfg.Profiles[name]; !ok {
				t.Errorf("demo.yaml lacks profile %q", name)
			}
		}
		b := cfg.CAConnections["builtin"]
		if b.Type != "local" || b.Settings["certificateFile"] != "../.demo/ca/ca.crt" || b.Settings["keyFile"] != "../.demo/ca/ca.key" {
			t.Errorf("demo.yaml builtin CA: %+v", b)
		}
		if cfg.Engine.PollInterval != 200*time.Millisecond {
			t.Errorf("demo.yaml pollInterval %s", cfg.Engine.PollInterval)
		}
	})
	t.Run("example", func(t *testing.T) {
		cleanEnv(t)
		// The example points at /etc/certprov; substitute a key file that exists here.
		key := filepath.Join(t.TempDir(), "sa.json")
		if err := os.WriteFile(key, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("CERTPROV_GOOGLE_CREDENTIALS_FILE", key)
		cfg, err := Load(filepath.Join("..", "..", "configs", "example.yaml"))
		if err != nil {
			t.Fatalf("example.yaml: %v", err)
		}
		if cfg.Google.Credentials.Type != CredentialsServiceAccountKey || len(cfg.Profiles) < 3 {
			t.Errorf("example.yaml: %+v", cfg)
		}
	})
}

func TestAuditPath(t *testing.T) {
	cleanEnv(t)
	if cfg := mustLoad(t, minimalYAML); cfg.Audit.Path != "" {
		t.Errorf("default audit.path %q; want empty (standard output)", cfg.Audit.Path)
	}
	if cfg := mustLoad(t, minimalYAML+"audit: {path: \"-\"}\n"); cfg.Audit.Path != "-" {
		t.Errorf("audit.path - became %q", cfg.Audit.Path)
	}
	path := writeConfig(t, minimalYAML+"audit: {path: logs/audit.jsonl}\n")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(filepath.Dir(path), "logs", "audit.jsonl"); cfg.Audit.Path != want {
		t.Errorf("audit.path %q; want %q (relative to the file)", cfg.Audit.Path, want)
	}
	t.Setenv("CERTPROV_AUDIT_PATH", "/var/log/certprov/audit.jsonl")
	if cfg := mustLoad(t, minimalYAML); cfg.Audit.Path != "/var/log/certprov/audit.jsonl" {
		t.Errorf("CERTPROV_AUDIT_PATH gave %q", cfg.Audit.Path)
	}
	t.Setenv("CERTPROV_AUDIT_PATH", "")
	p := problemAt(t, loadProblems(t, minimalYAML+"journal: {path: /var/lib/certprov/j.db}\naudit: {path: /var/lib/certprov/j.db}\n"), "audit.path")
	if !strings.Contains(p.Message, "journal.path") {
		t.Errorf("message %q", p.Message)
	}
}
