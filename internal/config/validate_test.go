package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// validConfig returns a configuration that passes Validate, for tests to break one rule at a time.
func validConfig(t *testing.T) *Config {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "sa.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	c.BaseDir = dir
	c.InstanceID = "adapter-1"
	c.Customers = []string{"C0abc123"}
	c.PubSub.Project = "p"
	c.PubSub.Subscription = "s"
	c.Google.Credentials = Credentials{Type: CredentialsServiceAccountKey, File: "sa.json"}
	c.Profiles = map[string]Profile{"dev": {
		Subject:      Subject{CommonName: "{{.Device.SerialNumber}}"},
		KeyUsage:     []string{KeyUsageDigitalSignature},
		ExtKeyUsage:  []string{ExtKeyUsageClientAuth},
		Validity:     DefaultValidity,
		SignDeadline: DefaultSignDeadline,
	}}
	c.CAConnections = map[string]CAConnection{"ca": {Type: "local", Timeout: DefaultCATimeout}}
	c.Journal.Type = JournalMemory
	return &c
}

// editProfile applies fn to profile "dev".
func editProfile(fn func(p *Profile)) func(*Config) {
	return func(c *Config) {
		p := c.Profiles["dev"]
		fn(&p)
		c.Profiles["dev"] = p
	}
}

func TestValidateValid(t *testing.T) {
	if ps := validConfig(t).Validate(); len(ps) != 0 {
		t.Fatalf("valid config has problems: %v", ps)
	}
}

