package cas

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"cloud.google.com/go/security/privateca/apiv1/privatecapb"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// keyConfig is the CAS certificate config for a bare public key: CAS's own form of what a CSR
// would carry. It returns the key's SPKI, which the issued certificate must carry.
func keyConfig(req *ca.KeyRequest) (*privatecapb.CertificateConfig, []byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(req.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("public key: %w", err)
	}
	if req.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return nil, nil, errors.New("CA key usages (keyCertSign or cRLSign) requested")
	}
	subject, err := keySubject(req)
	if err != nil {
		return nil, nil, err
	}
	sans := &privatecapb.SubjectAltNames{DnsNames: req.DNSNames, EmailAddresses: req.EmailAddresses}
	for i, u := range req.URIs {
		if u == nil {
			return nil, nil, fmt.Errorf("URI %d is nil", i)
		}
		sans.Uris = append(sans.Uris, u.String())
	}
	if subject.CommonName == "" && subject.Organization == "" && len(sans.DnsNames)+len(sans.EmailAddresses)+len(sans.Uris) == 0 {
		return nil, nil, errors.New("neither a subject nor subject alternative names")
	}
	ku := req.KeyUsage
	usage := &privatecapb.KeyUsage{
		BaseKeyUsage: &privatecapb.KeyUsage_KeyUsageOptions{
			DigitalSignature:  ku&x509.KeyUsageDigitalSignature != 0,
			ContentCommitment: ku&x509.KeyUsageContentCommitment != 0,
			KeyEncipherment:   ku&x509.KeyUsageKeyEncipherment != 0,
			DataEncipherment:  ku&x509.KeyUsageDataEncipherment != 0,
			KeyAgreement:      ku&x509.KeyUsageKeyAgreement != 0,
			EncipherOnly:      ku&x509.KeyUsageEncipherOnly != 0,
			DecipherOnly:      ku&x509.KeyUsageDecipherOnly != 0,
		},
		ExtendedKeyUsage: &privatecapb.KeyUsage_ExtendedKeyUsageOptions{},
	}
	eku := usage.ExtendedKeyUsage
	for _, u := range req.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			eku.ServerAuth = true
		case x509.ExtKeyUsageClientAuth:
			eku.ClientAuth = true
		case x509.ExtKeyUsageCodeSigning:
			eku.CodeSigning = true
		case x509.ExtKeyUsageEmailProtection:
			eku.EmailProtection = true
		case x509.ExtKeyUsageTimeStamping:
			eku.TimeStamping = true
		case x509.ExtKeyUsageOCSPSigning:
			eku.OcspSigning = true
		default:
			oid, ok := extKeyUsageOIDs[u]
			if !ok {
				return nil, nil, fmt.Errorf("extended key usage %d has no OID CAS could be given", u)
			}
			usage.UnknownExtendedKeyUsages = append(usage.UnknownExtendedKeyUsages, objectID(oid))
		}
	}
	for _, oid := range req.UnknownExtKeyUsage {
		usage.UnknownExtendedKeyUsages = append(usage.UnknownExtendedKeyUsages, objectID(oid))
	}
	return &privatecapb.CertificateConfig{
		SubjectConfig: &privatecapb.CertificateConfig_SubjectConfig{Subject: subject, SubjectAltName: sans},
		X509Config: &privatecapb.X509Parameters{
			KeyUsage:  usage,
			CaOptions: &privatecapb.X509Parameters_CaOptions{IsCa: new(false)},
		},
		PublicKey: &privatecapb.PublicKey{
			Key:    pemutil.EncodePublicKey(spki),
			Format: privatecapb.PublicKey_PEM,
		},
	}, spki, nil
}

// keySubject maps the subject onto CAS's Subject, which holds one value per attribute: a
// subject CAS cannot express is refused rather than silently cut.
func keySubject(req *ca.KeyRequest) (*privatecapb.Subject, error) {
	n := req.Subject
	one := func(attr string, vs []string) (string, error) {
		switch len(vs) {
		case 0:
			return "", nil
		case 1:
			return vs[0], nil
		}
		return "", fmt.Errorf("the subject has %d %s values; CAS takes one", len(vs), attr)
	}
	if len(n.ExtraNames) > 0 || n.SerialNumber != "" {
		return nil, errors.New("the subject has attributes CAS's subject config cannot express (serialNumber or others)")
	}
	s := &privatecapb.Subject{CommonName: n.CommonName}
	var errs []error
	for _, f := range []struct {
		attr string
		vs   []string
		dst  *string
	}{
		{"country", n.Country, &s.CountryCode},
		{"organization", n.Organization, &s.Organization},
		{"organizationalUnit", n.OrganizationalUnit, &s.OrganizationalUnit},
		{"locality", n.Locality, &s.Locality},
		{"province", n.Province, &s.Province},
		{"streetAddress", n.StreetAddress, &s.StreetAddress},
		{"postalCode", n.PostalCode, &s.PostalCode},
	} {
		v, err := one(f.attr, f.vs)
		errs = append(errs, err)
		*f.dst = v
	}
	return s, errors.Join(errs...)
}

// extKeyUsageOIDs are the OIDs of the extended key usages CAS has no flag for.
var extKeyUsageOIDs = map[x509.ExtKeyUsage]asn1.ObjectIdentifier{
	x509.ExtKeyUsageAny:                            {2, 5, 29, 37, 0},
	x509.ExtKeyUsageIPSECEndSystem:                 {1, 3, 6, 1, 5, 5, 7, 3, 5},
	x509.ExtKeyUsageIPSECTunnel:                    {1, 3, 6, 1, 5, 5, 7, 3, 6},
	x509.ExtKeyUsageIPSECUser:                      {1, 3, 6, 1, 5, 5, 7, 3, 7},
	x509.ExtKeyUsageMicrosoftServerGatedCrypto:     {1, 3, 6, 1, 4, 1, 311, 10, 3, 3},
	x509.ExtKeyUsageNetscapeServerGatedCrypto:      {2, 16, 840, 1, 113730, 4, 1},
	x509.ExtKeyUsageMicrosoftCommercialCodeSigning: {1, 3, 6, 1, 4, 1, 311, 2, 1, 22},
	x509.ExtKeyUsageMicrosoftKernelCodeSigning:     {1, 3, 6, 1, 4, 1, 311, 61, 1, 1},
}

func objectID(oid asn1.ObjectIdentifier) *privatecapb.ObjectId {
	path := make([]int32, len(oid))
	for i, v := range oid {
		path[i] = int32(v)
	}
	return &privatecapb.ObjectId{ObjectIdPath: path}
}
