package engine_test

import (
	"crypto/x509"
	"encoding/asn1"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	admin "google.golang.org/api/admin/directory/v1"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
)

// directoryProfiles are profiles whose certificates carry Directory data.
func directoryProfiles() map[string]config.Profile {
	dev := e2etest.Profile("{{.Device.Directory.AssetID}}", "", 30*time.Second)
	dev.Subject.OrganizationalUnit = []string{"{{.Device.Directory.OrgUnitPath}}"}
	dev.SubjectAltNames.URI = []string{"urn:asset:{{.Device.Directory.AssetID}}"}
	user := e2etest.Profile(`{{.User.Directory.FullName}} ({{index .User.Directory.ExternalIDs "organization"}})`, "{{.User.Email}}", 30*time.Second)
	user.SubjectAltNames.UPN = []string{`{{index .User.Directory.ExternalIDs "organization"}}@corp.example.com`}
	return map[string]config.Profile{"dir-device": dev, "dir-user": user}
}

func upns(t *testing.T, leaf *x509.Certificate) []string {
	t.Helper()
	for _, ext := range leaf.Extensions {
		if ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			names, err := csr.ParseUPNs(ext.Value)
			if err != nil {
				t.Fatal(err)
			}
			return names
		}
	}
	return nil
}

// TestDirectoryTemplates: certificates carry the device's asset id and org unit and the user's
// name and employee id, read from the emulator's Directory through the adapter's Directory
// client; a profile whose templates use no Directory data never calls it.
func TestDirectoryTemplates(t *testing.T) {
	h := e2etest.New(t, e2etest.Options{Directory: true, Profiles: directoryProfiles()})
	h.Emu.SetDirectoryDevice(e2etest.Customer, admin.ChromeOsDevice{DeviceId: "dev-dir-1", SerialNumber: "5CD1", AnnotatedAssetId: "ASSET-0042", OrgUnitPath: "/Sales/EMEA"})
	h.Emu.SetDirectoryUser(admin.User{Id: "1001", PrimaryEmail: "alice@example.com", Name: &admin.UserName{FullName: "Alice Liddell"},
		ExternalIds: []map[string]string{{"type": "organization", "value": "E1234"}}})

	plain := h.Start(emulator.ProcessSpec{})
	h.WaitFinished([]string{plain}, 20*time.Second)
	if n := h.Emu.DirectoryCalls(emulator.MethodDirectoryDevicesGet) + h.Emu.DirectoryCalls(emulator.MethodDirectoryUsersGet); n != 0 {
		t.Fatalf("a profile without Directory data called the Directory %d times", n)
	}

	dev := h.Start(emulator.ProcessSpec{ProfileRef: "dir-device", DeviceDirectoryID: "dev-dir-1", KeyType: emulator.KeyECDSA})
	usr := h.Start(emulator.ProcessSpec{ProfileRef: "dir-user", Scope: emulator.ScopeUser, UserEmail: "alice@example.com", UserDirectoryID: "1001"})
	got := h.WaitFinished([]string{dev, usr}, 20*time.Second)

	leaf := h.MustIssue(got[dev], nil)
	if leaf.Subject.CommonName != "ASSET-0042" || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{"/Sales/EMEA"}) ||
		len(leaf.URIs) != 1 || leaf.URIs[0].String() != "urn:asset:ASSET-0042" {
		t.Fatalf("device certificate: subject %q, URIs %v", leaf.Subject, leaf.URIs)
	}
	leaf = h.MustIssue(got[usr], nil)
	if leaf.Subject.CommonName != "Alice Liddell (E1234)" || !slices.Equal(upns(t, leaf), []string{"E1234@corp.example.com"}) {
		t.Fatalf("user certificate: subject %q, UPNs %v", leaf.Subject, upns(t, leaf))
	}
	if got := h.Metric("certprov_directory_lookups_total", "kind", "device", "result", "found"); got != 1 {
		t.Fatalf("device lookups found = %v, want 1", got)
	}

	// A second certificate for the same device within the cache's TTL reads no record again.
	again := h.Start(emulator.ProcessSpec{ProfileRef: "dir-device", DeviceDirectoryID: "dev-dir-1"})
	h.MustIssue(h.WaitFinished([]string{again}, 20*time.Second)[again], nil)
	if n := h.Emu.DirectoryCalls(emulator.MethodDirectoryDevicesGet); n != 1 {
		t.Fatalf("chromeosdevices.get called %d times for two processes of one device; want 1 (cached)", n)
	}
}