func TestValidateRules(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		path string
		msg  string // a substring of the message
	}{
		{"instanceId empty", func(c *Config) { c.InstanceID = "" }, "instanceId", "must not be empty"},
		{"instanceId charset", func(c *Config) { c.InstanceID = "a b" }, "instanceId", "only letters"},
		{"instanceId slash", func(c *Config) { c.InstanceID = "a/b" }, "instanceId", "only letters"},
		{"instanceId length", func(c *Config) { c.InstanceID = strings.Repeat("a", 129) }, "instanceId", "at most 128"},
		{"customers empty", func(c *Config) { c.Customers = nil }, "customers", "at least one"},
		{"customer implausible", func(c *Config) { c.Customers = []string{"C0abc123", "example.com"} }, "customers[1]", "not a customer id"},
		{"customer lower c", func(c *Config) { c.Customers = []string{"c0abc123"} }, "customers[0]", "not a customer id"},
		{"customer twice", func(c *Config) { c.Customers = []string{"C0abc123", "C0abc123"} }, "customers[1]", "twice"},
		{"pubsub project", func(c *Config) { c.PubSub.Project = "" }, "pubsub.project", "must not be empty"},
		{"ops listen without port", func(c *Config) { c.Ops.Listen = "127.0.0.1" }, "ops.listen", "must be host:port"},
		{"ops listen port", func(c *Config) { c.Ops.Listen = "127.0.0.1:http-alt" }, "ops.listen", "not a port number"},
		{"ops listen port range", func(c *Config) { c.Ops.Listen = ":65536" }, "ops.listen", "not a port number"},
		{"ops check interval", func(c *Config) { c.Ops.CheckInterval = 0 }, "ops.checkInterval", "positive duration"},
		{"ops check timeout", func(c *Config) { c.Ops.CheckTimeout = -time.Second }, "ops.checkTimeout", "positive duration"},
		{"pubsub subscription", func(c *Config) { c.PubSub.Subscription = " " }, "pubsub.subscription", "must not be empty"},
		{"pubsub subscription path", func(c *Config) { c.PubSub.Subscription = "projects/p/topics/t" }, "pubsub.subscription", "projects/PROJECT/subscriptions/ID"},
		{"pubsub endpoint", func(c *Config) { c.PubSub.Endpoint = "http://localhost:8085" }, "pubsub.endpoint", "host:port"},
		{"pubsub insecure alone", func(c *Config) { c.PubSub.Insecure = true }, "pubsub.insecure", "only applies"},
		{"pubsub outstanding", func(c *Config) { c.PubSub.MaxOutstandingMessages = 0 }, "pubsub.maxOutstandingMessages", "at least 1"},
		{"pubsub no stream", func(c *Config) { c.PubSub.Streams = 0 }, "pubsub.streams", "between 1 and 64"},
		{"pubsub too many streams", func(c *Config) { c.PubSub.Streams = 65 }, "pubsub.streams", "between 1 and 64, got 65"},
		{"credentials type", func(c *Config) { c.Google.Credentials.Type = "oauth" }, "google.credentials.type", "not one of"},
		{"credentials type empty", func(c *Config) { c.Google.Credentials.Type = "" }, "google.credentials.type", "not one of"},
		{"credentials file required", func(c *Config) { c.Google.Credentials.File = "" }, "google.credentials.file", "is required"},
		{"credentials file required for JWT", func(c *Config) { c.Google.Credentials = Credentials{Type: CredentialsSelfSignedJWT} }, "google.credentials.file", "is required"},
		{"credentials file missing", func(c *Config) { c.Google.Credentials.File = "missing.json" }, "google.credentials.file", "missing.json"},
		{"credentials file is a directory", func(c *Config) { c.Google.Credentials.File = "." }, "google.credentials.file", "not a regular file"},
		{"credentials file unused", func(c *Config) { c.Google.Credentials.Type = CredentialsADC }, "google.credentials.file", "only used with"},
		{"credentials none without endpoint", func(c *Config) { c.Google.Credentials = Credentials{Type: CredentialsNone} }, "google.credentials.type", "only allowed with google.endpoint"},
		{"credentials subject", func(c *Config) { c.Google.Credentials.Subject = "admin" }, "google.credentials.subject", "e-mail"},
		{"endpoint relative", func(c *Config) { c.Google.Endpoint = "127.0.0.1:8480" }, "google.endpoint", "absolute http(s) URL"},
		{"endpoint scheme", func(c *Config) { c.Google.Endpoint = "ftp://example.com/" }, "google.endpoint", "absolute http(s) URL"},
		{"endpoint no host", func(c *Config) { c.Google.Endpoint = "http:///x" }, "google.endpoint", "absolute http(s) URL"},
		{"rate limit", func(c *Config) { c.Google.RateLimit.RequestsPerSecond = 0 }, "google.rateLimit.requestsPerSecond", "positive"},
		{"burst", func(c *Config) { c.Google.RateLimit.Burst = 0 }, "google.rateLimit.burst", "at least 1"},
		{"request timeout", func(c *Config) { c.Google.RequestTimeout = 0 }, "google.requestTimeout", "positive"},
		{"workers low", func(c *Config) { c.Engine.Workers = 0 }, "engine.workers", "between 1 and 1024"},
		{"workers high", func(c *Config) { c.Engine.Workers = 1025 }, "engine.workers", "between 1 and 1024"},
		{"poll interval", func(c *Config) { c.Engine.PollInterval = -time.Second }, "engine.pollInterval", "positive"},
		{"max poll interval", func(c *Config) { c.Engine.MaxPollInterval = 0 }, "engine.maxPollInterval", "positive"},
		{"max poll below poll", func(c *Config) { c.Engine.MaxPollInterval = time.Second }, "engine.maxPollInterval", "not be shorter than engine.pollInterval"},
		{"long wait after", func(c *Config) { c.Engine.LongWaitAfter = 0 }, "engine.longWaitAfter", "positive"},
		{"long-wait poll below max poll", func(c *Config) { c.Engine.LongWaitPollInterval = 30 * time.Second }, "engine.longWaitPollInterval", "not be shorter than engine.maxPollInterval"},
		{"initial backoff", func(c *Config) { c.Engine.Retry.InitialBackoff = 0 }, "engine.retry.initialBackoff", "positive"},
		{"max backoff", func(c *Config) { c.Engine.Retry.MaxBackoff = 0 }, "engine.retry.maxBackoff", "positive"},
		{"max backoff below initial", func(c *Config) { c.Engine.Retry.MaxBackoff = time.Millisecond }, "engine.retry.maxBackoff", "not be shorter"},
		{"max duration", func(c *Config) { c.Engine.Retry.MaxDuration = 0 }, "engine.retry.maxDuration", "positive"},
		{"journal type", func(c *Config) { c.Journal.Type = "bolt" }, "journal.type", "not supported"},
		{"journal path with memory", func(c *Config) { c.Journal.Path = "/var/lib/certprov" }, "journal.path", "not used by the memory journal"},
		{"sqlite without path", func(c *Config) { c.Journal.Type = JournalSQLite }, "journal.path", "required"},
		{"sqlite with dsn", func(c *Config) {
			c.Journal = Journal{Type: JournalSQLite, Path: "/j.db", DSN: "postgres://x", LeaseDuration: time.Minute}
		}, "journal.dsn", "not used"},
		{"postgres without dsn", func(c *Config) { c.Journal.Type = JournalPostgres }, "journal.dsn", "CERTPROV_JOURNAL_DSN"},
		{"zero lease", func(c *Config) { c.Journal.LeaseDuration = 0 }, "journal.leaseDuration", ""},
		{"negative retention", func(c *Config) { c.Journal.Retention = -time.Hour }, "journal.retention", "negative"},
		{"shutdown grace zero", func(c *Config) { c.ShutdownGracePeriod = 0 }, "shutdownGracePeriod", "positive"},
		{"shutdown grace negative", func(c *Config) { c.ShutdownGracePeriod = -time.Second }, "shutdownGracePeriod", "positive"},
		{"log level", func(c *Config) { c.Log.Level = "fatal" }, "log.level", "not one of"},
		{"log format", func(c *Config) { c.Log.Format = "text" }, "log.format", "not one of"},
		{"no profiles", func(c *Config) { c.Profiles = nil }, "profiles", "at least one profile"},
		{"no CA connections", func(c *Config) { c.CAConnections = map[string]CAConnection{} }, "caConnections", "at least one CA connection"},
		{"CA type", func(c *Config) { c.CAConnections["ca"] = CAConnection{Timeout: time.Second} }, "caConnections.ca.type", "must not be empty"},
		{"CA timeout", func(c *Config) { c.CAConnections["ca"] = CAConnection{Type: "local"} }, "caConnections.ca.timeout", "positive"},
		{"validity zero", editProfile(func(p *Profile) { p.Validity = 0 }), "profiles.dev.validity", "positive"},
		{"validity > 10y", editProfile(func(p *Profile) { p.Validity = MaxValidity + time.Hour }), "profiles.dev.validity", "ten years"},
		{"sign deadline", editProfile(func(p *Profile) { p.SignDeadline = 0 }), "profiles.dev.signDeadline", "positive"},
		{"revocation grace negative", editProfile(func(p *Profile) { p.RevokeSuperseded.GracePeriod = -time.Hour }), "profiles.dev.revokeSuperseded.gracePeriod", "must not be negative"},
		{"revocation reason empty", editProfile(func(p *Profile) { p.RevokeSuperseded = RevokeSuperseded{Enabled: true, GracePeriod: time.Hour} }), "profiles.dev.revokeSuperseded.reason", "must not be empty"},
		{"revocation connection unknown", editProfile(func(p *Profile) { p.RevokeSuperseded.CAConnections = []string{"ca", "nope"} }), "profiles.dev.revokeSuperseded.caConnections[1]", `"nope" is not in caConnections`},
		{"key usage", editProfile(func(p *Profile) { p.KeyUsage = []string{"digitalSignature", "signing"} }), "profiles.dev.keyUsage[1]", "not one of"},
		{"key usage case", editProfile(func(p *Profile) { p.KeyUsage = []string{"DigitalSignature"} }), "profiles.dev.keyUsage[0]", "not one of"},
		{"key usage twice", editProfile(func(p *Profile) { p.KeyUsage = []string{"keyAgreement", "keyAgreement"} }), "profiles.dev.keyUsage[1]", "twice"},
		{"EKU name", editProfile(func(p *Profile) { p.ExtKeyUsage = []string{"smartcardLogon"} }), "profiles.dev.extendedKeyUsage[0]", "dotted OID"},
		{"EKU bad OID", editProfile(func(p *Profile) { p.ExtKeyUsage = []string{"1.3.06.1"} }), "profiles.dev.extendedKeyUsage[0]", "dotted OID"},
		{"EKU empty", editProfile(func(p *Profile) { p.ExtKeyUsage = []string{""} }), "profiles.dev.extendedKeyUsage[0]", "must not be empty"},
		{"no name at all", editProfile(func(p *Profile) { p.Subject.CommonName = "" }), "profiles.dev", "commonName or at least one subjectAltNames"},
		{"common name too long", editProfile(func(p *Profile) { p.Subject.CommonName = strings.Repeat("x", 65) }), "profiles.dev.subject.commonName", "at most 64"},
		{"country", editProfile(func(p *Profile) { p.Subject.Country = "Germany" }), "profiles.dev.subject.country", "two-letter"},
		{"organization empty", editProfile(func(p *Profile) { p.Subject.Organization = []string{""} }), "profiles.dev.subject.organization[0]", "must not be empty"},
		{"SAN dns", editProfile(func(p *Profile) { p.SubjectAltNames.DNS = []string{"not a host"} }), "profiles.dev.subjectAltNames.dns[0]", "not a DNS name"},
		{"SAN email", editProfile(func(p *Profile) { p.SubjectAltNames.Email = []string{"nobody"} }), "profiles.dev.subjectAltNames.email[0]", "not an e-mail"},
		{"SAN uri", editProfile(func(p *Profile) { p.SubjectAltNames.URI = []string{"device-123"} }), "profiles.dev.subjectAltNames.uri[0]", "absolute URI"},
		{"SAN upn", editProfile(func(p *Profile) { p.SubjectAltNames.UPN = []string{"user"} }), "profiles.dev.subjectAltNames.upn[0]", "user principal name"},
		{"SAN empty", editProfile(func(p *Profile) { p.SubjectAltNames.URI = []string{" "} }), "profiles.dev.subjectAltNames.uri[0]", "must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.edit(c)
			ps := c.Validate()
			p := problemAt(t, ps, tt.path)
			if !strings.Contains(p.Message, tt.msg) {
				t.Errorf("message %q does not contain %q", p.Message, tt.msg)
			}
			if len(ps) != 1 {
				t.Errorf("want exactly one problem, got %v", ps)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
	}{
		{"my_customer", func(c *Config) { c.Customers = []string{"my_customer", "C01b2c3d4"} }},
		{"full subscription name", func(c *Config) { c.PubSub.Subscription = "projects/p/subscriptions/s" }},
		{"emulator", func(c *Config) {
			c.Google.Credentials = Credentials{Type: CredentialsNone}
			c.Google.Endpoint = "http://127.0.0.1:8480/"
			c.PubSub.Endpoint, c.PubSub.Insecure = "127.0.0.1:8481", true
		}},
		{"adc", func(c *Config) { c.Google.Credentials = Credentials{Type: CredentialsADC} }},
		{"absolute key file", func(c *Config) { c.Google.Credentials.File = filepath.Join(c.BaseDir, "sa.json") }},
		{"SANs only", editProfile(func(p *Profile) {
			p.Subject.CommonName = ""
			p.SubjectAltNames.Email = []string{"{{.User.Email}}"}
		})},
		{"templates skip literal checks", editProfile(func(p *Profile) {
			p.Subject.Country = "{{.Customer}}"
			p.Subject.CommonName = "{{.User.Email}}" + strings.Repeat(" ", 80)
			p.SubjectAltNames = SANs{DNS: []string{"{{.Device.SerialNumber}}.example.com"}, URI: []string{"{{.ProcessName}}"}}
		})},
		{"literal SANs", editProfile(func(p *Profile) {
			p.SubjectAltNames = SANs{DNS: []string{"*.example.com", "host"}, Email: []string{"a@b.c"}, URI: []string{"urn:x:y"}, UPN: []string{"u@corp"}}
		})},
		{"every key usage and EKU", editProfile(func(p *Profile) {
			p.KeyUsage = knownKeyUsages()
			p.ExtKeyUsage = append(knownExtKeyUsages(), "1.3.6.1.5.5.7.3.9", "2.5.29.37.0")
		})},
		{"validity of ten years", editProfile(func(p *Profile) { p.Validity = MaxValidity })},
		{"1024 workers", func(c *Config) { c.Engine.Workers = 1024 }},
		{"equal intervals", func(c *Config) { c.Engine.MaxPollInterval = c.Engine.PollInterval }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.edit(c)
			if ps := c.Validate(); len(ps) != 0 {
				t.Errorf("problems: %v", ps)
			}
		})
	}
}

