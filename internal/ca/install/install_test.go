package install_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/ca"
	_ "github.com/certprov/certprov-adapter/internal/ca/install"
)

// settingKeys lists the keys of the setting problems in err.
func settingKeys(t *testing.T, err error) []string {
	t.Helper()
	var keys []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var se *ca.SettingError
		if !errors.As(e, &se) {
			t.Errorf("problem %q names no setting", e)
			return
		}
		keys = append(keys, se.Key)
	}
	walk(err)
	return keys
}

// TestOfflineChecks: every built-in connector type checks its settings without touching the
// file system (files that do not exist pass; nothing is created, not even the SCEP signer that
// New would create), and reports each problem at its setting's key.
func TestOfflineChecks(t *testing.T) {
	dir := t.TempDir()
	f := func(name string) string { return filepath.Join(dir, name) }
	tests := []struct {
		typ      string
		good     ca.Settings
		bad      ca.Settings
		wantKeys []string
	}{
		{"awspca",
			ca.Settings{"certificateAuthorityArn": "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555",
				"templateArn": "EndEntityClientAuthCertificate/V1", "caCertsFile": f("roots.pem")},
			ca.Settings{"certificateAuthorityArn": "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/x", "signingAlgorithm": "MD5"},
			[]string{"certificateAuthorityArn", "signingAlgorithm"}},
		{"cas",
			ca.Settings{"caPool": "projects/p/locations/us-central1/caPools/pool", "certificateTemplate": "wifi", "credentialsFile": f("sa.json"), "caCertsFile": f("roots.pem")},
			ca.Settings{"caPool": "pool", "maxLifetime": "-1h", "endpoint": "https://privateca.googleapis.com"},
			[]string{"caPool", "maxLifetime", "endpoint"}},
		{"ejbca",
			ca.Settings{"url": "https://ejbca.example.com", "certificateAuthorityName": "ChromeOSIssuingCA", "certificateProfileName": "ChromeOSClient",
				"endEntityProfileName": "ChromeOSDevices", "enrollmentCodeSecretFile": f("code-secret"), "caCertsFile": f("roots.pem"),
				"tls": map[string]any{"certFile": f("admin.crt"), "keyFile": f("admin.key"), "caFile": f("tls-ca.pem")}},
			ca.Settings{"url": "http://ejbca.example.com", "certificateProfileName": "ChromeOSClient", "usernamePrefix": "a b",
				"tls": map[string]any{"caFile": f("tls-ca.pem")}},
			[]string{"url", "certificateAuthorityName", "endEntityProfileName", "usernamePrefix", "tls.certFile"}},
		{"local",
			ca.Settings{"certificateFile": f("ca.crt"), "keyFile": f("ca.key"), "ledgerFile": f("ledger.jsonl")},
			ca.Settings{"maxValidity": "-1h"},
			[]string{"certificateFile", "keyFile", "maxValidity"}},
		{"scep",
			ca.Settings{"url": "https://ndes.example.com/certsrv/mscep/mscep.dll", "signerKeyFile": f("s.key"), "signerCertFile": f("s.crt"),
				"dynamicChallenge": map[string]any{"url": "https://ndes.example.com/certsrv/mscep_admin/", "username": "svc", "passwordFile": f("pw")},
				"tls":              map[string]any{"caFile": f("root.pem")}},
			ca.Settings{"url": "ftp://x", "challenge": "c", "challengeFile": f("c"), "signerCertFile": f("s.crt"),
				"dynamicChallenge": map[string]any{"url": "https://ndes.example.com/", "username": "svc", "passwordFile": f("pw"), "tls": map[string]any{"certFile": f("c.crt")}}},
			[]string{"url", "challenge", "signerKeyFile", "dynamicChallenge.tls.keyFile"}},
		{"est",
			ca.Settings{"url": "https://est.example.com", "username": "u", "passwordFile": f("pw"), "caCertsFile": f("anchors.pem"),
				"tls": map[string]any{"certFile": f("c.crt"), "keyFile": f("c.key")}},
			ca.Settings{"url": "https://est.example.com", "label": "cacerts", "username": "u", "timeout": "soon"},
			[]string{"timeout"}}, // a bad duration stops decoding before the other rules
		{"stepca",
			ca.Settings{"url": "https://ca.example.com:9000", "rootFingerprint": strings.Repeat("ab", 32), "provisioner": "adapter", "provisionerPasswordFile": f("pw")},
			ca.Settings{"url": "https://ca.example.com:9000/step", "rootFingerprint": "abc"},
			[]string{"url", "rootFingerprint", "provisioner", "provisionerPasswordFile"}},
		{"vault",
			ca.Settings{"address": "https://vault.example.com:8200", "role": "devices", "caCertsFile": f("roots.pem"),
				"auth": map[string]any{"method": "approle", "roleIDFile": f("role-id"), "secretIDFile": f("secret-id")}},
			ca.Settings{"address": "http://vault.example.com:8200", "mount": "../pki", "endpoint": "issue",
				"auth": map[string]any{"method": "kubernetes", "tokenFile": f("t")}},
			[]string{"address", "mount", "endpoint", "auth.role", "auth.tokenFile"}},
		{"webhook",
			ca.Settings{"url": "https://ca.example.com/issue", "hmacSecretFile": f("hmac"), "headerFiles": map[string]any{"Authorization": f("auth")},
				"caCertsFile": f("roots.pem")},
			ca.Settings{"url": "http://ca.example.com/issue", "headers": map[string]any{"Host": "x"}, "headerFiles": map[string]any{"X-Key": ""}},
			[]string{"url", "headerFiles.X-Key", "headers.Host"}},
	}
	if got, want := len(tests), len(ca.Types()); got != want {
		t.Fatalf("%d types tested, %d registered (%v): test the new one", got, want, ca.Types())
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			checked, err := ca.CheckSettings(tt.typ, tt.good)
			if !checked || err != nil {
				t.Fatalf("good settings: checked %v, %v", checked, err)
			}
			checked, err = ca.CheckSettings(tt.typ, tt.bad)
			if !checked || err == nil {
				t.Fatalf("bad settings: checked %v, no error", checked)
			}
			keys := settingKeys(t, err)
			slices.Sort(keys)
			want := slices.Clone(tt.wantKeys)
			slices.Sort(want)
			if !slices.Equal(keys, want) {
				t.Errorf("problems at %v, want %v: %v", keys, want, err)
			}
		})
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("the checks touched the file system: %v %v", entries, err)
	}
}

