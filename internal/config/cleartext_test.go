package config

import (
	"strings"
	"testing"
)

// clearPGEnv blanks the PG* variables pgx reads, and gives pgx an empty home (it reads
// ~/.postgresql/root.crt), so that the DSN cases mean what they say.
func clearPGEnv(t *testing.T) {
	t.Helper()
	for _, v := range []string{"PGHOST", "PGPORT", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLNEGOTIATION", "PGSERVICE", "PGSERVICEFILE"} {
		t.Setenv(v, "")
	}
	t.Setenv("HOME", t.TempDir())
}

func TestValidateCleartext(t *testing.T) {
	clearPGEnv(t)
	const pw = "Pa55-w0rd"
	sa := Credentials{Type: CredentialsServiceAccountKey, File: "sa.json"}
	none := Credentials{Type: CredentialsNone}
	google := func(creds Credentials, endpoint string, optOut bool) func(*Config) {
		return func(c *Config) {
			c.Google.Credentials, c.Google.Endpoint, c.Google.InsecureAllowCleartext = creds, endpoint, optOut
		}
	}
	va := func(endpoint string, optOut bool) func(*Config) {
		return func(c *Config) { c.VerifiedAccess.Endpoint, c.VerifiedAccess.InsecureAllowCleartext = endpoint, optOut }
	}
	journal := func(dsn string, optOut bool) func(*Config) {
		return func(c *Config) {
			c.Journal = Journal{Type: JournalPostgres, DSN: dsn, InsecureAllowCleartext: optOut, LeaseDuration: DefaultLeaseDuration}
		}
	}
	tests := []struct {
		name string
		edit func(*Config)
		env  map[string]string
		path string   // empty: no problem
		msg  []string // substrings of the message
	}{
		{name: "google https", edit: google(sa, "https://chromemanagement.example.com/", false)},
		{name: "google loopback http with a token", edit: google(sa, "http://127.0.0.1:8480/", false)},
		{name: "google localhost http with a token", edit: google(sa, "http://localhost:8480/", false)},
		{name: "google ipv6 loopback http with a token", edit: google(sa, "http://[::1]:8480/", false)},
		{name: "google remote http without credentials", edit: google(none, "http://emulator:8480/", false)},
		{name: "google remote http with a token", edit: google(sa, "http://chromemanagement.example.com/", false),
			path: "google.endpoint", msg: []string{"plain http", "access token", "chromemanagement.example.com", "use https", "google.insecureAllowCleartext: true"}},
		{name: "google remote http, adc", edit: google(Credentials{Type: CredentialsADC}, "http://10.0.0.8:8080/", false),
			path: "google.endpoint", msg: []string{"10.0.0.8"}},
		{name: "google remote http with opt-out", edit: google(sa, "http://chromemanagement.example.com/", true)},

		{name: "verified access loopback", edit: va("http://127.0.0.1:8480/", false)},
		{name: "verified access https", edit: va("https://verifiedaccess.example.com/", false)},
		{name: "verified access remote http", edit: va("http://va.example.com/", false),
			path: "verifiedAccess.endpoint", msg: []string{"plain http", "va.example.com", "verifiedAccess.insecureAllowCleartext: true"}},
		{name: "verified access remote http with opt-out", edit: va("http://va.example.com/", true)},
		{name: "google opt-out does not cover verified access", edit: func(c *Config) {
			google(sa, "http://chromemanagement.example.com/", true)(c)
			va("http://va.example.com/", false)(c)
		}, path: "verifiedAccess.endpoint", msg: []string{"verifiedAccess.insecureAllowCleartext"}},
		{name: "verified access remote http without credentials", edit: func(c *Config) {
			google(none, "http://emulator:8480/", false)(c)
			va("http://emulator:8480/", false)(c)
		}},

		{name: "journal loopback disable", edit: journal("postgres://certprov:"+pw+"@127.0.0.1:5432/certprov?sslmode=disable", false)},
		{name: "journal unix socket", edit: journal("host=/var/run/postgresql user=certprov dbname=certprov", false)},
		{name: "journal verify-full", edit: journal("postgres://certprov:"+pw+"@db.example.com/certprov?sslmode=verify-full", false)},
		{name: "journal verify-full key=value", edit: journal("host=db.example.com user=certprov password="+pw+" sslmode=verify-full", false)},
		{name: "journal remote disable", edit: journal("postgres://certprov:"+pw+"@db.example.com:5432/certprov?sslmode=disable", false),
			path: "journal.dsn", msg: []string{"sslmode=disable", "password and journal data", "in clear to db.example.com:5432", "sslmode=verify-full", "journal.insecureAllowCleartext: true"}},
		{name: "journal remote, sslmode missing", edit: journal("host=db.example.com user=certprov password="+pw, false),
			path: "journal.dsn", msg: []string{"sslmode=prefer"}},
		{name: "journal remote require", edit: journal("postgres://certprov:"+pw+"@db.example.com/certprov?sslmode=require", false),
			path: "journal.dsn", msg: []string{"sslmode=require", "does not verify the server"}},
		{name: "journal remote allow", edit: journal("postgres://certprov:"+pw+"@db.example.com/certprov?sslmode=allow", false),
			path: "journal.dsn", msg: []string{"sslmode=allow"}},
		{name: "journal remote disable with opt-out", edit: journal("postgres://certprov:"+pw+"@db.example.com/certprov?sslmode=disable", true)},
		{name: "journal PGSSLMODE verify-full", edit: journal("postgres://certprov:"+pw+"@db.example.com/certprov", false),
			env: map[string]string{"PGSSLMODE": "verify-full"}},
		{name: "journal PGSSLMODE require", edit: journal("postgres://certprov:"+pw+"@db.example.com/certprov", false),
			env: map[string]string{"PGSSLMODE": "require"}, path: "journal.dsn", msg: []string{"sslmode=require", "PGSSLMODE=require"}},
		{name: "journal unparsable", edit: journal("postgres://certprov:"+pw+"@db.example.com:port/certprov", true),
			path: "journal.dsn", msg: []string{"not a usable PostgreSQL connection string", "invalid port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c := validConfig(t)
			tt.edit(c)
			ps := c.Validate()
			if tt.path == "" {
				if len(ps) != 0 {
					t.Fatalf("problems: %v", ps)
				}
				return
			}
			if len(ps) != 1 {
				t.Fatalf("want one problem at %s, got %v", tt.path, ps)
			}
			p := problemAt(t, ps, tt.path)
			for _, m := range tt.msg {
				if !strings.Contains(p.Message, m) {
					t.Errorf("message %q lacks %q", p.Message, m)
				}
			}
			if strings.Contains(p.Message, pw) || strings.HasPrefix(p.Message, tt.path) {
				t.Errorf("message %q shows the password or repeats the path", p.Message)
			}
		})
	}
}

