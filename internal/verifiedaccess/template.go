package verifiedaccess

import (
	"fmt"
	"slices"
	"strings"

	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
)

// TemplateSignals are the device signals certificate templates may use
// ({{.Signals.SerialNumber}}): every field of the v2 DeviceSignals. Text fields are empty, booleans
// false and lists empty for v1 and when Google reports no signals. Values are data: each goes
// into its own attribute, checked like any rendered value.
type TemplateSignals struct {
	SerialNumber            string
	Hostname                string
	DisplayName             string
	DeviceManufacturer      string
	DeviceModel             string
	OperatingSystem         string
	OsVersion               string
	BrowserVersion          string
	DeviceEnrollmentDomain  string
	ProfileEnrollmentDomain string
	WindowsMachineDomain    string
	WindowsUserDomain       string

	// The lists, and the CrowdStrike agent's ids.
	DeviceAffiliationIds  TemplateList
	ProfileAffiliationIds TemplateList
	MacAddresses          TemplateList
	SystemDnsServers      TemplateList
	Imei                  TemplateList
	Meid                  TemplateList
	CrowdStrikeAgent      TemplateCrowdStrikeAgent

	// The security state, as the policy reads it (enum names; "" when not reported).
	DiskEncryption                   string
	OsFirewall                       string
	ScreenLockSecured                string
	SecureBootMode                   string
	SafeBrowsingProtectionLevel      string
	PasswordProtectionWarningTrigger string
	RealtimeUrlCheckMode             string
	Trigger                          string
	AntivirusState                   string
	AllowScreenLock                  bool
	BuiltInDnsClientEnabled          bool
	ChromeRemoteDesktopAppBlocked    bool
	SiteIsolationEnabled             bool
	ThirdPartyBlockingEnabled        bool
}

// TemplateCrowdStrikeAgent is deviceSignals.crowdStrikeAgent ({{.Signals.CrowdStrikeAgent.AgentId}}),
// its fields named as Google's (and the policy's crowdStrikeAgent.agentId) are.
type TemplateCrowdStrikeAgent struct {
	AgentId    string
	CustomerId string
}

// TemplateList is a list signal as templates see it: {{.Signals.MacAddresses.First}} is its
// first value, and an error naming the signal when Google reported none;
// {{.Signals.DeviceAffiliationIds.Join ","}} joins them; {{range .Signals.MacAddresses.All}}
// walks them. Printed as is, it is its values joined by commas.
type TemplateList struct {
	name   string
	values []string
}

func templateList(name string, values []string) TemplateList {
	return TemplateList{name: name, values: slices.Clone(values)}
}

// First returns the first value, or an error when there is none: a certificate that needs the
// value cannot be built without it.
func (l TemplateList) First() (string, error) {
	if len(l.values) == 0 {
		return "", fmt.Errorf("Google reported no %s for this device", l.name)
	}
	return l.values[0], nil
}

// Join returns the values joined by sep.
func (l TemplateList) Join(sep string) string { return strings.Join(l.values, sep) }

// All returns the values, for range.
func (l TemplateList) All() []string { return slices.Clone(l.values) }

func (l TemplateList) String() string { return strings.Join(l.values, ",") }

// TemplateData is what an enrollment profile's subject and SAN templates see
// ({{.DevicePermanentID}}, {{.Identity}}, …): a copy of the verify result plus the request's
// profile, scope and identity, so that templates cannot reach anything else and their names are
// checked when the configuration is loaded.
type TemplateData struct {
	// Profile is the enrollment profile's name.
	Profile string
	// Scope is "machine" or "user".
	Scope string
	// Identity is the identity Google confirmed: the enrolled domain for a machine key, the
	// user's e-mail for a user key.
	Identity   string
	APIVersion string

	DevicePermanentID  string
	DeviceEnrollmentID string
	AttestedDeviceID   string
	VirtualDeviceID    string
	CustomerID         string
	KeyTrustLevel      string

	// Google's profile fields, which it fills for managed Chrome browser profiles (unreachable
	// here: enterprise.platformKeys exists on ChromeOS only); kept so that nothing Google
	// returns is hidden.
	ProfileCustomerID    string
	ProfilePermanentID   string
	VirtualProfileID     string
	ProfileKeyTrustLevel string

	Signals TemplateSignals
}