// TestDirectoryFailures: what the user is told when the Directory has no record, refuses the
// adapter, or is over its quota for a while.
func TestDirectoryFailures(t *testing.T) {
	h := e2etest.New(t, e2etest.Options{Directory: true, Profiles: directoryProfiles(), RetryFor: 20 * time.Second})
	h.Emu.SetDirectoryDevice(e2etest.Customer, admin.ChromeOsDevice{DeviceId: "known", AnnotatedAssetId: "ASSET-7"})

	t.Run("not in the directory", func(t *testing.T) {
		name := h.Start(emulator.ProcessSpec{ProfileRef: "dir-device", DeviceDirectoryID: "unknown-1"})
		s := h.WaitFinished([]string{name}, 20*time.Second)[name]
		if s.State != emulator.StateFailed || !strings.Contains(s.FailureMessage, "no record of the device unknown-1") ||
			!strings.Contains(s.FailureMessage, `profile "dir-device"`) {
			t.Fatalf("state %s, message %q; want a failure naming the profile and the missing record", s.State, s.FailureMessage)
		}
		if s.SignDataCount != 0 {
			t.Fatalf("signData sent %d times for a request that could not be described", s.SignDataCount)
		}
	})
	t.Run("forbidden", func(t *testing.T) {
		if err := h.Emu.Inject(frontend.Fault{Method: emulator.MethodDirectoryDevicesGet, Times: 1, Status: 403}); err != nil {
			t.Fatal(err)
		}
		name := h.Start(emulator.ProcessSpec{ProfileRef: "dir-device", DeviceDirectoryID: "forbidden-1"})
		s := h.WaitFinished([]string{name}, 20*time.Second)[name]
		if s.State != emulator.StateFailed || !strings.Contains(s.FailureMessage, "domain-wide delegation") {
			t.Fatalf("state %s, message %q; want a failure asking for domain-wide delegation", s.State, s.FailureMessage)
		}
		if s.SignDataCount != 0 {
			t.Fatalf("signData sent %d times for a request that could not be described", s.SignDataCount)
		}
	})
	t.Run("rate limited, then answered", func(t *testing.T) {
		before := h.Emu.DirectoryCalls(emulator.MethodDirectoryDevicesGet)
		if err := h.Emu.Inject(frontend.Fault{Method: emulator.MethodDirectoryDevicesGet, Times: 2, Status: 429}); err != nil {
			t.Fatal(err)
		}
		name := h.Start(emulator.ProcessSpec{ProfileRef: "dir-device", DeviceDirectoryID: "known"})
		leaf := h.MustIssue(h.WaitFinished([]string{name}, 20*time.Second)[name], nil)
		if leaf.Subject.CommonName != "ASSET-7" {
			t.Fatalf("common name %q", leaf.Subject.CommonName)
		}
		if n := h.Emu.DirectoryCalls(emulator.MethodDirectoryDevicesGet) - before; n != 3 {
			t.Fatalf("chromeosdevices.get called %d times; want 3 (two 429s, then the record)", n)
		}
		if got := h.Metric("certprov_directory_lookups_total", "kind", "device", "result", "retryable"); got != 2 {
			t.Fatalf("retryable lookups %v, want 2", got)
		}
	})
}

