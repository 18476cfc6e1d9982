package config

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// vaYAML is minimalYAML with a Verified Access section served over TLS from files next to the
// configuration (writeVAFiles creates them).
const vaYAML = minimalYAML + `
verifiedAccess:
  enabled: true
  listen: 0.0.0.0:9443
  tls: {certFile: tls/server.crt, keyFile: tls/server.key}
  apiVersion: v1
  challengeLifetime: 45s
  endpoint: http://127.0.0.1:8480/
  rateLimit: {requestsPerSecond: 2.5, burst: 10}
  maxConcurrentChallenges: 8
  maxConcurrentEnrollments: 12
  maxConcurrentPerClient: 2
  queueTimeout: 3s
  trustedProxies: [10.0.0.0/8, 192.0.2.7, "2001:db8::/32"]
  profiles:
    WiFi-Machine:
      apiVersion: v2
      scopes: [machine, user]
      enrollmentDomain: example.com
      userDomains: [example.com, corp.example.com]
      caConnection: ca
      subject: {commonName: "{{.Signals.SerialNumber}}", organization: [Example Corp]}
      subjectAltNames: {dns: ["{{.Signals.Hostname}}.devices.example.com"]}
      keyUsage: [digitalSignature]
      extendedKeyUsage: [clientAuth]
      validity: 720h
      policy:
        keyTrustLevels: [CHROME_OS_VERIFIED_MODE]
        signals:
          diskEncryption: [DISK_ENCRYPTION_ENCRYPTED]
          safeBrowsingProtectionLevel: [STANDARD, ENHANCED]
          siteIsolationEnabled: [true]
          antivirus.state: ENABLED
          deviceAffiliationIds: [corp-affiliation]
          macAddresses: ["02:00:5e:10:00:01"]
          systemDnsServers: [10.0.0.0/8, 192.0.2.53]
          imei: [490154203237518]
          crowdStrikeAgent.customerId: 0123456789ABCDEF0123456789ABCDEF
        minOsVersion: "15183.69"
        minBrowserVersion: 120.0.6099.0
        customerIds: [C0abc123]
        enrollmentDomains: [example.com]
    legacy:
      enrollmentDomain: example.com
      caConnection: ca
      subject: {commonName: "{{.DevicePermanentID}}"}
`