// Calls that may outlast the journal lease are warned about, not refused: the heartbeat keeps
// them going while the journal works.
func TestWarningsLease(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		path string // "" for no warning
		msg  string
	}{
		{"defaults", func(*Config) {}, "", ""},
		{"CA timeout longer than the lease", func(c *Config) {
			c.CAConnections["ca"] = CAConnection{Type: "est", Timeout: 5 * time.Minute}
		}, "caConnections.ca.timeout", "longer than journal.leaseDuration (2m0s)"},
		{"CA timeout equal to the lease", func(c *Config) {
			c.CAConnections["ca"] = CAConnection{Type: "est", Timeout: DefaultLeaseDuration}
		}, "", ""},
		{"short lease", func(c *Config) { c.Journal.LeaseDuration = 20 * time.Second }, "caConnections.ca.timeout", "at least 30s"},
		{"rate-limit queue", func(c *Config) {
			c.Engine.Workers, c.Google.RateLimit.RequestsPerSecond = 1000, 5 // 200 s in line
		}, "google.requestTimeout", "up to 3m20s waiting for the rate limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.edit(c)
			if ps := c.Validate(); len(ps) != 0 {
				t.Fatalf("a warning case is an error: %v", ps)
			}
			ws := c.Warnings()
			if tt.path == "" {
				if len(ws) != 0 {
					t.Fatalf("warnings %v, want none", ws)
				}
				return
			}
			for _, w := range ws {
				if w.Path == tt.path && strings.Contains(w.Message, tt.msg) {
					return
				}
			}
			t.Fatalf("warnings %v, want one at %s mentioning %q", ws, tt.path, tt.msg)
		})
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		grace time.Duration
		warn  bool
	}{
		{DefaultShutdownGracePeriod, false},
		{KubernetesTerminationGrace - time.Millisecond, false},
		{KubernetesTerminationGrace, true},
		{2 * time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.grace.String(), func(t *testing.T) {
			c := validConfig(t)
			c.ShutdownGracePeriod = tt.grace
			if ps := c.Validate(); len(ps) != 0 {
				t.Fatalf("a long grace period is allowed, got problems %v", ps)
			}
			ws := c.Warnings()
			if !tt.warn {
				if len(ws) != 0 {
					t.Fatalf("unexpected warnings %v", ws)
				}
				return
			}
			if len(ws) != 1 || ws[0].Path != "shutdownGracePeriod" || !strings.Contains(ws[0].Message, "terminationGracePeriodSeconds") {
				t.Fatalf("warnings %v; want one at shutdownGracePeriod naming terminationGracePeriodSeconds", ws)
			}
		})
	}
}

