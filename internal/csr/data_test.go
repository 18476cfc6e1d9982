package csr

import (
	"strings"
	"testing"
)

// otherData stands for a template data type other than TemplateData, such as a Verified Access
// verify result.
type otherData struct {
	DeviceID string
	Host     string
}

func TestCompileData(t *testing.T) {
	sample := otherData{DeviceID: "dev-1", Host: "host.example.com"}
	p := Spec{
		Subject:         Subject{CommonName: "{{.DeviceID | upper}}"},
		SubjectAltNames: SANs{DNS: []string{"{{.Host}}"}},
		KeyUsage:        []string{"digitalSignature"},
		ExtKeyUsage:     []string{"clientAuth"},
	}
	tmpl, err := CompileData(p, sample)
	if err != nil {
		t.Fatalf("CompileData: %v", err)
	}
	tests := []struct {
		name    string
		data    any
		wantCN  string
		wantErr string
	}{
		{"renders", otherData{DeviceID: "abc", Host: "a.example.com"}, "ABC", ""},
		{"value checks apply", otherData{DeviceID: "abc", Host: "bad host"}, "", `subjectAltNames.dns[0]: "bad host"`},
		{"subject value checks apply", otherData{DeviceID: "a\nb", Host: "a.example.com"}, "", "control character"},
		{"wrong data type", TemplateData{}, "", "compiled for csr.otherData"},
		{"pointer is another type", &sample, "", "compiled for csr.otherData"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := tmpl.RenderData(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v; want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.Subject.CommonName != tt.wantCN || len(req.DNSNames) != 1 {
				t.Errorf("request %+v", req)
			}
		})
	}
	t.Run("unknown field fails at compile", func(t *testing.T) {
		p := p
		p.Subject.CommonName = "{{.Device.SerialNumber}}"
		if _, err := CompileData(p, sample); err == nil || !strings.Contains(err.Error(), "subject.commonName") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("no sample", func(t *testing.T) {
		if _, err := CompileData(p, nil); err == nil {
			t.Error("compiled without sample data")
		}
	})
	t.Run("Compile still renders processes", func(t *testing.T) {
		tmpl, err := Compile(Spec{Subject: Subject{CommonName: "{{.Device.SerialNumber}}"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tmpl.RenderData(otherData{}); err == nil {
			t.Error("a process template rendered other data")
		}
	})
}
