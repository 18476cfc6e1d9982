package verifiedaccess

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/googleauth"
)

// csrOnlyCA is a connector that needs a CSR, like SCEP or EST.
type csrOnlyCA struct{}

func (csrOnlyCA) Issue(context.Context, *ca.Request) (*ca.Issued, error) { return nil, nil }

func TestProfiles(t *testing.T) {
	builtin := newTestCA(t).conn
	cas := map[string]CAConnection{
		"builtin": {Type: "local", Connector: builtin, Timeout: 7 * time.Second},
		"ndes":    {Type: "scep", Connector: csrOnlyCA{}},
	}
	base := func() config.VerifiedAccessProfile {
		return config.VerifiedAccessProfile{
			APIVersion: config.VAv2, Scopes: []string{"machine"}, EnrollmentDomain: "Example.com",
			CAConnection: "builtin", Subject: config.Subject{CommonName: "{{.DevicePermanentID}}"}, Validity: time.Hour,
		}
	}
	t.Run("binds the CA", func(t *testing.T) {
		p := base()
		p.Scopes = []string{"machine", "user"}
		cfg := &config.Config{VerifiedAccess: config.VerifiedAccess{APIVersion: config.VAv1, Profiles: map[string]config.VerifiedAccessProfile{"a": p}}}
		got, err := Profiles(cfg, cas)
		if err != nil {
			t.Fatal(err)
		}
		a := got["a"]
		if a.CA == nil || a.CATimeout != 7*time.Second || a.CAName != "builtin" || a.APIVersion != config.VAv2 {
			t.Errorf("%+v", a)
		}
		if len(a.UserDomains) != 1 || a.UserDomains[0] != "example.com" {
			t.Errorf("user domains default to the enrollment domain, lower case: %v", a.UserDomains)
		}
	})
	t.Run("inherits the API version", func(t *testing.T) {
		p := base()
		p.APIVersion = ""
		cfg := &config.Config{VerifiedAccess: config.VerifiedAccess{APIVersion: config.VAv1, Profiles: map[string]config.VerifiedAccessProfile{"a": p}}}
		got, err := Profiles(cfg, cas)
		if err != nil || got["a"].APIVersion != config.VAv1 {
			t.Fatalf("%v %v", got, err)
		}
	})
	tests := []struct {
		name string
		edit func(p *config.VerifiedAccessProfile)
		want []string
	}{
		{"CA that needs a CSR", func(p *config.VerifiedAccessProfile) { p.CAConnection = "ndes" },
			[]string{`verifiedAccess.profiles.a.caConnection: CA connection "ndes" (type scep) cannot issue for a public key`}},
		{"unknown CA", func(p *config.VerifiedAccessProfile) { p.CAConnection = "nope" },
			[]string{`verifiedAccess.profiles.a.caConnection: "nope" is not a CA connection`}},
		{"template typo", func(p *config.VerifiedAccessProfile) { p.Subject.CommonName = "{{.Device.SerialNumber}}" },
			[]string{"verifiedAccess.profiles.a.subject.commonName"}},
		{"template typo and CA at once", func(p *config.VerifiedAccessProfile) {
			p.Subject.CommonName = "{{.Signals.Serial}}"
			p.CAConnection = "ndes"
		}, []string{"verifiedAccess.profiles.a.subject.commonName", "verifiedAccess.profiles.a.caConnection"}},
		{"policy", func(p *config.VerifiedAccessProfile) { p.Policy.Signals = map[string][]string{"osFirewall": {"ON"}} },
			[]string{"verifiedAccess.profiles.a.policy.signals.osFirewall[0]"}},
		{"v1 with a v2 policy", func(p *config.VerifiedAccessProfile) {
			p.APIVersion = config.VAv1
			p.Policy.CustomerIDs = []string{"C0abc123"}
		}, []string{"verifiedAccess.profiles.a.policy: needs apiVersion v2"}},
		{"upn", func(p *config.VerifiedAccessProfile) { p.SubjectAltNames.UPN = []string{"{{.Identity}}"} },
			[]string{"verifiedAccess.profiles.a.subjectAltNames.upn"}},
		{"machine without domain", func(p *config.VerifiedAccessProfile) { p.EnrollmentDomain = "" },
			[]string{"verifiedAccess.profiles.a.enrollmentDomain"}},
		{"bad scope", func(p *config.VerifiedAccessProfile) { p.Scopes = []string{"device"} },
			[]string{"verifiedAccess.profiles.a.scopes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base()
			tt.edit(&p)
			cfg := &config.Config{VerifiedAccess: config.VerifiedAccess{Profiles: map[string]config.VerifiedAccessProfile{"a": p}}}
			got, err := Profiles(cfg, cas)
			if err == nil {
				t.Fatalf("no error; profiles %v", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "verifiedAccess.profiles.a.") {
					t.Errorf("line without its YAML path: %q", line)
				}
			}
		})
	}
}