// writeVAConfig writes content and the TLS files vaYAML names, and returns the config path.
func writeVAConfig(t *testing.T, content string) string {
	t.Helper()
	path := writeConfig(t, content)
	dir := filepath.Join(filepath.Dir(path), "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"server.crt", "server.key"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestVerifiedAccessLoad(t *testing.T) {
	cleanEnv(t)
	path := writeVAConfig(t, vaYAML)
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	dir := filepath.Dir(path)
	va := cfg.VerifiedAccess
	if !va.Enabled || va.Listen != "0.0.0.0:9443" || va.APIVersion != VAv1 || va.ChallengeLifetime != 45*time.Second ||
		va.Endpoint != "http://127.0.0.1:8480/" || va.Insecure {
		t.Errorf("section: %+v", va)
	}
	if va.RateLimit != (RateLimit{RequestsPerSecond: 2.5, Burst: 10}) || va.MaxConcurrentChallenges != 8 || va.MaxConcurrentEnrollments != 12 ||
		va.MaxConcurrentPerClient != 2 || va.QueueTimeout != 3*time.Second ||
		!reflect.DeepEqual(va.TrustedProxies, []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"}) {
		t.Errorf("limits: %+v", va)
	}
	if va.TLS.CertFile != filepath.Join(dir, "tls", "server.crt") || va.TLS.KeyFile != filepath.Join(dir, "tls", "server.key") {
		t.Errorf("TLS paths not resolved against the file's directory: %+v", va.TLS)
	}
	want := VerifiedAccessProfile{
		APIVersion:       VAv2,
		Scopes:           []string{"machine", "user"},
		EnrollmentDomain: "example.com",
		UserDomains:      []string{"example.com", "corp.example.com"},
		CAConnection:     "ca",
		Subject:          Subject{CommonName: "{{.Signals.SerialNumber}}", Organization: []string{"Example Corp"}},
		SubjectAltNames:  SANs{DNS: []string{"{{.Signals.Hostname}}.devices.example.com"}},
		KeyUsage:         []string{"digitalSignature"},
		ExtKeyUsage:      []string{"clientAuth"},
		Validity:         720 * time.Hour,
		Policy: VerifiedAccessPolicy{
			KeyTrustLevels: []string{"CHROME_OS_VERIFIED_MODE"},
			Signals: map[string][]string{
				"diskEncryption":              {"DISK_ENCRYPTION_ENCRYPTED"},
				"safeBrowsingProtectionLevel": {"STANDARD", "ENHANCED"},
				"siteIsolationEnabled":        {"true"},
				"antivirus.state":             {"ENABLED"},
				"deviceAffiliationIds":        {"corp-affiliation"},
				"macAddresses":                {"02:00:5e:10:00:01"},
				"systemDnsServers":            {"10.0.0.0/8", "192.0.2.53"},
				"imei":                        {"490154203237518"},
				"crowdStrikeAgent.customerId": {"0123456789ABCDEF0123456789ABCDEF"},
			},
			MinOSVersion:      "15183.69",
			MinBrowserVersion: "120.0.6099.0",
			CustomerIDs:       []string{"C0abc123"},
			EnrollmentDomains: []string{"example.com"},
		},
	}
	got, ok := va.Profiles["WiFi-Machine"]
	if !ok {
		t.Fatalf("profile names must keep their case: %v", slices.Sorted(maps.Keys(va.Profiles)))
	}
	// Lists the file leaves out decode as empty, not nil; compare what matters.
	got.Subject.OrganizationalUnit, got.SubjectAltNames.Email, got.SubjectAltNames.URI, got.SubjectAltNames.UPN = nil, nil, nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("profile:\n got %+v\nwant %+v", got, want)
	}
	legacy := va.Profiles["legacy"]
	if legacy.APIVersion != VAv1 {
		t.Errorf("apiVersion must be inherited from verifiedAccess.apiVersion: %q", legacy.APIVersion)
	}
	if !reflect.DeepEqual(legacy.Scopes, []string{VAScopeMachine}) || legacy.Validity != DefaultValidity {
		t.Errorf("profile defaults: scopes %v, validity %s", legacy.Scopes, legacy.Validity)
	}
}

func TestVerifiedAccessEnv(t *testing.T) {
	cleanEnv(t)
	t.Setenv("CERTPROV_VERIFIEDACCESS_ENABLED", "false")
	t.Setenv("CERTPROV_VERIFIEDACCESS_CHALLENGELIFETIME", "30s")
	t.Setenv("CERTPROV_VERIFIEDACCESS_RATELIMIT_BURST", "40")
	t.Setenv("CERTPROV_VERIFIEDACCESS_TRUSTEDPROXIES", "10.1.0.0/16,10.2.0.9")
	t.Setenv("CERTPROV_VERIFIEDACCESS_PROFILES_WIFI_MACHINE_POLICY_MINOSVERSION", "15300")
	t.Setenv("CERTPROV_VERIFIEDACCESS_PROFILES_WIFI_MACHINE_POLICY_CUSTOMERIDS", "C0abc123, C0def456")
	cfg, err := Load(writeVAConfig(t, vaYAML))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	va := cfg.VerifiedAccess
	p := va.Profiles["WiFi-Machine"]
	if va.RateLimit.Burst != 40 || !reflect.DeepEqual(va.TrustedProxies, []string{"10.1.0.0/16", "10.2.0.9"}) {
		t.Errorf("limit overrides not applied: burst %d, trusted proxies %q", va.RateLimit.Burst, va.TrustedProxies)
	}
	if va.Enabled || va.ChallengeLifetime != 30*time.Second || p.Policy.MinOSVersion != "15300" ||
		!reflect.DeepEqual(p.Policy.CustomerIDs, []string{"C0abc123", "C0def456"}) {
		t.Errorf("environment overrides not applied: enabled %v, lifetime %s, policy %+v", va.Enabled, va.ChallengeLifetime, p.Policy)
	}
	if len(p.Policy.Signals) != 9 {
		t.Errorf("signals lost: %v", p.Policy.Signals)
	}
}

func TestVerifiedAccessAbsent(t *testing.T) {
	cleanEnv(t)
	cfg := mustLoad(t, minimalYAML)
	if cfg.VerifiedAccess.Enabled || cfg.VerifiedAccess.Profiles != nil {
		t.Errorf("verifiedAccess must be off without a section: %+v", cfg.VerifiedAccess)
	}
}

