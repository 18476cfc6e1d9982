package csr

import (
	"errors"
	"strings"
	"testing"
)

// TestNeeds: the records a profile needs are read off its templates, so that a profile that
// names no Directory data never calls the Directory API, and one that does always gets it.
func TestNeeds(t *testing.T) {
	tests := []struct {
		name string
		cn   string
		want Needs
	}{
		{"process fields only", "{{.Device.SerialNumber}} {{.User.Email | lower}}", Needs{}},
		{"literal", "device", Needs{}},
		{"device asset id", "{{.Device.Directory.AssetID}}", Needs{Device: true}},
		{"user employee id", `{{index .User.Directory.ExternalIDs "organization"}}`, Needs{User: true}},
		{"user custom schema", `{{index .User.Directory.CustomSchemas "HR" "costCenter"}}`, Needs{User: true}},
		{"in a condition", `{{if .Device.Directory.Location}}x{{end}}y`, Needs{Device: true}},
		{"fallback", `{{.Device.Directory.AssetID | default .Device.SerialNumber}}`, Needs{Device: true}},
		{"through $", `{{$.User.Directory.OrgUnitPath}}`, Needs{User: true}},
		{"with a non-directory field", `{{with .User.Email}}{{.}}{{end}}`, Needs{}},
		{"with the device, its directory inside", `{{with .Device}}{{.Directory.AssetID}}{{end}}`, Needs{Device: true}},
		{"with the device, a process field inside", `{{with .Device}}{{.SerialNumber}}{{end}}`, Needs{Device: true}},
		{"with the directory record", `{{with .User.Directory}}{{.FullName}}{{end}}`, Needs{User: true}},
		{"the device printed whole", `{{.Device}}`, Needs{Device: true}},
		{"everything printed", `{{.}}`, Needs{Device: true, User: true}},
		{"a variable", `{{$d := .Device.Directory}}{{$d.AssetID}}`, Needs{Device: true}},
		{"a variable of the device", `{{$d := .Device}}{{$d.Directory.AssetID}}`, Needs{Device: true, User: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := Compile(Spec{Subject: Subject{CommonName: tc.cn}})
			if err != nil {
				t.Fatal(err)
			}
			if got := tmpl.Needs(); got != tc.want {
				t.Fatalf("Needs(%q) = %+v, want %+v", tc.cn, got, tc.want)
			}
		})
	}
	// Every key counts, not the common name alone.
	tmpl, err := Compile(Spec{Subject: Subject{CommonName: "{{.Device.SerialNumber}}", OrganizationalUnit: []string{"{{.User.Directory.OrgUnitPath}}"}},
		SubjectAltNames: SANs{URI: []string{"urn:asset:{{.Device.Directory.AssetID}}"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := tmpl.Needs(); got != (Needs{Device: true, User: true}) {
		t.Fatalf("Needs over several keys = %+v, want both", got)
	}
}

// TestRenderDirectoryData: Directory fields render like process fields, and an empty one that a
// SAN needs names itself in the error the user sees.
func TestRenderDirectoryData(t *testing.T) {
	tmpl, err := Compile(Spec{
		Subject: Subject{CommonName: "{{.Device.Directory.AssetID}}", OrganizationalUnit: []string{"{{.Device.Directory.OrgUnitPath | trimPrefix \"/\"}}"},
			Locality: "{{.Device.Directory.Location}}"},
		SubjectAltNames: SANs{
			UPN: []string{`{{index .User.Directory.ExternalIDs "organization"}}@corp.example.com`},
			URI: []string{`urn:cost-center:{{index .User.Directory.CustomSchemas "HR" "costCenter"}}`},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	data := DataFor(testProcess())
	data.Device.Directory = DeviceDirectory{AssetID: "ASSET-42", OrgUnitPath: "/Sales/EMEA", Location: "Paris"}
	data.User.Directory = UserDirectory{ExternalIDs: map[string]string{"organization": "E1234"},
		CustomSchemas: map[string]map[string]string{"HR": {"costCenter": "CC7"}}}
	req, err := tmpl.RenderData(data)
	if err != nil {
		t.Fatal(err)
	}
	if req.Subject.CommonName != "ASSET-42" || req.Subject.OrganizationalUnit[0] != "Sales/EMEA" || req.Subject.Locality[0] != "Paris" {
		t.Fatalf("subject %+v", req.Subject)
	}
	if req.UPNs[0] != "E1234@corp.example.com" || req.URIs[0].String() != "urn:cost-center:CC7" {
		t.Fatalf("SANs %v %v", req.UPNs, req.URIs)
	}

	// A device without an asset id: the common name renders empty, and with no SAN naming the
	// device the error says which field was empty.
	only, err := Compile(Spec{Subject: Subject{CommonName: "{{.Device.Directory.AssetID}}"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = only.RenderData(DataFor(testProcess()))
	var fe *FieldError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), ".Device.Directory.AssetID") {
		t.Fatalf("render without an asset id: %v; want a field error naming .Device.Directory.AssetID", err)
	}
}