// TestUnknownSettingSuggests: a misspelt key is reported at its own path, nested ones too, with
// the key meant.
func TestUnknownSettingSuggests(t *testing.T) {
	_, err := ca.CheckSettings("scep", ca.Settings{"url": "https://ndes.example.com/", "signerKeyFile": "k", "signerCertFile": "c",
		"chalenge": "x", "tls": map[string]any{"caFlie": "roots.pem"}})
	keys := settingKeys(t, err)
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"chalenge", "tls.caFlie"}) || !strings.Contains(err.Error(), `chalenge: unknown key (did you mean "challenge"?)`) ||
		!strings.Contains(err.Error(), `tls.caFlie: unknown key (did you mean "caFile"?)`) {
		t.Errorf("problems at %v: %v", keys, err)
	}
}

func TestUnknownTypeSuggests(t *testing.T) {
	for _, try := range []func() error{
		func() error { _, err := ca.New("scpe", nil, ca.Env{Name: "corp"}); return err },
		func() error { _, err := ca.CheckSettings("scpe", nil); return err },
	} {
		err := try()
		var se *ca.SettingError
		if !errors.As(err, &se) || se.Key != "type" || !strings.Contains(err.Error(), `did you mean "scep"?`) {
			t.Errorf("unknown type: %v", err)
		}
	}
}