func TestVerifiedAccessProblems(t *testing.T) {
	const base = "verifiedAccess.profiles.WiFi-Machine"
	tests := []struct {
		name string
		old  string // replaced in vaYAML by new
		new  string
		path string
		msg  string
	}{
		{"unknown section key", "  challengeLifetime: 45s", "  challengeLifetim: 45s", "verifiedAccess.challengeLifetim", `did you mean "challengeLifetime"`},
		{"unknown profile key", "      scopes: [machine, user]", "      scope: [machine, user]", base + ".scope", `did you mean "scopes"`},
		{"unknown policy key", "        minOsVersion:", "        minOSVersion:", base + ".policy.minOSVersion", `did you mean "minOsVersion"`},
		{"api version", "  apiVersion: v1\n", "  apiVersion: v3\n", "verifiedAccess.apiVersion", "not one of v1, v2"},
		{"profile api version", "      apiVersion: v2", "      apiVersion: V2", base + ".apiVersion", "not one of"},
		{"lifetime zero", "challengeLifetime: 45s", "challengeLifetime: 0s", "verifiedAccess.challengeLifetime", "positive"},
		{"lifetime long", "challengeLifetime: 45s", "challengeLifetime: 1h", "verifiedAccess.challengeLifetime", "at most 10m"},
		{"endpoint", "endpoint: http://127.0.0.1:8480/", "endpoint: 127.0.0.1:8480", "verifiedAccess.endpoint", "absolute http(s) URL"},
		{"listen", "listen: 0.0.0.0:9443", "listen: 9443", "verifiedAccess.listen", "host:port"},
		{"listen port", "listen: 0.0.0.0:9443", "listen: 0.0.0.0:99999", "verifiedAccess.listen", "not a port number"},
		{"tls required", "  tls: {certFile: tls/server.crt, keyFile: tls/server.key}\n", "", "verifiedAccess.tls.certFile", "is required"},
		{"tls file missing", "keyFile: tls/server.key", "keyFile: tls/missing.key", "verifiedAccess.tls.keyFile", "missing.key"},
		{"insecure off loopback", "  tls: {certFile: tls/server.crt, keyFile: tls/server.key}\n", "  insecure: true\n", "verifiedAccess.insecure", "only allowed on a loopback"},
		{"insecure on all interfaces", "  listen: 0.0.0.0:9443\n  tls: {certFile: tls/server.crt, keyFile: tls/server.key}\n", "  listen: :9443\n  insecure: true\n", "verifiedAccess.insecure", "only allowed on a loopback"},
		{"insecure with tls", "  listen: 0.0.0.0:9443\n", "  listen: 127.0.0.1:9443\n  insecure: true\n", "verifiedAccess.insecure", "contradicts verifiedAccess.tls"},
		{"rate zero", "requestsPerSecond: 2.5", "requestsPerSecond: 0", "verifiedAccess.rateLimit.requestsPerSecond", "positive"},
		{"burst one", "burst: 10}", "burst: 1}", "verifiedAccess.rateLimit.burst", "two requests"},
		{"challenge cap", "maxConcurrentChallenges: 8", "maxConcurrentChallenges: 1", "verifiedAccess.maxConcurrentChallenges", "between 2 and 10000, got 1"},
		{"enrollment cap", "maxConcurrentEnrollments: 12", "maxConcurrentEnrollments: 20000", "verifiedAccess.maxConcurrentEnrollments", "between 2 and 10000"},
		{"per client zero", "maxConcurrentPerClient: 2", "maxConcurrentPerClient: 0", "verifiedAccess.maxConcurrentPerClient", "at least 1"},
		{"per client takes all", "maxConcurrentPerClient: 2", "maxConcurrentPerClient: 8", "verifiedAccess.maxConcurrentPerClient", "less than maxConcurrentChallenges (8)"},
		{"queue timeout zero", "queueTimeout: 3s", "queueTimeout: 0s", "verifiedAccess.queueTimeout", "positive"},
		{"queue timeout long", "queueTimeout: 3s", "queueTimeout: 1m", "verifiedAccess.queueTimeout", "at most 30s"},
		{"proxy not an address", "192.0.2.7,", "proxy.example.com,", "verifiedAccess.trustedProxies[1]", "not an IP address or CIDR"},
		{"proxy host bits", "10.0.0.0/8,", "10.1.2.3/8,", "verifiedAccess.trustedProxies[0]", "did you mean 10.0.0.0/8"},
		{"proxy twice", "192.0.2.7,", "10.0.0.0/8,", "verifiedAccess.trustedProxies[1]", "twice"},
		{"no scopes", "scopes: [machine, user]", "scopes: []", base + ".scopes", "at least one"},
		{"bad scope", "scopes: [machine, user]", "scopes: [machine, device]", base + ".scopes[1]", `"device" is not one of machine, user`},
		{"scope twice", "scopes: [machine, user]", "scopes: [machine, machine]", base + ".scopes[1]", "twice"},
		{"machine without domain", "      enrollmentDomain: example.com\n      userDomains", "      userDomains", base + ".enrollmentDomain", "required for machine keys"},
		{"bad domain", "enrollmentDomain: example.com\n      userDomains", "enrollmentDomain: exa mple.com\n      userDomains", base + ".enrollmentDomain", "not a domain name"},
		{"bad user domain", "userDomains: [example.com, corp.example.com]", "userDomains: [example.com, \"*.example.com\"]", base + ".userDomains[1]", "not a domain name"},
		{"user domains without user scope", "scopes: [machine, user]", "scopes: [machine]", base + ".userDomains", "only used with the user scope"},
		{"no CA", "      caConnection: ca\n      subject: {commonName: \"{{.Signals", "      subject: {commonName: \"{{.Signals", base + ".caConnection", "must name the CA connection"},
		{"unknown CA", "      caConnection: ca\n      subject: {commonName: \"{{.Signals", "      caConnection: other\n      subject: {commonName: \"{{.Signals", base + ".caConnection", `"other" is not in caConnections (known: ca)`},
		{"upn", "subjectAltNames: {dns:", "subjectAltNames: {upn: [\"{{.Identity}}\"], dns:", base + ".subjectAltNames.upn", "not supported"},
		{"key usage", "keyUsage: [digitalSignature]", "keyUsage: [keyCertSign]", base + ".keyUsage[0]", "not one of"},
		{"validity", "validity: 720h", "validity: 100000h", base + ".validity", "at most ten years"},
		{"names nobody", "      subject: {commonName: \"{{.Signals.SerialNumber}}\", organization: [Example Corp]}\n      subjectAltNames: {dns: [\"{{.Signals.Hostname}}.devices.example.com\"]}\n", "", base, "must name someone"},
		{"trust level", "keyTrustLevels: [CHROME_OS_VERIFIED_MODE]", "keyTrustLevels: [VERIFIED_MODE]", base + ".policy.keyTrustLevels[0]", `"VERIFIED_MODE" is not one of`},
		{"browser trust level", "keyTrustLevels: [CHROME_OS_VERIFIED_MODE]", "keyTrustLevels: [CHROME_OS_VERIFIED_MODE, CHROME_BROWSER_HW_KEY]", base + ".policy.keyTrustLevels[1]", "a Chrome browser's trust level, never reported here: only ChromeOS devices"},
		{"profile trust levels", "keyTrustLevels: [CHROME_OS_VERIFIED_MODE]", "keyTrustLevels: [CHROME_OS_VERIFIED_MODE]\n        profileKeyTrustLevels: [CHROME_BROWSER_OS_KEY]", base + ".policy.profileKeyTrustLevels", "enterprise.platformKeys"},
		{"mac address", `macAddresses: ["02:00:5e:10:00:01"]`, `macAddresses: ["02:00:5e:10:00:01", "02-00"]`, base + ".policy.signals.macAddresses[1]", "not a MAC address"},
		{"dns server", "systemDnsServers: [10.0.0.0/8, 192.0.2.53]", "systemDnsServers: [10.0.0.0/8, dns.example.com]", base + ".policy.signals.systemDnsServers[1]", "not an IP address or CIDR prefix"},
		{"imei", "imei: [490154203237518]", "imei: [\"4901 5420\"]", base + ".policy.signals.imei[0]", "not an IMEI"},
		{"affiliation id", "deviceAffiliationIds: [corp-affiliation]", "deviceAffiliationIds: [\"a\\tb\"]", base + ".policy.signals.deviceAffiliationIds[0]", "not an affiliation id"},
		{"value signal empty list", "deviceAffiliationIds: [corp-affiliation]", "deviceAffiliationIds: []", base + ".policy.signals.deviceAffiliationIds", "at least one"},
		{"unknown signal", "diskEncryption: [DISK", "diskEncription: [DISK", base + ".policy.signals.diskEncription", `did you mean "diskEncryption"`},
		{"unknown signal far off", "diskEncryption: [DISK", "serialNumber: [DISK", base + ".policy.signals.serialNumber", "policy signals are allowScreenLock, antivirus.state"},
		{"signal value", "[DISK_ENCRYPTION_ENCRYPTED]", "[ENCRYPTED]", base + ".policy.signals.diskEncryption[0]", `"ENCRYPTED" is not one of DISK_ENCRYPTION_UNSPECIFIED`},
		{"screen lock value", "diskEncryption: [DISK_ENCRYPTION_ENCRYPTED]", "screenLockSecured: [SCREEN_LOCK_SECURED]", base + ".policy.signals.screenLockSecured[0]", "SCREEN_LOCK_SECURED_ENABLED"},
		{"boolean signal value", "siteIsolationEnabled: [true]", "siteIsolationEnabled: [yes please]", base + ".policy.signals.siteIsolationEnabled[0]", "not one of true, false"},
		{"signal empty list", "siteIsolationEnabled: [true]", "siteIsolationEnabled: []", base + ".policy.signals.siteIsolationEnabled", "at least one"},
		{"signal not scalars", "siteIsolationEnabled: [true]", "siteIsolationEnabled: {a: b}", base + ".policy.signals.siteIsolationEnabled", "must be a list of values"},
		{"signal number", "siteIsolationEnabled: [true]", "siteIsolationEnabled: [1]", base + ".policy.signals.siteIsolationEnabled[0]", "not one of true, false"},
		{"signal float", "siteIsolationEnabled: [true]", "siteIsolationEnabled: [1.5]", base + ".policy.signals.siteIsolationEnabled", "must be a list of values"},
		{"signals not a mapping", "        signals:\n", "        signals: [a]\n        x-signals:\n", base + ".policy.signals", "must be a mapping"},
		{"min os version", `minOsVersion: "15183.69"`, `minOsVersion: "15183.x"`, base + ".policy.minOsVersion", "not a dotted numeric version"},
		{"min browser version", "minBrowserVersion: 120.0.6099.0", "minBrowserVersion: 120..0", base + ".policy.minBrowserVersion", "not a dotted numeric version"},
		{"customer id", "customerIds: [C0abc123]", "customerIds: [example.com]", base + ".policy.customerIds[0]", "not a customer id"},
		{"enrollment domain", "enrollmentDomains: [example.com]", "enrollmentDomains: [\"\"]", base + ".policy.enrollmentDomains[0]", "must not be empty"},
		{"v1 with signals", "      apiVersion: v2\n", "", base + ".policy.signals", "needs apiVersion v2"},
		{"v1 with trust levels", "      apiVersion: v2\n", "", base + ".policy.keyTrustLevels", "needs apiVersion v2"},
		{"v1 with versions", "      apiVersion: v2\n", "", base + ".policy.minOsVersion", "needs apiVersion v2"},
		{"v1 with customers", "      apiVersion: v2\n", "", base + ".policy.customerIds", "needs apiVersion v2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			if !strings.Contains(vaYAML, tt.old) {
				t.Fatalf("test is stale: %q not in vaYAML", tt.old)
			}
			_, err := Load(writeVAConfig(t, strings.Replace(vaYAML, tt.old, tt.new, 1)))
			if err == nil {
				t.Fatal("Load succeeded; want problems")
			}
			pe, ok := err.(*ProblemsError)
			if !ok {
				t.Fatalf("error %T %v", err, err)
			}
			p := problemAt(t, pe.Problems, tt.path)
			if !strings.Contains(p.Message, tt.msg) {
				t.Errorf("%s: %q; want it to mention %q", tt.path, p.Message, tt.msg)
			}
		})
	}
}