// TestRoutes: the first route whose org unit is the subject's or above it picks the CA
// connection and validity; a subject no route matches gets the profile's and the process's.
func TestRoutes(t *testing.T) {
	var emeaRoots *x509.CertPool
	routed := e2etest.Profile("{{.Device.SerialNumber}}", "", 30*time.Second)
	routed.Routes = []config.Route{
		{OrgUnit: "/Sales/EMEA", CAConnection: "emea"},
		{OrgUnit: "/Sales", Validity: 36 * time.Hour},
	}
	routedUser := e2etest.Profile("{{.User.Email}}", "{{.User.Email}}", 30*time.Second)
	routedUser.Routes = []config.Route{{OrgUnit: "/Staff/Contractors", CAConnection: "emea"}}
	h := e2etest.New(t, e2etest.Options{Directory: true, Profiles: map[string]config.Profile{"routed": routed, "routed-user": routedUser},
		CAs: func(h *e2etest.Harness) map[string]ca.Connector {
			conn, roots := h.NewLocalCA("emea")
			emeaRoots = roots
			return map[string]ca.Connector{"emea": conn}
		}})
	for id, ou := range map[string]string{"paris": "/Sales/EMEA/Paris", "sales": "/sales", "eng": "/Engineering", "salesops": "/SalesOps"} {
		h.Emu.SetDirectoryDevice(e2etest.Customer, admin.ChromeOsDevice{DeviceId: id, OrgUnitPath: ou})
	}
	h.Emu.SetDirectoryUser(admin.User{Id: "2001", PrimaryEmail: "bob@example.com", OrgUnitPath: "/Staff/Contractors"})
	// The device of a user process has an org unit that would not route: the user's counts.
	h.Emu.SetDirectoryDevice(e2etest.Customer, admin.ChromeOsDevice{DeviceId: "bobs-device", OrgUnitPath: "/Engineering"})

	names := map[string]string{}
	for _, id := range []string{"paris", "sales", "eng", "salesops", "not-in-directory"} {
		names[id] = h.Start(emulator.ProcessSpec{ProfileRef: "routed", DeviceDirectoryID: id})
	}
	names["bob"] = h.Start(emulator.ProcessSpec{ProfileRef: "routed-user", Scope: emulator.ScopeUser, UserEmail: "bob@example.com",
		UserDirectoryID: "2001", AffiliatedUser: true, DeviceDirectoryID: "bobs-device"})
	got := h.WaitFinished(slices.Collect(maps.Values(names)), 30*time.Second)

	lifetime := func(leaf *x509.Certificate) time.Duration { return time.Until(leaf.NotAfter).Round(time.Hour) }
	// First match wins: /Sales/EMEA/Paris matches both routes, the first picks the EMEA CA and
	// leaves the profile's validity.
	if leaf := h.MustIssue(got[names["paris"]], emeaRoots); lifetime(leaf) != 24*time.Hour {
		t.Fatalf("paris: lifetime %s, want the profile's 24h", lifetime(leaf))
	}
	if n := h.Local.Issued(names["paris"]); n != 0 {
		t.Fatalf("paris: the default CA issued %d certificates", n)
	}
	if leaf := h.MustIssue(got[names["sales"]], nil); lifetime(leaf) != 36*time.Hour {
		t.Fatalf("sales (org unit in other case): lifetime %s, want the route's 36h", lifetime(leaf))
	}
	for _, id := range []string{"eng", "salesops", "not-in-directory"} {
		if leaf := h.MustIssue(got[names[id]], nil); lifetime(leaf) != 24*time.Hour {
			t.Fatalf("%s: lifetime %s, want the profile's 24h from the default CA", id, lifetime(leaf))
		}
	}
	h.MustIssue(got[names["bob"]], emeaRoots)
	if n := h.Emu.DirectoryCalls(emulator.MethodDirectoryUsersGet); n != 1 {
		t.Fatalf("users.get called %d times, want 1", n)
	}
}