// TestValidateOffline: offline validation finds every problem but those of the files the
// configuration names, which it does not look at; Files lists them.
func TestValidateOffline(t *testing.T) {
	c := validConfig(t)
	c.Google.Credentials.File = "missing.json"
	c.VerifiedAccess.Enabled = true
	c.VerifiedAccess.Listen = "0.0.0.0:8443"
	c.VerifiedAccess.TLS = ServerTLS{CertFile: "/nonexistent/tls.crt", KeyFile: "tls.key"}
	c.VerifiedAccess.Profiles = map[string]VerifiedAccessProfile{"m": {
		APIVersion: VAv2, Scopes: []string{VAScopeMachine}, EnrollmentDomain: "example.com", CAConnection: "ca",
		Subject: Subject{CommonName: "x"}, Validity: DefaultValidity,
	}}
	online := c.Validate()
	for _, path := range []string{"google.credentials.file", "verifiedAccess.tls.certFile", "verifiedAccess.tls.keyFile"} {
		problemAt(t, online, path)
	}
	if ps := c.ValidateOffline(); len(ps) != 0 {
		t.Errorf("offline: %v", ps)
	}
	c.InstanceID = ""
	if ps := c.ValidateOffline(); len(ps) != 1 || ps[0].Path != "instanceId" {
		t.Errorf("offline validation misses other problems: %v", ps)
	}
	want := []NamedFile{
		{"google.credentials.file", filepath.Join(c.BaseDir, "missing.json")},
		{"verifiedAccess.tls.certFile", "/nonexistent/tls.crt"},
		{"verifiedAccess.tls.keyFile", filepath.Join(c.BaseDir, "tls.key")},
	}
	if got := c.Files(); !slices.Equal(got, want) {
		t.Errorf("Files() = %v, want %v", got, want)
	}
	c.VerifiedAccess.Enabled = false
	c.Google.Credentials = Credentials{Type: CredentialsADC}
	if got := c.Files(); len(got) != 0 {
		t.Errorf("unused files listed: %v", got)
	}
}