func TestVerifiedAccessDisabledSkipsServerChecks(t *testing.T) {
	cleanEnv(t)
	// No TLS files and no profiles: fine while the section is off.
	mustLoad(t, minimalYAML+"verifiedAccess: {enabled: false, listen: \"0.0.0.0:8443\"}\n")
	ps := loadProblems(t, minimalYAML+"verifiedAccess: {enabled: true, insecure: true}\n")
	problemAt(t, ps, "verifiedAccess.profiles")
	ps = loadProblems(t, strings.Replace(minimalYAML, "pubsub:", "google: {credentials: {type: none}, endpoint: \"http://127.0.0.1:1/\"}\npubsub:", 1)+
		"verifiedAccess:\n  enabled: true\n  insecure: true\n  profiles: {p: {enrollmentDomain: example.com, caConnection: ca, subject: {commonName: x}}}\n")
	if p := problemAt(t, ps, "verifiedAccess.endpoint"); !strings.Contains(p.Message, "credentials") {
		t.Errorf("endpoint: %v", p)
	}
}

func TestVerifiedAccessInsecureLoopback(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:8443", "[::1]:8443", "localhost:8443", "127.0.0.2:1"} {
		t.Run(listen, func(t *testing.T) {
			cleanEnv(t)
			mustLoad(t, minimalYAML+"verifiedAccess:\n  enabled: true\n  insecure: true\n  listen: \""+listen+"\"\n"+
				"  profiles: {p: {enrollmentDomain: example.com, caConnection: ca, subject: {commonName: x}}}\n")
		})
	}
}

