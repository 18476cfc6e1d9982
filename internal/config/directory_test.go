package config

import (
	"strings"
	"testing"
	"time"
)

// directoryYAML is minimalYAML with the Directory on and a profile with routes.
const directoryYAML = `
instanceId: a1
customers: [C0abc123]
pubsub: {project: p, subscription: s}
google:
  credentials: {type: serviceAccountKey, file: keys/sa.json}
  directory: {enabled: true, subject: admin@example.com, cacheTTL: 5m, negativeCacheTTL: 30s, cacheSize: 500, rateLimit: {requestsPerSecond: 4, burst: 8}}
profiles:
  dev:
    subject: {commonName: "{{.Device.Directory.AssetID}}"}
    routes:
      - {orgUnit: /Sales/EMEA, caConnection: emea, validity: 720h}
      - {orgUnit: /Sales, templateName: Sales}
caConnections:
  ca: {type: local}
  emea: {type: local}
`

func TestDirectoryLoad(t *testing.T) {
	cleanEnv(t)
	cfg := mustLoad(t, directoryYAML)
	d := cfg.Google.Directory
	if !d.Enabled || d.Subject != "admin@example.com" || d.CacheTTL != 5*time.Minute || d.NegativeCacheTTL != 30*time.Second ||
		d.CacheSize != 500 || d.RateLimit != (RateLimit{RequestsPerSecond: 4, Burst: 8}) {
		t.Fatalf("google.directory %+v", d)
	}
	routes := cfg.Profiles["dev"].Routes
	want := []Route{{OrgUnit: "/Sales/EMEA", CAConnection: "emea", Validity: 720 * time.Hour}, {OrgUnit: "/Sales", TemplateName: "Sales"}}
	if len(routes) != 2 || routes[0] != want[0] || routes[1] != want[1] {
		t.Fatalf("routes %+v, want %+v", routes, want)
	}
	if ws := cfg.Warnings(); len(ws) != 0 {
		t.Fatalf("warnings %v, want none", ws)
	}
	if def := mustLoad(t, minimalYAML).Google.Directory; def != DefaultDirectory() || def.Enabled {
		t.Fatalf("default google.directory %+v", def)
	}
	t.Setenv("CERTPROV_GOOGLE_DIRECTORY_CACHESIZE", "42")
	if got := mustLoad(t, directoryYAML).Google.Directory.CacheSize; got != 42 {
		t.Fatalf("CERTPROV_GOOGLE_DIRECTORY_CACHESIZE gave %d", got)
	}
}

func TestDirectoryProblems(t *testing.T) {
	cleanEnv(t)
	tests := []struct {
		name, from, to, path, want string
	}{
		{"unknown route CA", "caConnection: emea,", "caConnection: emae,", "profiles.dev.routes[0].caConnection", `"emae" (did you mean emea?)`},
		{"relative org unit", "orgUnit: /Sales,", "orgUnit: Sales,", "profiles.dev.routes[1].orgUnit", "org unit path"},
		{"trailing slash", "orgUnit: /Sales,", "orgUnit: /Sales/,", "profiles.dev.routes[1].orgUnit", "org unit path"},
		{"empty org unit", "orgUnit: /Sales,", "orgUnit: '',", "profiles.dev.routes[1].orgUnit", "must not be empty"},
		{"route that changes nothing", "{orgUnit: /Sales, templateName: Sales}", "{orgUnit: /Sales}", "profiles.dev.routes[1]", "changes nothing"},
		{"unknown route key", "templateName: Sales}", "templatName: Sales}", "profiles.dev.routes[1].templatName", `did you mean "templateName"`},
		{"routes without the directory", "enabled: true,", "enabled: false,", "profiles.dev.routes", "google.directory.enabled"},
		{"negative TTL above TTL", "negativeCacheTTL: 30s", "negativeCacheTTL: 10m", "google.directory.negativeCacheTTL", "not be longer"},
		{"cache size", "cacheSize: 500", "cacheSize: 0", "google.directory.cacheSize", "between 1"},
		{"rate", "requestsPerSecond: 4", "requestsPerSecond: 0", "google.directory.rateLimit.requestsPerSecond", "positive"},
		{"subject not an address", "subject: admin@example.com", "subject: admin", "google.directory.subject", "e-mail address"},
		{"subject with a self-signed JWT", "type: serviceAccountKey", "type: selfSignedJWT", "google.directory.subject", "self-signed JWT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(directoryYAML, tc.from) {
				t.Fatalf("%q is not in the base configuration", tc.from)
			}
			p := problemAt(t, loadProblems(t, strings.Replace(directoryYAML, tc.from, tc.to, 1)), tc.path)
			if !strings.Contains(p.Message, tc.want) {
				t.Fatalf("%s: %q, want it to say %q", tc.path, p.Message, tc.want)
			}
		})
	}
}

func TestRouteWarnings(t *testing.T) {
	cleanEnv(t)
	// The broader route first: the specific one below never matches.
	swapped := strings.Replace(strings.Replace(directoryYAML, "/Sales/EMEA,", "/X,", 1), "orgUnit: /Sales,", "orgUnit: /Sales/EMEA,", 1)
	swapped = strings.Replace(swapped, "/X,", "/sales,", 1)
	ws := mustLoad(t, swapped).Warnings()
	if len(ws) != 1 || ws[0].Path != "profiles.dev.routes[1]" || !strings.Contains(ws[0].Message, "never matches") {
		t.Fatalf("warnings %v, want routes[1] never matches", ws)
	}
	noSubject := strings.Replace(directoryYAML, " subject: admin@example.com,", "", 1)
	if ws := mustLoad(t, noSubject).Warnings(); len(ws) != 1 || ws[0].Path != "google.directory.subject" {
		t.Fatalf("warnings without a subject %v", ws)
	}
}

func TestOrgUnitMatches(t *testing.T) {
	tests := []struct {
		route, ou string
		want      bool
	}{
		{"/", "/", true},
		{"/", "/Sales/EMEA", true},
		{"/Sales", "/Sales", true},
		{"/Sales", "/Sales/EMEA", true},
		{"/Sales", "/sales/emea", true},
		{"/Sales", "/SalesOps", false},
		{"/Sales/EMEA", "/Sales", false},
		{"/Sales", "", false},
		{"/Sales", "/Engineering", false},
	}
	for _, tc := range tests {
		if got := OrgUnitMatches(tc.route, tc.ou); got != tc.want {
			t.Errorf("OrgUnitMatches(%q, %q) = %v, want %v", tc.route, tc.ou, got, tc.want)
		}
	}
}