func TestNewClientCredentials(t *testing.T) {
	_, err := NewClient(context.Background(), ClientOptions{
		Credentials: googleauth.Credentials{Type: googleauth.ServiceAccountKey, File: filepath.Join(t.TempDir(), "missing.json")},
	})
	if err == nil || !strings.Contains(err.Error(), "verified access credentials") {
		t.Errorf("err %v", err)
	}
}

func TestTemplateDataSample(t *testing.T) {
	// Every field of the sample is set, so that no template compiles against an empty value by
	// accident (a helper like emailDomain would hide a typo behind "").
	var zero func(prefix string, v reflect.Value)
	zero = func(prefix string, v reflect.Value) {
		for i := range v.NumField() {
			f, fv := v.Type().Field(i), v.Field(i)
			switch {
			case f.Type == reflect.TypeOf(TemplateList{}):
				if len(fv.Interface().(TemplateList).All()) == 0 {
					t.Errorf("sample %s%s is empty", prefix, f.Name)
				}
			case fv.Kind() == reflect.Struct:
				zero(prefix+f.Name+".", fv)
			case fv.IsZero():
				t.Errorf("sample %s%s is empty", prefix, f.Name)
			}
		}
	}
	zero("", reflect.ValueOf(sampleTemplateData()))

	// Every device signal Google reports reaches the templates.
	have := reflect.TypeOf(TemplateSignals{})
	ds := reflect.TypeOf(va2.DeviceSignals{})
	for i := range ds.NumField() {
		name := ds.Field(i).Name
		if name == "ForceSendFields" || name == "NullFields" {
			continue
		}
		if name == "Antivirus" {
			name = "AntivirusState"
		}
		if _, ok := have.FieldByName(name); !ok {
			t.Errorf("DeviceSignals.%s is not in TemplateSignals", ds.Field(i).Name)
		}
	}

	r := withSignals()
	r.Signals.SerialNumber, r.Signals.Hostname = "SN1", "host-1"
	got := templateData("wifi", "machine", "example.com", r)
	if got.DevicePermanentID != "5CD123" || got.Signals.SerialNumber != "SN1" || got.Signals.Hostname != "host-1" || got.Identity != "example.com" ||
		got.Signals.MacAddresses.String() != "02:00:5E:10:00:01,02:00:5e:10:00:02" || got.Signals.CrowdStrikeAgent.AgentId == "" ||
		got.Signals.AntivirusState != "ENABLED" || !got.Signals.SiteIsolationEnabled {
		t.Errorf("%+v", got)
	}
	v1 := templateData("p", "machine", "d", &Result{APIVersion: "v1", DevicePermanentID: "x"})
	if v1.Signals.SerialNumber != "" || len(v1.Signals.MacAddresses.All()) != 0 || v1.Signals.CrowdStrikeAgent.AgentId != "" {
		t.Errorf("v1 signals: %+v", v1.Signals)
	}
	if _, err := v1.Signals.MacAddresses.First(); err == nil || !strings.Contains(err.Error(), "no macAddresses") {
		t.Errorf("First of no MAC addresses: %v", err)
	}
}