func TestParseTrustedProxy(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8": "10.0.0.0/8", "192.0.2.7": "192.0.2.7/32", "2001:db8::/32": "2001:db8::/32",
		"::ffff:192.0.2.7": "192.0.2.7/32", "::ffff:10.0.0.0/104": "10.0.0.0/8", "::1": "::1/128",
	} {
		got, err := ParseTrustedProxy(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseTrustedProxy(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/33", "fe80::1%eth0", "::ffff:10.0.0.0/8", "10.0.0.1/8", "example.com"} {
		if got, err := ParseTrustedProxy(in); err == nil {
			t.Errorf("ParseTrustedProxy(%q) = %v; want an error", in, got)
		}
	}
}

func TestVASignalTable(t *testing.T) {
	for _, name := range VASignalNames() {
		if check, ok := VASignalCheck(name); ok {
			if _, enum := VASignalValues(name); enum || check("x\n") == "" {
				t.Errorf("%s: a value signal that is enumerated too, or whose check accepts anything", name)
			}
			continue
		}
		values, ok := VASignalValues(name)
		if !ok || len(values) < 2 {
			t.Errorf("%s: %v %v", name, values, ok)
		}
		values[0] = "changed"
		if again, _ := VASignalValues(name); again[0] == "changed" {
			t.Errorf("%s: VASignalValues hands out its table", name)
		}
	}
	if !VASignalIsBoolean("siteIsolationEnabled") || VASignalIsBoolean("diskEncryption") {
		t.Error("VASignalIsBoolean")
	}
	if _, ok := VASignalValues("serialNumber"); ok {
		t.Error("free-text signals are not policy signals")
	}
	if _, ok := VASignalCheck("hostname"); ok {
		t.Error("free-text signals are not policy signals")
	}
	if VAReachableKeyTrustLevel("CHROME_BROWSER_OS_KEY") || !VAReachableKeyTrustLevel("CHROME_OS_VERIFIED_MODE") || VAReachableKeyTrustLevel("NOPE") {
		t.Error("VAReachableKeyTrustLevel")
	}
}

func TestVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"107.0.5286.0", "108.0.1.0", -1},
		{"108.0.1.0", "107.0.5286.0", 1},
		{"108", "108.0.0.0", 0},
		{"9.0", "10.0", -1},
		{"15183.69.3", "15183.69", 1},
		{"1.02", "1.2", 0},
		{"18446744073709551615", "1", 1},
	}
	for _, tt := range tests {
		a, err := ParseVersion(tt.a)
		if err != nil {
			t.Fatalf("%s: %v", tt.a, err)
		}
		b, err := ParseVersion(tt.b)
		if err != nil {
			t.Fatalf("%s: %v", tt.b, err)
		}
		if got := CompareVersions(a, b); got != tt.want {
			t.Errorf("compare(%s, %s) = %d; want %d", tt.a, tt.b, got, tt.want)
		}
	}
	for _, bad := range []string{"", ".", "1.", ".1", "1..2", "v1.2", "1.2-beta", " 1.2", "1,2", "18446744073709551616", "+1", "-1", "1.2.3a", "Windows 10"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) succeeded", bad)
		}
	}
}
