package config

import (
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/certprov/certprov-adapter/internal/cleartext"
	"github.com/certprov/certprov-adapter/internal/suggest"
)

// The Verified Access v2 enumerations the policy may name, as in the discovery document of
// google.golang.org/api/verifiedaccess/v2 (verifiedaccess-api.json). A test in
// internal/verifiedaccess compares them with the document in the module cache, so that a new
// API version that adds or renames a value shows up as a failing test, not as a policy that can
// never match.

// VAKeyTrustLevels lists the KeyTrustLevel values (keyTrustLevel and profileKeyTrustLevel).
func VAKeyTrustLevels() []string {
	return []string{
		"KEY_TRUST_LEVEL_UNSPECIFIED", "CHROME_OS_VERIFIED_MODE", "CHROME_OS_DEVELOPER_MODE",
		"CHROME_BROWSER_HW_KEY", "CHROME_BROWSER_OS_KEY", "CHROME_BROWSER_NO_KEY", "CHROME_OS_NO_KEY",
	}
}

// VAUnreachable explains why a policy cannot ask for what managed Chrome browsers report (the
// CHROME_BROWSER_* trust levels, profile trust levels): the extension answers with
// enterprise.platformKeys.challengeKey, which exists on ChromeOS only.
const VAUnreachable = "only ChromeOS devices can reach this endpoint (enterprise.platformKeys, which the extension answers with, exists on ChromeOS only)"

// VAReachableKeyTrustLevel reports whether a device that enrolls through this endpoint can have
// keyTrustLevel level: a ChromeOS one, or none.
func VAReachableKeyTrustLevel(level string) bool {
	return slices.Contains(VAKeyTrustLevels(), level) && !strings.HasPrefix(level, "CHROME_BROWSER_")
}

// vaSignals maps each device signal a policy may constrain to its values. Signals that are free
// text (osVersion, browserVersion, the enrollment domains) have their own rules
// (minOsVersion, minBrowserVersion, enrollmentDomains); identifiers (serial number, hostname)
// belong in certificate templates, not in a policy.
func vaSignals() map[string][]string {
	boolean := []string{"true", "false"}
	return map[string][]string{
		"operatingSystem": {"OPERATING_SYSTEM_UNSPECIFIED", "CHROME_OS", "CHROMIUM_OS", "WINDOWS", "MAC_OS_X", "LINUX", "IOS", "ANDROID"},
		"diskEncryption":  {"DISK_ENCRYPTION_UNSPECIFIED", "DISK_ENCRYPTION_UNKNOWN", "DISK_ENCRYPTION_DISABLED", "DISK_ENCRYPTION_ENCRYPTED"},
		"osFirewall":      {"OS_FIREWALL_UNSPECIFIED", "OS_FIREWALL_UNKNOWN", "OS_FIREWALL_DISABLED", "OS_FIREWALL_ENABLED"},
		"screenLockSecured": {"SCREEN_LOCK_SECURED_UNSPECIFIED", "SCREEN_LOCK_SECURED_UNKNOWN",
			"SCREEN_LOCK_SECURED_DISABLED", "SCREEN_LOCK_SECURED_ENABLED"},
		"secureBootMode":              {"SECURE_BOOT_MODE_UNSPECIFIED", "SECURE_BOOT_MODE_UNKNOWN", "SECURE_BOOT_MODE_DISABLED", "SECURE_BOOT_MODE_ENABLED"},
		"safeBrowsingProtectionLevel": {"SAFE_BROWSING_PROTECTION_LEVEL_UNSPECIFIED", "INACTIVE", "STANDARD", "ENHANCED"},
		"passwordProtectionWarningTrigger": {"PASSWORD_PROTECTION_WARNING_TRIGGER_UNSPECIFIED", "POLICY_UNSET",
			"PASSWORD_PROTECTION_OFF", "PASSWORD_REUSE", "PHISHING_REUSE"},
		"realtimeUrlCheckMode": {"REALTIME_URL_CHECK_MODE_UNSPECIFIED", "REALTIME_URL_CHECK_MODE_DISABLED",
			"REALTIME_URL_CHECK_MODE_ENABLED_MAIN_FRAME"},
		"trigger":         {"TRIGGER_UNSPECIFIED", "TRIGGER_BROWSER_NAVIGATION", "TRIGGER_LOGIN_SCREEN"},
		"antivirus.state": {"STATE_UNSPECIFIED", "MISSING", "DISABLED", "ENABLED"},

		"allowScreenLock":               boolean,
		"builtInDnsClientEnabled":       boolean,
		"chromeRemoteDesktopAppBlocked": boolean,
		"siteIsolationEnabled":          boolean,
		"thirdPartyBlockingEnabled":     boolean,
	}
}