// templateData builds the data of one enrollment.
func templateData(profile, scope, identity string, r *Result) TemplateData {
	d := TemplateData{
		Profile: profile, Scope: scope, Identity: identity, APIVersion: r.APIVersion,
		DevicePermanentID: r.DevicePermanentID, DeviceEnrollmentID: r.DeviceEnrollmentID,
		AttestedDeviceID: r.AttestedDeviceID, VirtualDeviceID: r.VirtualDeviceID,
		CustomerID: r.CustomerID, KeyTrustLevel: r.KeyTrustLevel,
		ProfileCustomerID: r.ProfileCustomerID, ProfilePermanentID: r.ProfilePermanentID,
		VirtualProfileID: r.VirtualProfileID, ProfileKeyTrustLevel: r.ProfileKeyTrustLevel,
	}
	d.Signals = templateSignals(r.Signals)
	return d
}

func templateSignals(s *va2.DeviceSignals) TemplateSignals {
	if s == nil {
		s = &va2.DeviceSignals{}
	}
	out := TemplateSignals{
		SerialNumber: s.SerialNumber, Hostname: s.Hostname, DisplayName: s.DisplayName,
		DeviceManufacturer: s.DeviceManufacturer, DeviceModel: s.DeviceModel,
		OperatingSystem: s.OperatingSystem, OsVersion: s.OsVersion, BrowserVersion: s.BrowserVersion,
		DeviceEnrollmentDomain: s.DeviceEnrollmentDomain, ProfileEnrollmentDomain: s.ProfileEnrollmentDomain,
		WindowsMachineDomain: s.WindowsMachineDomain, WindowsUserDomain: s.WindowsUserDomain,

		DeviceAffiliationIds:  templateList("deviceAffiliationIds", s.DeviceAffiliationIds),
		ProfileAffiliationIds: templateList("profileAffiliationIds", s.ProfileAffiliationIds),
		MacAddresses:          templateList("macAddresses", s.MacAddresses),
		SystemDnsServers:      templateList("systemDnsServers", s.SystemDnsServers),
		Imei:                  templateList("imei", s.Imei),
		Meid:                  templateList("meid", s.Meid),

		DiskEncryption: s.DiskEncryption, OsFirewall: s.OsFirewall, ScreenLockSecured: s.ScreenLockSecured,
		SecureBootMode: s.SecureBootMode, SafeBrowsingProtectionLevel: s.SafeBrowsingProtectionLevel,
		PasswordProtectionWarningTrigger: s.PasswordProtectionWarningTrigger, RealtimeUrlCheckMode: s.RealtimeUrlCheckMode,
		Trigger: s.Trigger, AllowScreenLock: s.AllowScreenLock, BuiltInDnsClientEnabled: s.BuiltInDnsClientEnabled,
		ChromeRemoteDesktopAppBlocked: s.ChromeRemoteDesktopAppBlocked, SiteIsolationEnabled: s.SiteIsolationEnabled,
		ThirdPartyBlockingEnabled: s.ThirdPartyBlockingEnabled,
	}
	if s.Antivirus != nil {
		out.AntivirusState = s.Antivirus.State
	}
	if s.CrowdStrikeAgent != nil {
		out.CrowdStrikeAgent = TemplateCrowdStrikeAgent{AgentId: s.CrowdStrikeAgent.AgentId, CustomerId: s.CrowdStrikeAgent.CustomerId}
	}
	return out
}

// missingValues describes the template values a verify result lacks (csr.Template.NeededEmpty),
// each with why Google may not have returned it.
func missingValues(missing []csr.EmptyField) string {
	var out []string
	for _, m := range missing {
		for _, r := range m.Empty {
			out = append(out, fmt.Sprintf("%s needs %s, which Google did not return: %s", m.Field, r, missingValueHint(r)))
		}
	}
	return strings.Join(out, "; ")
}

