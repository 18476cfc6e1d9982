package verifiedaccess

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/config"
)

// chromeOS is a healthy managed ChromeOS device in verified mode.
func chromeOS() *Result {
	return &Result{
		APIVersion:        config.VAv2,
		DevicePermanentID: "5CD123", CustomerID: "C0abc123", KeyTrustLevel: "CHROME_OS_VERIFIED_MODE",
		Signals: &va2.DeviceSignals{
			OperatingSystem: "CHROME_OS", OsVersion: "15183.69.3", BrowserVersion: "120.0.6099.235",
			DiskEncryption: "DISK_ENCRYPTION_ENCRYPTED", OsFirewall: "OS_FIREWALL_ENABLED",
			ScreenLockSecured: "SCREEN_LOCK_SECURED_ENABLED", SafeBrowsingProtectionLevel: "STANDARD",
			SiteIsolationEnabled: true, DeviceEnrollmentDomain: "example.com",
			Antivirus: &va2.Antivirus{State: "ENABLED"},
		},
	}
}

// unmanagedBrowser is a managed profile on an unmanaged browser: Google reports the profile's
// fields instead of the device's (no devicePermanentId, keyTrustLevel, customerId).
func unmanagedBrowser() *Result {
	return &Result{
		APIVersion:        config.VAv2,
		ProfileCustomerID: "C0abc123", ProfilePermanentID: "prof-1", VirtualProfileID: "vp-1",
		ProfileKeyTrustLevel: "CHROME_BROWSER_OS_KEY",
		Signals: &va2.DeviceSignals{
			OperatingSystem: "WINDOWS", OsVersion: "10.0.22631", BrowserVersion: "107.0.5286.0",
			DiskEncryption: "DISK_ENCRYPTION_ENCRYPTED", SecureBootMode: "SECURE_BOOT_MODE_ENABLED",
			ProfileEnrollmentDomain: "Example.COM",
		},
	}
}

func edit(r *Result, fn func(r *Result)) *Result { fn(r); return r }