// vaValueSignals maps each device signal that names things rather than states — the lists of
// identifiers and addresses, and the CrowdStrike agent's ids — to the check a policy value for
// it must pass ("" when it does). How a rule on each matches is the policy's business
// (verifiedaccess.Policy): any reported id listed, every DNS server within a listed prefix.
func vaValueSignals() map[string]func(string) string {
	text := func(what string) func(string) string {
		return func(v string) string {
			if strings.TrimSpace(v) == "" || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return fmt.Sprintf("%q is not %s", v, what)
			}
			return ""
		}
	}
	alnum := func(what string) func(string) string {
		return func(v string) string {
			if v == "" || strings.TrimFunc(v, func(r rune) bool {
				return r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
			}) != "" {
				return fmt.Sprintf("%q is not %s (letters and digits)", v, what)
			}
			return ""
		}
	}
	return map[string]func(string) string{
		"deviceAffiliationIds":  text("an affiliation id"),
		"profileAffiliationIds": text("an affiliation id"),
		"macAddresses": func(v string) string {
			if _, err := net.ParseMAC(v); err != nil || len(v) != 17 {
				return fmt.Sprintf("%q is not a MAC address such as 02:00:5e:10:00:01", v)
			}
			return ""
		},
		"systemDnsServers": func(v string) string {
			if _, err := ParseTrustedProxy(v); err != nil {
				return fmt.Sprintf("%q is not an IP address or CIDR prefix such as 10.0.0.0/8", v)
			}
			return ""
		},
		"imei":                        alnum("an IMEI"),
		"meid":                        alnum("an MEID"),
		"crowdStrikeAgent.agentId":    alnum("a CrowdStrike agent id"),
		"crowdStrikeAgent.customerId": alnum("a CrowdStrike customer id"),
	}
}

// VASignalNames lists the signal names policy.signals accepts, enumerated and value signals,
// sorted.
func VASignalNames() []string {
	names := slices.AppendSeq(slices.Collect(maps.Keys(vaSignals())), maps.Keys(vaValueSignals()))
	slices.Sort(names)
	return names
}

// VASignalCheck returns the check of a value signal's policy values (VASignalNames lists it, but
// its values are identifiers, not an enumeration), and whether name is one.
func VASignalCheck(name string) (func(string) string, bool) {
	c, ok := vaValueSignals()[name]
	return c, ok
}

// VASignalValues returns the values an enumerated signal may take ("true"/"false" for a boolean
// signal), and whether name is one. The slice is a copy.
func VASignalValues(name string) ([]string, bool) {
	v, ok := vaSignals()[name]
	return slices.Clone(v), ok
}

// VASignalIsBoolean reports whether signal name is a boolean signal.
func VASignalIsBoolean(name string) bool {
	v := vaSignals()[name]
	return slices.Equal(v, []string{"true", "false"})
}

// ParseVersion parses a dotted numeric version ("107.0.5286.0") into its components. Versions
// are compared per component, numerically, so "108.0.1.0" is above "107.0.5286.0"; anything that
// is not digits separated by single dots is refused rather than guessed at.
func ParseVersion(s string) ([]uint64, error) {
	if s == "" {
		return nil, fmt.Errorf("empty version")
	}
	parts := strings.Split(s, ".")
	out := make([]uint64, len(parts))
	for i, p := range parts {
		if p == "" || strings.TrimLeft(p, "0123456789") != "" {
			return nil, fmt.Errorf("%q is not a dotted numeric version such as 107.0.5286.0", s)
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q: component %q is too large", s, p)
		}
		out[i] = n
	}
	return out, nil
}