// missingValueHint says why a verify result may lack a template value.
func missingValueHint(ref string) string {
	switch {
	case ref == ".DevicePermanentID":
		return "Google returns devicePermanentId for machine keys only, and only to a service account it has allowlisted for it; .AttestedDeviceID or .Signals.SerialNumber name the device too"
	case ref == ".DeviceEnrollmentID" || ref == ".AttestedDeviceID":
		return "Google returns it for machine keys only"
	case ref == ".VirtualDeviceID" || ref == ".CustomerID" || ref == ".KeyTrustLevel":
		return "Google returns it with apiVersion v2 only"
	case strings.HasPrefix(ref, ".Profile") && ref != ".Profile":
		return "Google fills profile fields for managed Chrome browser profiles only, which cannot enroll here"
	case strings.HasPrefix(ref, ".Signals."):
		return "device signals come with apiVersion v2 only, and Google reports each only where the device has it"
	default:
		return "Google did not return it for this device"
	}
}

// sampleTemplateData is what every template is executed on once when a profile is compiled, so
// that a misspelt field fails at startup. The values are plausible, so that helper functions and
// value checks succeed on them.
func sampleTemplateData() TemplateData {
	return TemplateData{
		Profile: "profile", Scope: config.VAScopeMachine, Identity: "example.com", APIVersion: config.VAv2,
		DevicePermanentID: "5CD0000000", DeviceEnrollmentID: "00000000-0000-0000-0000-000000000000",
		AttestedDeviceID: "5CD0000000", VirtualDeviceID: "00000000-0000-0000-0000-000000000001",
		CustomerID: "C00000000", KeyTrustLevel: "CHROME_OS_VERIFIED_MODE",
		ProfileCustomerID: "C00000000", ProfilePermanentID: "00000000-0000-0000-0000-000000000002",
		VirtualProfileID: "00000000-0000-0000-0000-000000000003", ProfileKeyTrustLevel: "CHROME_OS_VERIFIED_MODE",
		Signals: templateSignals(&va2.DeviceSignals{
			SerialNumber: "5CD0000000", Hostname: "device-1", DisplayName: "Device 1",
			DeviceManufacturer: "Google", DeviceModel: "Chromebook", OperatingSystem: "CHROME_OS",
			OsVersion: "15183.69.3", BrowserVersion: "120.0.6099.0",
			DeviceEnrollmentDomain: "example.com", ProfileEnrollmentDomain: "example.com",
			WindowsMachineDomain: "corp.example.com", WindowsUserDomain: "corp.example.com",
			DeviceAffiliationIds: []string{"affiliation-1"}, ProfileAffiliationIds: []string{"affiliation-1"},
			MacAddresses: []string{"02:00:5e:10:00:01"}, SystemDnsServers: []string{"192.0.2.53"},
			Imei: []string{"490154203237518"}, Meid: []string{"A0000000000001"},
			CrowdStrikeAgent: &va2.CrowdStrikeAgent{AgentId: "0123456789abcdef0123456789abcdef", CustomerId: "0123456789ABCDEF0123456789ABCDEF"},
			DiskEncryption:   "DISK_ENCRYPTION_ENCRYPTED", OsFirewall: "OS_FIREWALL_ENABLED", ScreenLockSecured: "SCREEN_LOCK_SECURED_ENABLED",
			SecureBootMode: "SECURE_BOOT_MODE_ENABLED", SafeBrowsingProtectionLevel: "STANDARD",
			PasswordProtectionWarningTrigger: "PASSWORD_REUSE", RealtimeUrlCheckMode: "REALTIME_URL_CHECK_MODE_ENABLED_MAIN_FRAME",
			Trigger: "TRIGGER_BROWSER_NAVIGATION", Antivirus: &va2.Antivirus{State: "ENABLED"},
			AllowScreenLock: true, BuiltInDnsClientEnabled: true, SiteIsolationEnabled: true,
			ChromeRemoteDesktopAppBlocked: true, ThirdPartyBlockingEnabled: true,
		}),
	}
}