func TestPolicy(t *testing.T) {
	tests := []struct {
		name   string
		policy config.VerifiedAccessPolicy
		result *Result
		want   []string // failed rules; nil = allowed
	}{
		{"empty policy allows", config.VerifiedAccessPolicy{}, chromeOS(), nil},
		{"empty policy allows v1", config.VerifiedAccessPolicy{}, &Result{APIVersion: config.VAv1, DevicePermanentID: "x"}, nil},

		{"key trust allows", config.VerifiedAccessPolicy{KeyTrustLevels: []string{"CHROME_OS_VERIFIED_MODE"}}, chromeOS(), nil},
		{"key trust denies developer mode", config.VerifiedAccessPolicy{KeyTrustLevels: []string{"CHROME_OS_VERIFIED_MODE"}},
			edit(chromeOS(), func(r *Result) { r.KeyTrustLevel = "CHROME_OS_DEVELOPER_MODE" }),
			[]string{"keyTrustLevels: got CHROME_OS_DEVELOPER_MODE, want one of [CHROME_OS_VERIFIED_MODE]"}},
		{"key trust denies absent level", config.VerifiedAccessPolicy{KeyTrustLevels: []string{"CHROME_OS_VERIFIED_MODE"}}, unmanagedBrowser(),
			[]string{"keyTrustLevels: got KEY_TRUST_LEVEL_UNSPECIFIED, want one of [CHROME_OS_VERIFIED_MODE]"}},
		{"profile key trust allows unmanaged browser", config.VerifiedAccessPolicy{ProfileKeyTrustLevels: []string{"CHROME_BROWSER_HW_KEY", "CHROME_BROWSER_OS_KEY"}}, unmanagedBrowser(), nil},
		{"profile key trust denies", config.VerifiedAccessPolicy{ProfileKeyTrustLevels: []string{"CHROME_BROWSER_HW_KEY"}}, unmanagedBrowser(),
			[]string{"profileKeyTrustLevels: got CHROME_BROWSER_OS_KEY, want one of [CHROME_BROWSER_HW_KEY]"}},

		{"signal allows", config.VerifiedAccessPolicy{Signals: map[string][]string{"diskEncryption": {"DISK_ENCRYPTION_ENCRYPTED"}}}, chromeOS(), nil},
		{"signal denies", config.VerifiedAccessPolicy{Signals: map[string][]string{"diskEncryption": {"DISK_ENCRYPTION_ENCRYPTED"}}},
			edit(chromeOS(), func(r *Result) { r.Signals.DiskEncryption = "DISK_ENCRYPTION_DISABLED" }),
			[]string{"signals.diskEncryption: got DISK_ENCRYPTION_DISABLED, want one of [DISK_ENCRYPTION_ENCRYPTED]"}},
		{"signal set allows either", config.VerifiedAccessPolicy{Signals: map[string][]string{"safeBrowsingProtectionLevel": {"STANDARD", "ENHANCED"}}},
			edit(chromeOS(), func(r *Result) { r.Signals.SafeBrowsingProtectionLevel = "ENHANCED" }), nil},
		{"signal set denies", config.VerifiedAccessPolicy{Signals: map[string][]string{"safeBrowsingProtectionLevel": {"STANDARD", "ENHANCED"}}},
			edit(chromeOS(), func(r *Result) { r.Signals.SafeBrowsingProtectionLevel = "INACTIVE" }),
			[]string{"signals.safeBrowsingProtectionLevel: got INACTIVE, want one of [STANDARD, ENHANCED]"}},
		{"absent enum reads as unspecified", config.VerifiedAccessPolicy{Signals: map[string][]string{"secureBootMode": {"SECURE_BOOT_MODE_ENABLED"}}}, chromeOS(),
			[]string{"signals.secureBootMode: got SECURE_BOOT_MODE_UNSPECIFIED, want one of [SECURE_BOOT_MODE_ENABLED]"}},
		{"unspecified can be allowed", config.VerifiedAccessPolicy{Signals: map[string][]string{"secureBootMode": {"SECURE_BOOT_MODE_ENABLED", "SECURE_BOOT_MODE_UNSPECIFIED"}}}, chromeOS(), nil},
		{"nested antivirus state", config.VerifiedAccessPolicy{Signals: map[string][]string{"antivirus.state": {"ENABLED"}}}, chromeOS(), nil},
		{"absent antivirus", config.VerifiedAccessPolicy{Signals: map[string][]string{"antivirus.state": {"ENABLED"}}}, unmanagedBrowser(),
			[]string{"signals.antivirus.state: got STATE_UNSPECIFIED, want one of [ENABLED]"}},
		{"boolean allows", config.VerifiedAccessPolicy{Signals: map[string][]string{"siteIsolationEnabled": {"true"}}}, chromeOS(), nil},
		{"boolean denies", config.VerifiedAccessPolicy{Signals: map[string][]string{"siteIsolationEnabled": {"true"}}}, unmanagedBrowser(),
			[]string{"signals.siteIsolationEnabled: got false, want one of [true]"}},
		{"no signals at all", config.VerifiedAccessPolicy{Signals: map[string][]string{"osFirewall": {"OS_FIREWALL_ENABLED"}}},
			edit(chromeOS(), func(r *Result) { r.Signals = nil }),
			[]string{"signals.osFirewall: got no device signals, want one of [OS_FIREWALL_ENABLED]"}},

		{"min OS allows", config.VerifiedAccessPolicy{MinOSVersion: "15183.69"}, chromeOS(), nil},
		{"min OS equal allows", config.VerifiedAccessPolicy{MinOSVersion: "15183.69.3.0"}, chromeOS(), nil},
		{"min OS denies", config.VerifiedAccessPolicy{MinOSVersion: "15200"}, chromeOS(),
			[]string{"minOsVersion: got 15183.69.3, want at least 15200"}},
		{"browser versions are numeric, not strings", config.VerifiedAccessPolicy{MinBrowserVersion: "108.0.1.0"}, unmanagedBrowser(),
			[]string{"minBrowserVersion: got 107.0.5286.0, want at least 108.0.1.0"}},
		{"browser 108 beats 107.0.5286", config.VerifiedAccessPolicy{MinBrowserVersion: "107.0.5286.0"},
			edit(unmanagedBrowser(), func(r *Result) { r.Signals.BrowserVersion = "108.0.1.0" }), nil},
		{"10 beats 9 numerically", config.VerifiedAccessPolicy{MinBrowserVersion: "9.0"},
			edit(unmanagedBrowser(), func(r *Result) { r.Signals.BrowserVersion = "10.0" }), nil},
		{"non-numeric version fails", config.VerifiedAccessPolicy{MinOSVersion: "10"},
			edit(unmanagedBrowser(), func(r *Result) { r.Signals.OsVersion = "Windows 10 Pro" }),
			[]string{`minOsVersion: got "Windows 10 Pro", not a numeric version, want at least 10`}},
		{"missing version fails", config.VerifiedAccessPolicy{MinBrowserVersion: "100"},
			edit(chromeOS(), func(r *Result) { r.Signals.BrowserVersion = "" }),
			[]string{"minBrowserVersion: got nothing, want at least 100"}},
		{"missing signals fail versions", config.VerifiedAccessPolicy{MinOSVersion: "1"},
			edit(chromeOS(), func(r *Result) { r.Signals = nil }),
			[]string{"minOsVersion: got nothing, want at least 1"}},

		{"customer allows", config.VerifiedAccessPolicy{CustomerIDs: []string{"C0abc123"}}, chromeOS(), nil},
		{"customer denies", config.VerifiedAccessPolicy{CustomerIDs: []string{"C0other1"}}, chromeOS(),
			[]string{"customerIds: got C0abc123, want one of [C0other1]"}},
		{"profile customer for unmanaged browser", config.VerifiedAccessPolicy{CustomerIDs: []string{"C0abc123"}}, unmanagedBrowser(), nil},
		{"profile customer denies", config.VerifiedAccessPolicy{CustomerIDs: []string{"C0other1"}}, unmanagedBrowser(),
			[]string{"customerIds: got C0abc123, want one of [C0other1]"}},
		{"no customer at all", config.VerifiedAccessPolicy{CustomerIDs: []string{"C0abc123"}}, &Result{APIVersion: config.VAv2},
			[]string{"customerIds: got nothing, want one of [C0abc123]"}},

		{"device enrollment domain allows", config.VerifiedAccessPolicy{EnrollmentDomains: []string{"example.com"}}, chromeOS(), nil},
		{"profile enrollment domain, any case", config.VerifiedAccessPolicy{EnrollmentDomains: []string{"EXAMPLE.com"}}, unmanagedBrowser(), nil},
		{"enrollment domain denies", config.VerifiedAccessPolicy{EnrollmentDomains: []string{"corp.example.com"}}, chromeOS(),
			[]string{"enrollmentDomains: got example.com, want one of [corp.example.com]"}},

		{"every failing rule is listed, in order", config.VerifiedAccessPolicy{
			KeyTrustLevels: []string{"CHROME_OS_VERIFIED_MODE"},
			CustomerIDs:    []string{"C0abc123"},
			MinOSVersion:   "15300",
			Signals: map[string][]string{
				"screenLockSecured": {"SCREEN_LOCK_SECURED_ENABLED"},
				"diskEncryption":    {"DISK_ENCRYPTION_ENCRYPTED"},
				"osFirewall":        {"OS_FIREWALL_ENABLED"},
			},
		}, edit(chromeOS(), func(r *Result) {
			r.KeyTrustLevel = "CHROME_OS_DEVELOPER_MODE"
			r.Signals.DiskEncryption = "DISK_ENCRYPTION_DISABLED"
			r.Signals.OsFirewall = "OS_FIREWALL_UNKNOWN"
		}), []string{
			"keyTrustLevels: got CHROME_OS_DEVELOPER_MODE, want one of [CHROME_OS_VERIFIED_MODE]",
			"minOsVersion: got 15183.69.3, want at least 15300",
			"signals.diskEncryption: got DISK_ENCRYPTION_DISABLED, want one of [DISK_ENCRYPTION_ENCRYPTED]",
			"signals.osFirewall: got OS_FIREWALL_UNKNOWN, want one of [OS_FIREWALL_ENABLED]",
		}},
		{"odd reported values are quoted", config.VerifiedAccessPolicy{CustomerIDs: []string{"C0abc123"}},
			edit(chromeOS(), func(r *Result) { r.CustomerID = "C0x, C0abc123]" }),
			[]string{`customerIds: got "C0x, C0abc123]", want one of [C0abc123]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := CompilePolicy(tt.policy)
			if err != nil {
				t.Fatalf("CompilePolicy: %v", err)
			}
			if got := p.Evaluate(tt.result); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("failed rules:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestCompilePolicyErrors(t *testing.T) {
	tests := []struct {
		policy config.VerifiedAccessPolicy
		want   string
	}{
		{config.VerifiedAccessPolicy{KeyTrustLevels: []string{"VERIFIED"}}, "keyTrustLevels[0]"},
		{config.VerifiedAccessPolicy{Signals: map[string][]string{"nope": {"x"}}}, "signals.nope: unknown device signal"},
		{config.VerifiedAccessPolicy{Signals: map[string][]string{"osFirewall": {"ENABLED"}}}, "signals.osFirewall[0]"},
		{config.VerifiedAccessPolicy{Signals: map[string][]string{"osFirewall": {}}}, "no acceptable value"},
		{config.VerifiedAccessPolicy{MinOSVersion: "1.x"}, "minOsVersion"},
		{config.VerifiedAccessPolicy{MinBrowserVersion: "x"}, "minBrowserVersion"},
	}
	for _, tt := range tests {
		if _, err := CompilePolicy(tt.policy); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err %v; want %q", tt.policy, err, tt.want)
		}
	}
}

// TestSignalTableMatchesGetters: every signal the configuration accepts can be read from a verify
// result, and nothing else can.
func TestSignalTableMatchesGetters(t *testing.T) {
	getters := signalGetters()
	var names []string
	for n := range getters {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, config.VASignalNames()) {
		t.Errorf("getters %v\nconfig  %v", names, config.VASignalNames())
	}
	empty := &va2.DeviceSignals{}
	for _, n := range config.VASignalNames() {
		values, _ := config.VASignalValues(n)
		got := getters[n](empty)
		if config.VASignalIsBoolean(n) {
			if got != "false" {
				t.Errorf("%s of empty signals = %q; want false", n, got)
			}
		} else if got != values[0] || !strings.HasSuffix(got, "UNSPECIFIED") {
			t.Errorf("%s of empty signals = %q; want %s", n, got, values[0])
		}
	}
}

// TestEnumsMatchDiscovery compares the enumerations the configuration accepts with the v2
// discovery document in the module cache, so that an API update that adds or renames a value
// fails here instead of producing a policy that can never match.
func TestEnumsMatchDiscovery(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "google.golang.org/api").Output()
	if err != nil {
		t.Skipf("module directory of google.golang.org/api: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "verifiedaccess", "v2", "verifiedaccess-api.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("discovery document: %v", err)
	}
	var doc struct {
		Schemas map[string]struct {
			Properties map[string]struct {
				Type string   `json:"type"`
				Ref  string   `json:"$ref"`
				Enum []string `json:"enum"`
			} `json:"properties"`
		} `json:"schemas"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	signals := doc.Schemas["DeviceSignals"].Properties
	for _, name := range config.VASignalNames() {
		values, _ := config.VASignalValues(name)
		prop, ok := signals[name]
		if name == "antivirus.state" {
			prop, ok = doc.Schemas["Antivirus"].Properties["state"]
		}
		switch {
		case !ok:
			t.Errorf("%s: not a DeviceSignals field in the discovery document", name)
		case config.VASignalIsBoolean(name):
			if prop.Type != "boolean" {
				t.Errorf("%s: discovery type %q, table says boolean", name, prop.Type)
			}
		case !slices.Equal(prop.Enum, values):
			t.Errorf("%s:\n discovery %v\n table     %v", name, prop.Enum, values)
		}
	}
	// Every enumerated or boolean signal of the document is in the table.
	for name, prop := range signals {
		if len(prop.Enum) > 0 || prop.Type == "boolean" {
			if _, ok := config.VASignalValues(name); !ok {
				t.Errorf("discovery signal %s (%v) is missing from the table", name, prop.Enum)
			}
		}
	}
	result := doc.Schemas["VerifyChallengeResponseResult"].Properties
	for _, f := range []string{"keyTrustLevel", "profileKeyTrustLevel"} {
		if !slices.Equal(result[f].Enum, config.VAKeyTrustLevels()) {
			t.Errorf("%s:\n discovery %v\n table     %v", f, result[f].Enum, config.VAKeyTrustLevels())
		}
	}
}
