package verifiedaccess

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/config"
)

// Policy is a compiled device-trust policy (config.VerifiedAccessPolicy). It is immutable and
// safe for concurrent use.
type Policy struct {
	keyTrustLevels       []string
	signals              []signalRule // sorted by name
	minOS, minBrowser    []uint64
	minOSText, minBrText string
	customerIDs          []string
	enrollmentDomains    []string // lower case
}

// signalRule is one policy.signals entry: how to read the signal from a verify result and when
// what was read passes.
type signalRule struct {
	name    string
	allowed []string
	// get returns the reported values: one for an enumerated or boolean signal (its
	// UNSPECIFIED value or false when absent), the list as reported (maybe none) for the others.
	get func(*va2.DeviceSignals) []string
	// pass decides the rule; want words the failure ("want one of […]").
	pass func(got []string) bool
	want string
	// list marks a signal whose reported values are shown as a list in a failure.
	list bool
}

// CompilePolicy checks p (names and values against the v2 enums and value checks, versions, and
// that every rule can be met by a ChromeOS device) and compiles it. Errors name the key under
// policy, e.g. "signals.diskEncryption[0]: …".
func CompilePolicy(p config.VerifiedAccessPolicy) (*Policy, error) {
	var errs []error
	out := &Policy{
		keyTrustLevels: slices.Clone(p.KeyTrustLevels),
		customerIDs:    slices.Clone(p.CustomerIDs),
	}
	for _, d := range p.EnrollmentDomains {
		out.enrollmentDomains = append(out.enrollmentDomains, strings.ToLower(d))
	}
	for i, v := range p.KeyTrustLevels {
		switch {
		case !slices.Contains(config.VAKeyTrustLevels(), v):
			errs = append(errs, fmt.Errorf("keyTrustLevels[%d]: %q is not a key trust level", i, v))
		case !config.VAReachableKeyTrustLevel(v):
			errs = append(errs, fmt.Errorf("keyTrustLevels[%d]: %q is a Chrome browser's trust level, never reported here: %s", i, v, config.VAUnreachable))
		}
	}
	if len(p.ProfileKeyTrustLevels) > 0 {
		errs = append(errs, fmt.Errorf("profileKeyTrustLevels: Google reports a profile trust level only for managed Chrome browser profiles, which cannot enroll here: %s", config.VAUnreachable))
	}
	var err error
	if p.MinOSVersion != "" {
		if out.minOS, err = config.ParseVersion(p.MinOSVersion); err != nil {
			errs = append(errs, fmt.Errorf("minOsVersion: %w", err))
		}
		out.minOSText = p.MinOSVersion
	}
	if p.MinBrowserVersion != "" {
		if out.minBrowser, err = config.ParseVersion(p.MinBrowserVersion); err != nil {
			errs = append(errs, fmt.Errorf("minBrowserVersion: %w", err))
		}
		out.minBrText = p.MinBrowserVersion
	}
	names := slices.Sorted(maps.Keys(p.Signals))
	for _, name := range names {
		rule, err := compileSignal(name, p.Signals[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.signals = append(out.signals, rule)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// compileSignal compiles the rule on one signal. An enumerated or boolean signal passes with one
// of the listed values. The list and object signals pass when any reported value is listed —
// affiliation ids, MAC addresses (in any notation), IMEIs, MEIDs, the CrowdStrike agent's ids —
// except systemDnsServers, which pass when Google reports at least one and every one is within a
// listed address or prefix: a device must use only the DNS servers it is allowed.
func compileSignal(name string, allowed []string) (signalRule, error) {
	get, extractable := signalGetters()[name]
	_, isValue := config.VASignalCheck(name)
	values, isEnum := config.VASignalValues(name)
	switch {
	case !extractable || (!isValue && !isEnum):
		return signalRule{}, fmt.Errorf("signals.%s: unknown device signal", name)
	case len(allowed) == 0:
		return signalRule{}, fmt.Errorf("signals.%s: no acceptable value listed", name)
	}
	rule := signalRule{name: name, allowed: slices.Clone(allowed), get: get, want: "want one of"}
	if isEnum {
		for i, v := range allowed {
			if !slices.Contains(values, v) {
				return signalRule{}, fmt.Errorf("signals.%s[%d]: %q is not one of %s", name, i, v, strings.Join(values, ", "))
			}
		}
		rule.pass = func(got []string) bool { return slices.Contains(allowed, got[0]) }
		return rule, nil
	}
	check, _ := config.VASignalCheck(name)
	for i, v := range allowed {
		if msg := check(v); msg != "" {
			return signalRule{}, fmt.Errorf("signals.%s[%d]: %s", name, i, msg)
		}
	}
	rule.list = true
	switch name {
	case "systemDnsServers":
		prefixes := make([]netip.Prefix, len(allowed))
		for i, v := range allowed {
			prefixes[i], _ = config.ParseTrustedProxy(v) // checked above
		}
		rule.want = "want each in"
		rule.pass = func(got []string) bool {
			return len(got) > 0 && !slices.ContainsFunc(got, func(g string) bool {
				a, err := netip.ParseAddr(g)
				return err != nil || !slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a.Unmap()) })
			})
		}
	case "macAddresses":
		norm := func(v string) string {
			if hw, err := net.ParseMAC(v); err == nil {
				return hw.String()
			}
			return strings.ToLower(v)
		}
		want := make([]string, len(allowed))
		for i, v := range allowed {
			want[i] = norm(v)
		}
		rule.pass = func(got []string) bool {
			return slices.ContainsFunc(got, func(g string) bool { return slices.Contains(want, norm(g)) })
		}
	default:
		rule.pass = func(got []string) bool {
			return slices.ContainsFunc(got, func(g string) bool {
				return slices.ContainsFunc(allowed, func(a string) bool { return strings.EqualFold(a, g) })
			})
		}
	}
	return rule, nil
}

// needsV2 reports whether the policy has rules only a v2 result can satisfy.
func (p *Policy) needsV2() bool {
	return len(p.keyTrustLevels)+len(p.signals)+len(p.customerIDs)+
		len(p.enrollmentDomains)+len(p.minOS)+len(p.minBrowser) > 0
}

// Evaluate applies the policy to a verify result and returns every rule that fails, each as
// "rule: got X, want Y"; nil means the device passes. A value the result does not carry fails
// every rule about it.
func (p *Policy) Evaluate(r *Result) []string {
	var failed []string
	oneOf := func(rule, got string, allowed []string, match func(a, b string) bool) {
		if got != "" && slices.ContainsFunc(allowed, func(a string) bool { return match(a, got) }) {
			return
		}
		failed = append(failed, fmt.Sprintf("%s: got %s, want one of [%s]", rule, describeValue(got), strings.Join(allowed, ", ")))
	}
	exact := func(a, b string) bool { return a == b }
	if len(p.keyTrustLevels) > 0 {
		oneOf("keyTrustLevels", orUnspecified(r.KeyTrustLevel), p.keyTrustLevels, exact)
	}
	if len(p.customerIDs) > 0 {
		oneOf("customerIds", r.CustomerID, p.customerIDs, exact)
	}
	if len(p.enrollmentDomains) > 0 {
		oneOf("enrollmentDomains", r.signal(func(s *va2.DeviceSignals) string { return s.DeviceEnrollmentDomain }), p.enrollmentDomains, strings.EqualFold)
	}
	if p.minOS != nil {
		if msg := atLeast(r.signal(func(s *va2.DeviceSignals) string { return s.OsVersion }), p.minOS, p.minOSText); msg != "" {
			failed = append(failed, "minOsVersion: "+msg)
		}
	}
	if p.minBrowser != nil {
		if msg := atLeast(r.signal(func(s *va2.DeviceSignals) string { return s.BrowserVersion }), p.minBrowser, p.minBrText); msg != "" {
			failed = append(failed, "minBrowserVersion: "+msg)
		}
	}
	for _, s := range p.signals {
		if r.Signals == nil {
			failed = append(failed, fmt.Sprintf("signals.%s: got no device signals, %s [%s]", s.name, s.want, strings.Join(s.allowed, ", ")))
			continue
		}
		got := s.get(r.Signals)
		if s.pass(got) {
			continue
		}
		shown := describeValue(strings.Join(got, ""))
		if s.list {
			shown = describeList(got)
		}
		failed = append(failed, fmt.Sprintf("signals.%s: got %s, %s [%s]", s.name, shown, s.want, strings.Join(s.allowed, ", ")))
	}
	return failed
}

func (r *Result) signal(get func(*va2.DeviceSignals) string) string {
	if r.Signals == nil {
		return ""
	}
	return get(r.Signals)
}

// describeList renders reported list values in a failed rule: "nothing", or [a, b] with odd
// values quoted.
func describeList(vs []string) string {
	if len(vs) == 0 {
		return "nothing"
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = describeValue(v)
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// atLeast compares a reported version with the minimum; it returns why the rule fails, or "".
func atLeast(got string, minimum []uint64, minText string) string {
	if got == "" {
		return fmt.Sprintf("got nothing, want at least %s", minText)
	}
	v, err := config.ParseVersion(got)
	if err != nil {
		return fmt.Sprintf("got %q, not a numeric version, want at least %s", got, minText)
	}
	if config.CompareVersions(v, minimum) < 0 {
		return fmt.Sprintf("got %s, want at least %s", got, minText)
	}
	return ""
}

func orUnspecified(level string) string {
	if level == "" {
		return "KEY_TRUST_LEVEL_UNSPECIFIED"
	}
	return level
}

// describeValue renders a reported value in a failed rule. Values come from Google, but they
// are quoted when they could be mistaken for the message's own syntax.
func describeValue(v string) string {
	if v == "" {
		return "nothing"
	}
	if strings.ContainsAny(v, " ,[]\"") || !isPrintableASCII(v) {
		return strconv.Quote(v)
	}
	return v
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// signalGetters reads each policy signal (config.VASignalNames) from DeviceSignals. An enum
// Google left out reads as its UNSPECIFIED value, a boolean as false (the JSON omits false), so
// that a policy can name exactly what it accepts; a list reads as reported, an absent CrowdStrike
// agent as no id.
func signalGetters() map[string]func(*va2.DeviceSignals) []string {
	enum := func(unspecified string, get func(*va2.DeviceSignals) string) func(*va2.DeviceSignals) []string {
		return func(s *va2.DeviceSignals) []string {
			if v := get(s); v != "" {
				return []string{v}
			}
			return []string{unspecified}
		}
	}
	boolean := func(get func(*va2.DeviceSignals) bool) func(*va2.DeviceSignals) []string {
		return func(s *va2.DeviceSignals) []string { return []string{strconv.FormatBool(get(s))} }
	}
	list := func(get func(*va2.DeviceSignals) []string) func(*va2.DeviceSignals) []string {
		return func(s *va2.DeviceSignals) []string { return slices.Clone(get(s)) }
	}
	crowdStrike := func(get func(*va2.CrowdStrikeAgent) string) func(*va2.DeviceSignals) []string {
		return func(s *va2.DeviceSignals) []string {
			if s.CrowdStrikeAgent == nil || get(s.CrowdStrikeAgent) == "" {
				return nil
			}
			return []string{get(s.CrowdStrikeAgent)}
		}
	}
	return map[string]func(*va2.DeviceSignals) []string{
		"operatingSystem": enum("OPERATING_SYSTEM_UNSPECIFIED", func(s *va2.DeviceSignals) string { return s.OperatingSystem }),
		"diskEncryption":  enum("DISK_ENCRYPTION_UNSPECIFIED", func(s *va2.DeviceSignals) string { return s.DiskEncryption }),
		"osFirewall":      enum("OS_FIREWALL_UNSPECIFIED", func(s *va2.DeviceSignals) string { return s.OsFirewall }),
		"screenLockSecured": enum("SCREEN_LOCK_SECURED_UNSPECIFIED",
			func(s *va2.DeviceSignals) string { return s.ScreenLockSecured }),
		"secureBootMode": enum("SECURE_BOOT_MODE_UNSPECIFIED", func(s *va2.DeviceSignals) string { return s.SecureBootMode }),
		"safeBrowsingProtectionLevel": enum("SAFE_BROWSING_PROTECTION_LEVEL_UNSPECIFIED",
			func(s *va2.DeviceSignals) string { return s.SafeBrowsingProtectionLevel }),
		"passwordProtectionWarningTrigger": enum("PASSWORD_PROTECTION_WARNING_TRIGGER_UNSPECIFIED",
			func(s *va2.DeviceSignals) string { return s.PasswordProtectionWarningTrigger }),
		"realtimeUrlCheckMode": enum("REALTIME_URL_CHECK_MODE_UNSPECIFIED",
			func(s *va2.DeviceSignals) string { return s.RealtimeUrlCheckMode }),
		"trigger": enum("TRIGGER_UNSPECIFIED", func(s *va2.DeviceSignals) string { return s.Trigger }),
		"antivirus.state": enum("STATE_UNSPECIFIED", func(s *va2.DeviceSignals) string {
			if s.Antivirus == nil {
				return ""
			}
			return s.Antivirus.State
		}),
		"allowScreenLock":               boolean(func(s *va2.DeviceSignals) bool { return s.AllowScreenLock }),
		"builtInDnsClientEnabled":       boolean(func(s *va2.DeviceSignals) bool { return s.BuiltInDnsClientEnabled }),
		"chromeRemoteDesktopAppBlocked": boolean(func(s *va2.DeviceSignals) bool { return s.ChromeRemoteDesktopAppBlocked }),
		"siteIsolationEnabled":          boolean(func(s *va2.DeviceSignals) bool { return s.SiteIsolationEnabled }),
		"thirdPartyBlockingEnabled":     boolean(func(s *va2.DeviceSignals) bool { return s.ThirdPartyBlockingEnabled }),

		"deviceAffiliationIds":        list(func(s *va2.DeviceSignals) []string { return s.DeviceAffiliationIds }),
		"profileAffiliationIds":       list(func(s *va2.DeviceSignals) []string { return s.ProfileAffiliationIds }),
		"macAddresses":                list(func(s *va2.DeviceSignals) []string { return s.MacAddresses }),
		"systemDnsServers":            list(func(s *va2.DeviceSignals) []string { return s.SystemDnsServers }),
		"imei":                        list(func(s *va2.DeviceSignals) []string { return s.Imei }),
		"meid":                        list(func(s *va2.DeviceSignals) []string { return s.Meid }),
		"crowdStrikeAgent.agentId":    crowdStrike(func(a *va2.CrowdStrikeAgent) string { return a.AgentId }),
		"crowdStrikeAgent.customerId": crowdStrike(func(a *va2.CrowdStrikeAgent) string { return a.CustomerId }),
	}
}