// CompareVersions compares two parsed versions per component; missing trailing components count
// as zero, so "108" equals "108.0.0.0".
func CompareVersions(a, b []uint64) int {
	for i := range max(len(a), len(b)) {
		var x, y uint64
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

func knownVAVersions() []string { return []string{VAv1, VAv2} }
func knownVAScopes() []string   { return []string{VAScopeMachine, VAScopeUser} }

// validateVerifiedAccess checks the verifiedAccess section. The server settings matter only when
// it is enabled; enrollment profiles are checked whenever they are written, so that enabling the
// section later holds no surprise.
func (c *Config) validateVerifiedAccess(ps *problems) {
	va := c.VerifiedAccess
	const sec = keyVerifiedAccess
	if !slices.Contains(knownVAVersions(), va.APIVersion) {
		ps.add(joinPath(sec, "apiVersion"), "%q is not one of %s", va.APIVersion, strings.Join(knownVAVersions(), ", "))
	}
	if positive(ps, joinPath(sec, "challengeLifetime"), va.ChallengeLifetime) && va.ChallengeLifetime > MaxChallengeLifetime {
		ps.add(joinPath(sec, "challengeLifetime"), "must be at most %s: Google refuses older challenges anyway", MaxChallengeLifetime)
	}
	if va.Endpoint != "" {
		if err := httpURL(va.Endpoint); err != nil {
			ps.add(joinPath(sec, "endpoint"), "%v", err)
		} else {
			_, err := EndpointCleartext(SectionVerifiedAccess, va.Endpoint, c.Google.Credentials, va.InsecureAllowCleartext)
			cleartextProblem(ps, joinPath(sec, "endpoint"), err)
		}
	}
	if va.Enabled {
		c.validateVAServer(ps)
		if len(va.Profiles) == 0 {
			ps.add(joinPath(sec, keyVAProfiles), "at least one enrollment profile is required when verifiedAccess is enabled")
		}
		if c.Google.Credentials.Type == CredentialsNone && va.Endpoint == "" {
			ps.add(joinPath(sec, "endpoint"), "is required with google.credentials.type none (an emulator): the real Verified Access API needs credentials")
		}
	}
	for _, name := range slices.Sorted(maps.Keys(va.Profiles)) {
		p := va.Profiles[name]
		p.validate(c, joinPath(joinPath(sec, keyVAProfiles), name), ps)
	}
}

// validateVAServer checks the listener: TLS, or plain HTTP on loopback only; and its limits.
func (c *Config) validateVAServer(ps *problems) {
	va := c.VerifiedAccess
	const sec = keyVerifiedAccess
	c.validateVALimits(ps)
	host, port, err := net.SplitHostPort(va.Listen)
	if err != nil || port == "" {
		ps.add(joinPath(sec, "listen"), "%q must be host:port, e.g. 127.0.0.1:8443 or :8443", va.Listen)
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		ps.add(joinPath(sec, "listen"), "%q: port %q is not a port number", va.Listen, port)
	}
	tlsPath := joinPath(sec, "tls")
	if va.Insecure {
		// An empty host (":8443") listens on every interface and is not loopback.
		if err == nil && !cleartext.LoopbackHost(host) {
			ps.add(joinPath(sec, "insecure"), "plain HTTP is only allowed on a loopback listen address (127.0.0.1, ::1, localhost), not %q: enrollment carries device identities and certificates", va.Listen)
		}
		if va.TLS.CertFile != "" || va.TLS.KeyFile != "" {
			ps.add(joinPath(sec, "insecure"), "contradicts %s: remove one", tlsPath)
		}
		return
	}
	for _, f := range []struct{ key, path string }{{"certFile", va.TLS.CertFile}, {"keyFile", va.TLS.KeyFile}} {
		if f.path == "" {
			ps.add(joinPath(tlsPath, f.key), "is required: the enrollment API is served over TLS (insecure: true is for loopback demos only)")
		}
	}
}

// validateVALimits checks the per-client rate limit, the concurrency caps and the trusted proxies.
func (c *Config) validateVALimits(ps *problems) {
	va := c.VerifiedAccess
	const sec = keyVerifiedAccess
	rl := joinPath(sec, "rateLimit")
	if r := va.RateLimit.RequestsPerSecond; r <= 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		ps.add(joinPath(rl, "requestsPerSecond"), "must be a positive number")
	}
	if va.RateLimit.Burst < 2 {
		ps.add(joinPath(rl, "burst"), "must be at least 2: one enrollment is two requests (challenge, then enroll) in quick succession")
	}
	caps := []struct {
		key string
		n   int
	}{{"maxConcurrentChallenges", va.MaxConcurrentChallenges}, {"maxConcurrentEnrollments", va.MaxConcurrentEnrollments}}
	for _, k := range caps {
		if k.n < 2 || k.n > MaxVAConcurrency {
			ps.add(joinPath(sec, k.key), "must be between 2 and %d, got %d", MaxVAConcurrency, k.n)
		}
	}
	if n := va.MaxConcurrentPerClient; n < 1 {
		ps.add(joinPath(sec, "maxConcurrentPerClient"), "must be at least 1, got %d", n)
	} else {
		for _, k := range caps {
			if n >= k.n && k.n >= 2 {
				ps.add(joinPath(sec, "maxConcurrentPerClient"), "must be less than %s (%d), or one client could hold every slot", k.key, k.n)
				break
			}
		}
	}
	if positive(ps, joinPath(sec, "queueTimeout"), va.QueueTimeout) && va.QueueTimeout > MaxVAQueueTimeout {
		ps.add(joinPath(sec, "queueTimeout"), "must be at most %s: a request that waits longer is better told to come back", MaxVAQueueTimeout)
	}
	checkList(ps, joinPath(sec, "trustedProxies"), va.TrustedProxies, func(s string) string {
		if _, err := ParseTrustedProxy(s); err != nil {
			return err.Error()
		}
		return ""
	})
}

// ParseTrustedProxy parses an entry of verifiedAccess.trustedProxies: an IP address or a CIDR
// prefix. A prefix with host bits set (10.1.2.3/8) is refused as the typo it usually is.
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix such as 10.0.0.0/8", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix such as 10.0.0.0/8", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has bits set past the prefix length; did you mean %s?", s, m)
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		if p.Bits() < 0 {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix such as 10.0.0.0/8", s)
		}
	}
	return p, nil
}

