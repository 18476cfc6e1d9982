package adapter

import (
	"errors"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/googleauth"
)

// TestProfilesNeedTheDirectory: a profile whose templates use Directory data is refused unless
// google.directory is on, at the profile's path; one that uses none is built either way.
func TestProfilesNeedTheDirectory(t *testing.T) {
	cfg := config.Defaults()
	cfg.Profiles = map[string]config.Profile{
		"plain": {Subject: config.Subject{CommonName: "{{.Device.SerialNumber}}"}, Validity: config.DefaultValidity},
		"asset": {Subject: config.Subject{CommonName: "{{.Device.Directory.AssetID}}"}, Validity: config.DefaultValidity,
			Routes: []config.Route{{OrgUnit: "/Sales", TemplateName: "Sales"}}},
	}
	_, err := Profiles(&cfg)
	var pe *config.ProblemsError
	if !errors.As(err, &pe) || len(pe.Problems) != 1 || pe.Problems[0].Path != "profiles.asset" ||
		!strings.Contains(pe.Problems[0].Message, "google.directory.enabled") {
		t.Fatalf("Profiles with the Directory off: %v; want one problem at profiles.asset", err)
	}
	cfg.Google.Directory.Enabled = true
	profiles, err := Profiles(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p := profiles["asset"]; !p.Template.Needs().Device || len(p.Routes) != 1 {
		t.Fatalf("profile asset: needs %+v, routes %v", p.Template.Needs(), p.Routes)
	}
	// A reload into an adapter started without the Directory refuses such profiles.
	if err := needsNoDirectory(profiles); err == nil || !strings.Contains(err.Error(), "profiles.asset") {
		t.Fatalf("needsNoDirectory: %v", err)
	}
}

// TestDirectoryOptions: the Directory acts as google.directory.subject, and only it: the
// provisioning API's credentials keep their own subject.
func TestDirectoryOptions(t *testing.T) {
	cfg := config.Defaults()
	cfg.Google.Credentials = config.Credentials{Type: config.CredentialsServiceAccountKey, File: "/k.json", Subject: "api@example.com"}
	cfg.Google.Directory.Subject = "admin@example.com"
	o := DirectoryOptions(&cfg, nil, nil)
	if o.Credentials != (googleauth.Credentials{Type: googleauth.ServiceAccountKey, File: "/k.json", Subject: "admin@example.com"}) {
		t.Fatalf("directory credentials %+v", o.Credentials)
	}
	if got := APIOptions(&cfg, nil, nil).Credentials.Subject; got != "api@example.com" {
		t.Fatalf("provisioning API subject %q", got)
	}
	if o.CacheTTL != config.DefaultDirectoryCacheTTL || o.NegativeTTL != config.DefaultDirectoryNegativeCacheTTL ||
		o.CacheSize != config.DefaultDirectoryCacheSize || o.RateLimit.RequestsPerSecond != config.DefaultDirectoryRateLimit {
		t.Fatalf("directory options %+v", o)
	}
}
