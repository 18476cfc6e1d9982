package verifiedaccess

import (
	"github.com/certprov/certprov-adapter/internal/config"
)

// TemplateSignals are the device signals certificate templates may use ({{.Signals.SerialNumber}}).
// Only identifying text is offered; the policy, not the certificate, deals with the security
// state. Every field is empty for v1 and when Google reports no signals.
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
}

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
	if s := r.Signals; s != nil {
		d.Signals = TemplateSignals{
			SerialNumber: s.SerialNumber, Hostname: s.Hostname, DisplayName: s.DisplayName,
			DeviceManufacturer: s.DeviceManufacturer, DeviceModel: s.DeviceModel,
			OperatingSystem: s.OperatingSystem, OsVersion: s.OsVersion, BrowserVersion: s.BrowserVersion,
			DeviceEnrollmentDomain: s.DeviceEnrollmentDomain, ProfileEnrollmentDomain: s.ProfileEnrollmentDomain,
			WindowsMachineDomain: s.WindowsMachineDomain, WindowsUserDomain: s.WindowsUserDomain,
		}
	}
	return d
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
		VirtualProfileID: "00000000-0000-0000-0000-000000000003", ProfileKeyTrustLevel: "CHROME_BROWSER_OS_KEY",
		Signals: TemplateSignals{
			SerialNumber: "5CD0000000", Hostname: "device-1", DisplayName: "Device 1",
			DeviceManufacturer: "Google", DeviceModel: "Chromebook", OperatingSystem: "CHROME_OS",
			OsVersion: "15183.69.3", BrowserVersion: "120.0.6099.0",
			DeviceEnrollmentDomain: "example.com", ProfileEnrollmentDomain: "example.com",
			WindowsMachineDomain: "corp.example.com", WindowsUserDomain: "corp.example.com",
		},
	}
}