// validate checks one enrollment profile found at path.
func (p *VerifiedAccessProfile) validate(c *Config, path string, ps *problems) {
	version := p.APIVersion
	if version == "" {
		version = c.VerifiedAccess.APIVersion
	}
	if !slices.Contains(knownVAVersions(), version) {
		ps.add(joinPath(path, "apiVersion"), "%q is not one of %s", version, strings.Join(knownVAVersions(), ", "))
	}

	if len(p.Scopes) == 0 {
		ps.add(joinPath(path, "scopes"), "must list at least one of %s", strings.Join(knownVAScopes(), ", "))
	}
	checkList(ps, joinPath(path, "scopes"), p.Scopes, func(s string) string {
		if !slices.Contains(knownVAScopes(), s) {
			return fmt.Sprintf("%q is not one of %s", s, strings.Join(knownVAScopes(), ", "))
		}
		return ""
	})
	domain := func(v string) string {
		if !dnsNamePattern.MatchString(v) || strings.HasPrefix(v, "*.") {
			return fmt.Sprintf("%q is not a domain name", v)
		}
		return ""
	}
	if p.EnrollmentDomain != "" {
		if msg := domain(p.EnrollmentDomain); msg != "" {
			ps.add(joinPath(path, "enrollmentDomain"), "%s", msg)
		}
	} else if slices.Contains(p.Scopes, VAScopeMachine) {
		ps.add(joinPath(path, "enrollmentDomain"), "is required for machine keys: it is the identity Google checks the device against")
	}
	checkList(ps, joinPath(path, "userDomains"), p.UserDomains, domain)
	if slices.Contains(p.Scopes, VAScopeUser) && len(p.UserDomains) == 0 && p.EnrollmentDomain == "" {
		ps.add(joinPath(path, "userDomains"), "user keys need userDomains or enrollmentDomain: the e-mail domains users may enroll from")
	}
	if len(p.UserDomains) > 0 && !slices.Contains(p.Scopes, VAScopeUser) {
		ps.add(joinPath(path, "userDomains"), "is only used with the user scope")
	}

	switch {
	case strings.TrimSpace(p.CAConnection) == "":
		ps.add(joinPath(path, "caConnection"), "must name the CA connection that issues (an entry of caConnections)")
	case c.CAConnections != nil:
		if _, ok := c.CAConnections[p.CAConnection]; !ok {
			ps.add(joinPath(path, "caConnection"), "%q is not in caConnections (known: %s)", p.CAConnection, strings.Join(slices.Sorted(maps.Keys(c.CAConnections)), ", "))
		}
	}

	validateCertificate(ps, path, p.Subject, p.SubjectAltNames, p.KeyUsage, p.ExtKeyUsage, p.Validity)
	if len(p.SubjectAltNames.UPN) > 0 {
		ps.add(joinPath(joinPath(path, "subjectAltNames"), "upn"), "is not supported for Verified Access profiles: the CA builds these certificates from names, and UPN otherNames travel only in a CSR")
	}
	p.Policy.validate(version, joinPath(path, keyVAPolicy), ps)
}