// keyedErr is an error about one key, as ca.SettingError and csr.FieldError are.
type keyedErr struct {
	key string
	err error
}

func (e *keyedErr) Error() string { return e.key + ": " + e.err.Error() }
func (e *keyedErr) Unwrap() error { return e.err }
func (e *keyedErr) Path() string  { return e.key }

func TestProblemsAt(t *testing.T) {
	err := fmt.Errorf("scep connector %q: %w", "corp", errors.Join(
		&keyedErr{"url", errors.New("required")},
		&keyedErr{"tls.caFile", errors.New("no PEM certificates")},
		errors.New("something without a key"),
	))
	got := ProblemsAt("caConnections.corp", err)
	want := []Problem{
		{"caConnections.corp.url", "required"},
		{"caConnections.corp.tls.caFile", "no PEM certificates"},
		{"caConnections.corp", "something without a key"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("ProblemsAt = %v, want %v", got, want)
	}
	// One keyed problem under a wrapper keeps no wrapper text either.
	one := fmt.Errorf("local connector %q: %w", "x", &keyedErr{"keyFile", errors.New("required")})
	if got := ProblemsAt("caConnections.x", one); !slices.Equal(got, []Problem{{"caConnections.x.keyFile", "required"}}) {
		t.Errorf("ProblemsAt = %v", got)
	}
	// A plain error stays whole, at the section.
	if got := ProblemsAt("caConnections.x", errors.New("a: b")); !slices.Equal(got, []Problem{{"caConnections.x", "a: b"}}) {
		t.Errorf("ProblemsAt = %v", got)
	}
}

func TestProblemsIn(t *testing.T) {
	err := errors.Join(
		&ProblemsError{Problems: []Problem{{"profiles.a.subject.commonName", "template: x"}}},
		nil,
		errors.New("verifiedAccess.profiles.m.caConnection: cannot issue\nverifiedAccess.profiles.m.scopes: none"),
		&ProblemsError{Problems: []Problem{{"caConnections.c.url", "required"}}},
	)
	want := []Problem{
		{"profiles.a.subject.commonName", "template: x"},
		{"", "verifiedAccess.profiles.m.caConnection: cannot issue"},
		{"", "verifiedAccess.profiles.m.scopes: none"},
		{"caConnections.c.url", "required"},
	}
	if got := ProblemsIn(err); !slices.Equal(got, want) {
		t.Errorf("ProblemsIn = %v, want %v", got, want)
	}
	if got := ProblemsIn(nil); got != nil {
		t.Errorf("ProblemsIn(nil) = %v", got)
	}
}
