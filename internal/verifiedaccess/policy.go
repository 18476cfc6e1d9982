package verifiedaccess

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/config"
)

// Policy is a compiled device-trust policy (config.VerifiedAccessPolicy). It is immutable and
// safe for concurrent use.
type Policy struct {
	keyTrustLevels        []string
	profileKeyTrustLevels []string
	signals               []signalRule // sorted by name
	minOS, minBrowser     []uint64
	minOSText, minBrText  string
	customerIDs           []string
	enrollmentDomains     []string // lower case
}

type signalRule struct {
	name    string
	allowed []string
	get     func(*va2.DeviceSignals) string
}

// CompilePolicy checks p (names and values against the v2 enums, versions) and compiles it.
// Errors name the key under policy, e.g. "signals.diskEncryption[0]: …".
func CompilePolicy(p config.VerifiedAccessPolicy) (*Policy, error) {
	var errs []error
	out := &Policy{
		keyTrustLevels:        slices.Clone(p.KeyTrustLevels),
		profileKeyTrustLevels: slices.Clone(p.ProfileKeyTrustLevels),
		customerIDs:           slices.Clone(p.CustomerIDs),
	}
	for _, d := range p.EnrollmentDomains {
		out.enrollmentDomains = append(out.enrollmentDomains, strings.ToLower(d))
	}
	levels := config.VAKeyTrustLevels()
	for key, list := range map[string][]string{"keyTrustLevels": p.KeyTrustLevels, "profileKeyTrustLevels": p.ProfileKeyTrustLevels} {
		for i, v := range list {
			if !slices.Contains(levels, v) {
				errs = append(errs, fmt.Errorf("%s[%d]: %q is not a key trust level", key, i, v))
			}
		}
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
	names := make([]string, 0, len(p.Signals))
	for n := range p.Signals {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		values, known := config.VASignalValues(name)
		get, extractable := signalGetters()[name]
		if !known || !extractable {
			errs = append(errs, fmt.Errorf("signals.%s: unknown device signal", name))
			continue
		}
		if len(p.Signals[name]) == 0 {
			errs = append(errs, fmt.Errorf("signals.%s: no acceptable value listed", name))
			continue
		}
		for i, v := range p.Signals[name] {
			if !slices.Contains(values, v) {
				errs = append(errs, fmt.Errorf("signals.%s[%d]: %q is not one of %s", name, i, v, strings.Join(values, ", ")))
			}
		}
		out.signals = append(out.signals, signalRule{name: name, allowed: slices.Clone(p.Signals[name]), get: get})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// needsV2 reports whether the policy has rules only a v2 result can satisfy.
func (p *Policy) needsV2() bool {
	return len(p.keyTrustLevels)+len(p.profileKeyTrustLevels)+len(p.signals)+len(p.customerIDs)+
		len(p.enrollmentDomains)+len(p.minOS)+len(p.minBrowser) > 0
}

// Evaluate applies the policy to a verify result and returns every rule that fails, each as
// "rule: got X, want Y"; nil means the device passes. A value the result does not carry fails
// every rule about it. For a managed profile on an unmanaged browser, which Google reports
// without device fields, customerIds and enrollmentDomains use the profile's customer and
// enrollment domain instead.
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
	if len(p.profileKeyTrustLevels) > 0 {
		oneOf("profileKeyTrustLevels", orUnspecified(r.ProfileKeyTrustLevel), p.profileKeyTrustLevels, exact)
	}
	if len(p.customerIDs) > 0 {
		oneOf("customerIds", r.customer(), p.customerIDs, exact)
	}
	if len(p.enrollmentDomains) > 0 {
		oneOf("enrollmentDomains", r.enrollmentDomain(), p.enrollmentDomains, strings.EqualFold)
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
			failed = append(failed, fmt.Sprintf("signals.%s: got no device signals, want one of [%s]", s.name, strings.Join(s.allowed, ", ")))
			continue
		}
		oneOf("signals."+s.name, s.get(r.Signals), s.allowed, exact)
	}
	return failed
}

// customer is the customer Google reports: the device's, or for a managed profile on an
// unmanaged browser the profile's.
func (r *Result) customer() string {
	if r.CustomerID != "" {
		return r.CustomerID
	}
	return r.ProfileCustomerID
}

// enrollmentDomain is the device's enrollment domain, or the profile's when the device is not
// managed.
func (r *Result) enrollmentDomain() string {
	if r.Signals == nil {
		return ""
	}
	if r.Signals.DeviceEnrollmentDomain != "" {
		return r.Signals.DeviceEnrollmentDomain
	}
	return r.Signals.ProfileEnrollmentDomain
}

func (r *Result) signal(get func(*va2.DeviceSignals) string) string {
	if r.Signals == nil {
		return ""
	}
	return get(r.Signals)
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
// that a policy can name exactly what it accepts.
func signalGetters() map[string]func(*va2.DeviceSignals) string {
	enum := func(unspecified string, get func(*va2.DeviceSignals) string) func(*va2.DeviceSignals) string {
		return func(s *va2.DeviceSignals) string {
			if v := get(s); v != "" {
				return v
			}
			return unspecified
		}
	}
	boolean := func(get func(*va2.DeviceSignals) bool) func(*va2.DeviceSignals) string {
		return func(s *va2.DeviceSignals) string { return strconv.FormatBool(get(s)) }
	}
	return map[string]func(*va2.DeviceSignals) string{
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
	}
}
