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

// withSignals is chromeOS with the list and object signals set.
func withSignals() *Result {
	r := chromeOS()
	r.Signals.DeviceAffiliationIds = []string{"aff-corp", "aff-lab"}
	r.Signals.ProfileAffiliationIds = []string{"aff-user"}
	r.Signals.MacAddresses = []string{"02:00:5E:10:00:01", "02:00:5e:10:00:02"}
	r.Signals.SystemDnsServers = []string{"10.0.0.53", "10.1.0.53"}
	r.Signals.Imei = []string{"490154203237518"}
	r.Signals.Meid = []string{"A0000000000001"}
	r.Signals.CrowdStrikeAgent = &va2.CrowdStrikeAgent{AgentId: "0123456789abcdef0123456789abcdef", CustomerId: "FEDCBA9876543210FEDCBA9876543210"}
	return r
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
		{"key trust denies absent level", config.VerifiedAccessPolicy{KeyTrustLevels: []string{"CHROME_OS_VERIFIED_MODE"}},
			edit(chromeOS(), func(r *Result) { r.KeyTrustLevel = "" }),
			[]string{"keyTrustLevels: got KEY_TRUST_LEVEL_UNSPECIFIED, want one of [CHROME_OS_VERIFIED_MODE]"}},

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
		{"absent antivirus", config.VerifiedAccessPolicy{Signals: map[string][]string{"antivirus.state": {"ENABLED"}}},
			edit(chromeOS(), func(r *Result) { r.Signals.Antivirus = nil }),
			[]string{"signals.antivirus.state: got STATE_UNSPECIFIED, want one of [ENABLED]"}},
		{"boolean allows", config.VerifiedAccessPolicy{Signals: map[string][]string{"siteIsolationEnabled": {"true"}}}, chromeOS(), nil},
		{"boolean denies", config.VerifiedAccessPolicy{Signals: map[string][]string{"siteIsolationEnabled": {"true"}}},
			edit(chromeOS(), func(r *Result) { r.Signals.SiteIsolationEnabled = false }),
			[]string{"signals.siteIsolationEnabled: got false, want one of [true]"}},

		{"affiliation: any reported id listed", config.VerifiedAccessPolicy{Signals: map[string][]string{"deviceAffiliationIds": {"aff-other", "aff-lab"}}}, withSignals(), nil},
		{"affiliation: none listed", config.VerifiedAccessPolicy{Signals: map[string][]string{"deviceAffiliationIds": {"aff-other"}}}, withSignals(),
			[]string{"signals.deviceAffiliationIds: got [aff-corp, aff-lab], want one of [aff-other]"}},
		{"affiliation: none reported", config.VerifiedAccessPolicy{Signals: map[string][]string{"profileAffiliationIds": {"aff-user"}}}, chromeOS(),
			[]string{"signals.profileAffiliationIds: got nothing, want one of [aff-user]"}},
		{"profile affiliation", config.VerifiedAccessPolicy{Signals: map[string][]string{"profileAffiliationIds": {"aff-user"}}}, withSignals(), nil},
		{"MAC address in any notation", config.VerifiedAccessPolicy{Signals: map[string][]string{"macAddresses": {"02-00-5e-10-00-01"}}}, withSignals(), nil},
		{"MAC address not known", config.VerifiedAccessPolicy{Signals: map[string][]string{"macAddresses": {"02:00:5e:10:00:09"}}}, withSignals(),
			[]string{"signals.macAddresses: got [02:00:5E:10:00:01, 02:00:5e:10:00:02], want one of [02:00:5e:10:00:09]"}},
		{"DNS servers all within", config.VerifiedAccessPolicy{Signals: map[string][]string{"systemDnsServers": {"10.0.0.0/16", "10.1.0.53"}}}, withSignals(), nil},
		{"DNS server outside", config.VerifiedAccessPolicy{Signals: map[string][]string{"systemDnsServers": {"10.0.0.0/16"}}}, withSignals(),
			[]string{"signals.systemDnsServers: got [10.0.0.53, 10.1.0.53], want each in [10.0.0.0/16]"}},
		{"DNS servers not reported", config.VerifiedAccessPolicy{Signals: map[string][]string{"systemDnsServers": {"10.0.0.0/8"}}}, chromeOS(),
			[]string{"signals.systemDnsServers: got nothing, want each in [10.0.0.0/8]"}},
		{"DNS server that is not an address", config.VerifiedAccessPolicy{Signals: map[string][]string{"systemDnsServers": {"10.0.0.0/8"}}},
			edit(withSignals(), func(r *Result) { r.Signals.SystemDnsServers = []string{"10.0.0.53", "dns.example"} }),
			[]string{"signals.systemDnsServers: got [10.0.0.53, dns.example], want each in [10.0.0.0/8]"}},
		{"IMEI listed", config.VerifiedAccessPolicy{Signals: map[string][]string{"imei": {"490154203237518"}, "meid": {"a0000000000001"}}}, withSignals(), nil},
		{"CrowdStrike agent", config.VerifiedAccessPolicy{Signals: map[string][]string{
			"crowdStrikeAgent.customerId": {"fedcba9876543210fedcba9876543210"}, "crowdStrikeAgent.agentId": {"0123456789ABCDEF0123456789ABCDEF"}}}, withSignals(), nil},
		{"no CrowdStrike agent", config.VerifiedAccessPolicy{Signals: map[string][]string{"crowdStrikeAgent.customerId": {"FEDCBA9876543210FEDCBA9876543210"}}}, chromeOS(),
			[]string{"signals.crowdStrikeAgent.customerId: got nothing, want one of [FEDCBA9876543210FEDCBA9876543210]"}},
		{"no signals at all", config.VerifiedAccessPolicy{Signals: map[string][]string{"osFirewall": {"OS_FIREWALL_ENABLED"}}},
			edit(chromeOS(), func(r *Result) { r.Signals = nil }),
			[]string{"signals.osFirewall: got no device signals, want one of [OS_FIREWALL_ENABLED]"}},

		{"min OS allows", config.VerifiedAccessPolicy{MinOSVersion: "15183.69"}, chromeOS(), nil},
		{"min OS equal allows", config.VerifiedAccessPolicy{MinOSVersion: "15183.69.3.0"}, chromeOS(), nil},
		{"min OS denies", config.VerifiedAccessPolicy{MinOSVersion: "15200"}, chromeOS(),
			[]string{"minOsVersion: got 15183.69.3, want at least 15200"}},
		{"browser versions are numeric, not strings", config.VerifiedAccessPolicy{MinBrowserVersion: "108.0.1.0"},
			edit(chromeOS(), func(r *Result) { r.Signals.BrowserVersion = "107.0.5286.0" }),
			[]string{"minBrowserVersion: got 107.0.5286.0, want at least 108.0.1.0"}},
		{"browser 108 beats 107.0.5286", config.VerifiedAccessPolicy{MinBrowserVersion: "107.0.5286.0"},
			edit(chromeOS(), func(r *Result) { r.Signals.BrowserVersion = "108.0.1.0" }), nil},
		{"10 beats 9 numerically", config.VerifiedAccessPolicy{MinBrowserVersion: "9.0"},
			edit(chromeOS(), func(r *Result) { r.Signals.BrowserVersion = "10.0" }), nil},
		{"non-numeric version fails", config.VerifiedAccessPolicy{MinOSVersion: "10"},
			edit(chromeOS(), func(r *Result) { r.Signals.OsVersion = "R120 beta" }),
			[]string{`minOsVersion: got "R120 beta", not a numeric version, want at least 10`}},
		{"missing version fails", config.VerifiedAccessPolicy{MinBrowserVersion: "100"},
			edit(chromeOS(), func(r *Result) { r.Signals.BrowserVersion = "" }),
			[]string{"minBrowserVersion: got nothing, want at least 100"}},
		{"missing signals fail versions", config.VerifiedAccessPolicy{MinOSVersion: "1"},
			edit(chromeOS(), func(r *Result) { r.Signals = nil }),
			[]string{"minOsVersion: got nothing, want at least 1"}},

		{"customer allows", config.VerifiedAccessPolicy{CustomerIDs: []string{"C0abc123"}}, chromeOS(), nil},
		{"customer denies", config.VerifiedAccessPolicy{CustomerIDs: []string{"C0other1"}}, chromeOS(),
			[]string{"customerIds: got C0abc123, want one of [C0other1]"}},
		{"a profile's customer is not the device's", config.VerifiedAccessPolicy{CustomerIDs: []string{"C0abc123"}},
			&Result{APIVersion: config.VAv2, ProfileCustomerID: "C0abc123"},
			[]string{"customerIds: got nothing, want one of [C0abc123]"}},
		{"no customer at all", config.VerifiedAccessPolicy{CustomerIDs: []string{"C0abc123"}}, &Result{APIVersion: config.VAv2},
			[]string{"customerIds: got nothing, want one of [C0abc123]"}},

		{"device enrollment domain allows", config.VerifiedAccessPolicy{EnrollmentDomains: []string{"example.com"}}, chromeOS(), nil},
		{"enrollment domain, any case", config.VerifiedAccessPolicy{EnrollmentDomains: []string{"EXAMPLE.com"}},
			edit(chromeOS(), func(r *Result) { r.Signals.DeviceEnrollmentDomain = "Example.COM" }), nil},
		{"a profile's enrollment domain is not the device's", config.VerifiedAccessPolicy{EnrollmentDomains: []string{"example.com"}},
			edit(chromeOS(), func(r *Result) {
				r.Signals.DeviceEnrollmentDomain, r.Signals.ProfileEnrollmentDomain = "", "example.com"
			}),
			[]string{"enrollmentDomains: got nothing, want one of [example.com]"}},
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
		{config.VerifiedAccessPolicy{KeyTrustLevels: []string{"CHROME_OS_VERIFIED_MODE", "CHROME_BROWSER_OS_KEY"}}, "keyTrustLevels[1]: \"CHROME_BROWSER_OS_KEY\" is a Chrome browser's trust level"},
		{config.VerifiedAccessPolicy{ProfileKeyTrustLevels: []string{"CHROME_BROWSER_HW_KEY"}}, "profileKeyTrustLevels: Google reports a profile trust level only for managed Chrome browser profiles"},
		{config.VerifiedAccessPolicy{Signals: map[string][]string{"macAddresses": {"nope"}}}, "signals.macAddresses[0]"},
		{config.VerifiedAccessPolicy{Signals: map[string][]string{"systemDnsServers": {"10.0.0.1/8"}}}, "signals.systemDnsServers[0]"},
		{config.VerifiedAccessPolicy{Signals: map[string][]string{"imei": {}}}, "no acceptable value"},
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
		got := getters[n](empty)
		if _, isValue := config.VASignalCheck(n); isValue {
			if len(got) != 0 {
				t.Errorf("%s of empty signals = %q; want nothing", n, got)
			}
			continue
		}
		values, _ := config.VASignalValues(n)
		if config.VASignalIsBoolean(n) {
			if !slices.Equal(got, []string{"false"}) {
				t.Errorf("%s of empty signals = %q; want false", n, got)
			}
		} else if len(got) != 1 || got[0] != values[0] || !strings.HasSuffix(got[0], "UNSPECIFIED") {
			t.Errorf("%s of empty signals = %q; want %s", n, got, values[0])
		}
	}
	// Every list and object signal of the v2 DeviceSignals is a policy signal.
	full := withSignals().Signals
	for _, n := range []string{"deviceAffiliationIds", "profileAffiliationIds", "macAddresses", "systemDnsServers", "imei", "meid",
		"crowdStrikeAgent.agentId", "crowdStrikeAgent.customerId"} {
		if g, ok := getters[n]; !ok || len(g(full)) == 0 {
			t.Errorf("%s: not read from the signals", n)
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
		if _, isValue := config.VASignalCheck(name); isValue {
			// A list of strings, or a field of the CrowdStrike agent.
			prop, ok := signals[name]
			if agent, field, nested := strings.Cut(name, "."); nested {
				ok = signals[agent].Ref == "CrowdStrikeAgent"
				prop, ok = doc.Schemas["CrowdStrikeAgent"].Properties[field], ok && doc.Schemas["CrowdStrikeAgent"].Properties[field].Type == "string"
			} else {
				ok = ok && prop.Type == "array"
			}
			if !ok || len(prop.Enum) > 0 {
				t.Errorf("%s: not a list or CrowdStrike field of DeviceSignals in the discovery document (%+v)", name, prop)
			}
			continue
		}
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