// validate checks a policy for API version version: names and enum values against the v2
// discovery document, versions parseable, and no rule that a v1 result cannot answer.
func (p *VerifiedAccessPolicy) validate(version, path string, ps *problems) {
	v1 := version == VAv1
	needsV2 := func(key string, set bool) bool {
		if set && v1 {
			ps.add(joinPath(path, key), "needs apiVersion v2: v1 verify results carry no %s", key)
			return false
		}
		return set
	}
	enum := func(values []string) func(string) string {
		return func(s string) string {
			if !slices.Contains(values, s) {
				return fmt.Sprintf("%q is not one of %s", s, strings.Join(values, ", "))
			}
			return ""
		}
	}
	if needsV2("keyTrustLevels", len(p.KeyTrustLevels) > 0) {
		checkList(ps, joinPath(path, "keyTrustLevels"), p.KeyTrustLevels, func(s string) string {
			if msg := enum(VAKeyTrustLevels())(s); msg != "" {
				return msg
			}
			if !VAReachableKeyTrustLevel(s) {
				return fmt.Sprintf("%q is a Chrome browser's trust level, never reported here: %s", s, VAUnreachable)
			}
			return ""
		})
	}
	if len(p.ProfileKeyTrustLevels) > 0 {
		ps.add(joinPath(path, "profileKeyTrustLevels"), "Google reports a profile trust level only for managed Chrome browser profiles, which cannot enroll here: %s; remove it (keyTrustLevels holds for the ChromeOS device)", VAUnreachable)
	}
	if needsV2("customerIds", len(p.CustomerIDs) > 0) {
		checkList(ps, joinPath(path, "customerIds"), p.CustomerIDs, func(s string) string {
			if !customerIDPattern.MatchString(s) {
				return fmt.Sprintf("%q is not a customer id: expected C followed by letters and digits", s)
			}
			return ""
		})
	}
	if needsV2("enrollmentDomains", len(p.EnrollmentDomains) > 0) {
		checkList(ps, joinPath(path, "enrollmentDomains"), p.EnrollmentDomains, func(v string) string {
			if !dnsNamePattern.MatchString(v) || strings.HasPrefix(v, "*.") {
				return fmt.Sprintf("%q is not a domain name", v)
			}
			return ""
		})
	}
	for _, k := range []struct{ key, value string }{{"minOsVersion", p.MinOSVersion}, {"minBrowserVersion", p.MinBrowserVersion}} {
		if needsV2(k.key, k.value != "") {
			if _, err := ParseVersion(k.value); err != nil {
				ps.add(joinPath(path, k.key), "%v", err)
			}
		}
	}
	if !needsV2("signals", len(p.Signals) > 0) {
		return
	}
	names := VASignalNames()
	for _, name := range slices.Sorted(maps.Keys(p.Signals)) {
		sp := joinPath(joinPath(path, "signals"), name)
		if check, ok := VASignalCheck(name); ok {
			if len(p.Signals[name]) == 0 {
				ps.add(sp, "must list at least one acceptable value")
				continue
			}
			checkList(ps, sp, p.Signals[name], check)
			continue
		}
		values, ok := VASignalValues(name)
		if !ok {
			msg := fmt.Sprintf("unknown device signal; policy signals are %s", strings.Join(names, ", "))
			if s := suggest.Closest(name, names); s != "" {
				msg = fmt.Sprintf("unknown device signal (did you mean %q?)", s)
			}
			ps.add(sp, "%s", msg)
			continue
		}
		if len(p.Signals[name]) == 0 {
			ps.add(sp, "must list at least one acceptable value")
			continue
		}
		checkList(ps, sp, p.Signals[name], enum(values))
	}
}
