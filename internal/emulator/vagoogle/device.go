package vagoogle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
)

// Values the default simulated devices report. They describe a current, healthy device so that a
// strict device-trust policy passes unless a test changes something on purpose.
const (
	vaChromeOSVersion = "16181.61.0"
	vaBrowserVersion  = "134.0.6998.198"
)

// vaIDs derives stable identifiers from a key id: the same simulated key is the same device, so
// it reports the same devicePermanentId every time, and different keys differ.
type vaIDs struct{ sum [32]byte }

func newVAIDs(keyID string) vaIDs {
	return vaIDs{sum: sha256.Sum256([]byte("certprov-emulator va device\x00" + keyID))}
}

// serial looks like a ChromeOS serial number: 10 upper-case letters and digits.
func (v vaIDs) serial() string {
	const alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
	out := make([]byte, 10)
	for i := range out {
		out[i] = alphabet[int(v.sum[i])%len(alphabet)]
	}
	return string(out)
}

// uuid is UUID-shaped, from the given offset of the digest (0 or 16).
func (v vaIDs) uuid(off int) string {
	h := hex.EncodeToString(v.sum[off : off+16])
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

// mac is a locally administered unicast MAC address.
func (v vaIDs) mac() string {
	b := v.sum[20:26]
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0]&0xfc|0x02, b[1], b[2], b[3], b[4], b[5])
}

// identityDomain is the enrollment domain an identity implies: the identity itself for a machine
// (a domain), the part after '@' for a user.
func identityDomain(identity string) string {
	if _, d, ok := strings.Cut(identity, "@"); ok {
		return d
	}
	return identity
}

// DefaultDevice is what challenge:verify reports for a healthy, managed ChromeOS device in
// verified mode when a respond request carries no device: customer DefaultCustomer, key trust
// level CHROME_OS_VERIFIED_MODE, identifiers derived from keyID (stable per simulated key), the
// enrollment domain taken from identity, and signals that pass a strict policy (disk encrypted,
// firewall on, screen lock secured, secure boot on, enhanced Safe Browsing, current OS and browser).
// Secure boot is reported although Chrome reports it on Windows only, so that a policy using
// every rule type passes by default.
//
// Machine scope reports devicePermanentId, deviceEnrollmentId and attestedDeviceId; user scope
// leaves them out (Google sends them for machine responses only) and adds the profile's
// enrollment domain and affiliation.
func DefaultDevice(scope, keyID, identity string) Device {
	ids := newVAIDs(keyID)
	serial := ids.serial()
	domain := identityDomain(identity)
	sig := &va2.DeviceSignals{
		AllowScreenLock:                  true,
		BrowserVersion:                   vaBrowserVersion,
		BuiltInDnsClientEnabled:          true,
		ChromeRemoteDesktopAppBlocked:    true,
		DeviceAffiliationIds:             []string{"affiliation-" + domain},
		DeviceEnrollmentDomain:           domain,
		DeviceManufacturer:               "Google",
		DeviceModel:                      "Emulated Chromebook",
		DiskEncryption:                   "DISK_ENCRYPTION_ENCRYPTED",
		DisplayName:                      "chromebook-" + strings.ToLower(serial),
		Hostname:                         "chromebook-" + strings.ToLower(serial),
		MacAddresses:                     []string{ids.mac()},
		OperatingSystem:                  "CHROME_OS",
		OsFirewall:                       "OS_FIREWALL_ENABLED",
		OsVersion:                        vaChromeOSVersion,
		PasswordProtectionWarningTrigger: "PHISHING_REUSE",
		RealtimeUrlCheckMode:             "REALTIME_URL_CHECK_MODE_ENABLED_MAIN_FRAME",
		SafeBrowsingProtectionLevel:      "ENHANCED",
		ScreenLockSecured:                "SCREEN_LOCK_SECURED_ENABLED",
		SecureBootMode:                   "SECURE_BOOT_MODE_ENABLED",
		SerialNumber:                     serial,
		SiteIsolationEnabled:             true,
		SystemDnsServers:                 []string{"192.0.2.53"},
		Trigger:                          "TRIGGER_BROWSER_NAVIGATION",
	}
	d := Device{
		CustomerID:      DefaultCustomer,
		VirtualDeviceID: ids.uuid(16),
		KeyTrustLevel:   "CHROME_OS_VERIFIED_MODE",
		DeviceSignals:   sig,
	}
	if scope == ScopeUser {
		sig.ProfileEnrollmentDomain = domain
		sig.ProfileAffiliationIds = []string{"affiliation-" + domain}
		return d
	}
	d.DevicePermanentID = serial
	d.DeviceEnrollmentID = ids.uuid(0)
	d.AttestedDeviceID = serial
	return d
}

// PatchDevice applies a JSON merge patch (RFC 7386) to base: objects merge key by key, any
// other value replaces, null removes. It lets a command line change one signal of a preset
// ({"deviceSignals":{"diskEncryption":"DISK_ENCRYPTION_DISABLED"}}) or drop a field
// ({"keyTrustLevel":null}). The result is decoded strictly, so misspelt keys are errors.
func PatchDevice(base Device, patch []byte) (Device, error) {
	baseJSON, err := json.Marshal(base)
	if err != nil {
		return Device{}, fmt.Errorf("patch device: %w", err)
	}
	var doc, p any
	if err := json.Unmarshal(baseJSON, &doc); err != nil {
		return Device{}, fmt.Errorf("patch device: %w", err)
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return Device{}, fmt.Errorf("patch device: %w", err)
	}
	if _, ok := p.(map[string]any); !ok {
		return Device{}, errors.New("patch device: the patch must be a JSON object")
	}
	merged, err := json.Marshal(mergePatch(doc, p))
	if err != nil {
		return Device{}, fmt.Errorf("patch device: %w", err)
	}
	var out Device
	if err := frontend.DecodeStrict(merged, &out); err != nil {
		return Device{}, fmt.Errorf("patch device: %w", err)
	}
	return out, nil
}

// mergePatch is RFC 7386 MergePatch(target, patch).
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], v)
	}
	return t
}