// The opt-outs are ordinary keys: in the file and from the environment.
func TestLoadCleartextOptOuts(t *testing.T) {
	cleanEnv(t)
	clearPGEnv(t)
	remote := minimalYAML + `
google:
  credentials: {type: serviceAccountKey, file: keys/sa.json}
  endpoint: http://chromemanagement.internal/
journal:
  type: postgres
  dsn: postgres://certprov:pw@db.internal/certprov?sslmode=disable
`
	ps := loadProblems(t, remote)
	if len(ps) != 2 {
		t.Fatalf("problems %v, want google.endpoint and journal.dsn", ps)
	}
	problemAt(t, ps, "google.endpoint")
	problemAt(t, ps, "journal.dsn")

	cfg := mustLoad(t, strings.Replace(strings.Replace(remote,
		"endpoint: http://chromemanagement.internal/", "endpoint: http://chromemanagement.internal/\n  insecureAllowCleartext: true", 1),
		"type: postgres", "type: postgres\n  insecureAllowCleartext: true", 1))
	if !cfg.Google.InsecureAllowCleartext || !cfg.Journal.InsecureAllowCleartext {
		t.Errorf("opt-outs from the file: google %v journal %v", cfg.Google.InsecureAllowCleartext, cfg.Journal.InsecureAllowCleartext)
	}

	t.Setenv("CERTPROV_GOOGLE_INSECUREALLOWCLEARTEXT", "true")
	t.Setenv("CERTPROV_JOURNAL_INSECUREALLOWCLEARTEXT", "true")
	cfg = mustLoad(t, remote)
	if !cfg.Google.InsecureAllowCleartext || !cfg.Journal.InsecureAllowCleartext {
		t.Errorf("opt-outs from the environment: google %v journal %v", cfg.Google.InsecureAllowCleartext, cfg.Journal.InsecureAllowCleartext)
	}
}

// A quoted local part is a valid rfc822Name; the literal check must not refuse what package csr
// accepts.
func TestValidateQuotedEmailLiteral(t *testing.T) {
	for _, v := range []string{`"john doe"@example.com`, `"a@b"@example.com`, `"<x>"@example.com`} {
		c := validConfig(t)
		editProfile(func(p *Profile) { p.SubjectAltNames.Email = []string{v} })(c)
		if ps := c.Validate(); len(ps) != 0 {
			t.Errorf("%s: %v", v, ps)
		}
	}
	for _, v := range []string{"nobody", "@example.com", "john@"} {
		c := validConfig(t)
		editProfile(func(p *Profile) { p.SubjectAltNames.Email = []string{v} })(c)
		problemAt(t, c.Validate(), "profiles.dev.subjectAltNames.email[0]")
	}
}
