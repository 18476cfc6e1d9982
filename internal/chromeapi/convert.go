package chromeapi

import (
	"encoding/base64"
	"fmt"
	"time"

	cm "google.golang.org/api/chromemanagement/v1"

	"github.com/certprov/certprov-adapter/internal/process"
)

// fromAPI flattens the generated resource type. Byte fields arrive base64-encoded; both the
// standard and the URL-safe alphabets are accepted since the docs do not pin one.
func fromAPI(r *cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess) (*process.Process, error) {
	customer, id, err := process.ParseName(r.Name)
	if err != nil {
		return nil, err
	}
	p := &process.Process{
		Name:               r.Name,
		Customer:           customer,
		ID:                 id,
		ProfileID:          r.ProvisioningProfileId,
		SignatureAlgorithm: r.SignatureAlgorithm,
		IssuedCertificate:  r.IssuedCertificate,
		FailureMessage:     r.FailureMessage,
	}
	if r.StartTime != "" {
		if t, err := time.Parse(time.RFC3339Nano, r.StartTime); err == nil {
			p.StartTime = t
		}
	}
	for _, f := range []struct {
		field string
		in    string
		out   *[]byte
	}{
		{"subjectPublicKeyInfo", r.SubjectPublicKeyInfo, &p.SPKI},
		{"signData", r.SignData, &p.SignData},
		{"signature", r.Signature, &p.Signature},
	} {
		if f.in == "" {
			continue
		}
		b, err := decodeBase64(f.in)
		if err != nil {
			return nil, fmt.Errorf("process %s: %s: %w", r.Name, f.field, err)
		}
		*f.out = b
	}
	if d := r.ChromeOsDevice; d != nil {
		p.Device = &process.Device{SerialNumber: d.SerialNumber, DirectoryID: d.DeviceDirectoryApiId}
	}
	if u := r.ChromeOsUserSession; u != nil {
		p.User = &process.User{Email: u.UserPrimaryEmail, DirectoryID: u.UserDirectoryApiId}
		if d := u.ChromeOsDevice; d != nil && p.Device == nil {
			p.Device = &process.Device{SerialNumber: d.SerialNumber, DirectoryID: d.DeviceDirectoryApiId}
		}
	}
	switch {
	case r.GenericCaConnection != nil:
		p.CAConnectionKind = process.CAConnectionGeneric
		p.CAConnectionRef = r.GenericCaConnection.CaConnectionAdapterConfigReference
	case r.ScepCaConnection != nil:
		p.CAConnectionKind = process.CAConnectionSCEP
		p.CAConnectionRef = r.ScepCaConnection.CaConnectionAdapterConfigReference
	}
	if r.GenericProfile != nil {
		p.ProfileRef = r.GenericProfile.ProfileAdapterConfigReference
	}
	if s := r.ScepProfile; s != nil {
		sp := &process.SCEPProfile{
			CommonName:          s.SubjectCommonName,
			Organization:        s.Organization,
			OrganizationalUnits: s.OrganizationalUnits,
			Locality:            s.Locality,
			State:               s.State,
			Country:             s.Country,
			TemplateName:        s.CertificateTemplateName,
			KeyUsages:           s.KeyUsages,
		}
		for _, san := range s.SubjectAltNames {
			if san != nil {
				sp.SANs = append(sp.SANs, process.SAN{Type: san.Type, Value: san.Value})
			}
		}
		p.SCEPProfile = sp
	}
	return p, nil
}

func decodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("not base64")
}
