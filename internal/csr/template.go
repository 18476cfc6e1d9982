package csr

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/template"

	"github.com/certprov/certprov-adapter/internal/process"
)

// TemplateDevice is the device part of TemplateData; empty for a user on an unaffiliated device.
type TemplateDevice struct {
	SerialNumber string
	DirectoryID  string
	// Directory is the device's record in the Admin SDK Directory (chromeosdevices.get), read
	// only for profiles whose templates or routes use it (Template.Needs); empty otherwise.
	Directory DeviceDirectory
}

// TemplateUser is the user part of TemplateData; empty for a device-scoped process.
type TemplateUser struct {
	Email       string
	DirectoryID string
	// Directory is the user's record in the Admin SDK Directory (users.get), read only for
	// profiles whose templates or routes use it (Template.Needs); empty otherwise.
	Directory UserDirectory
}

// DeviceDirectory is what templates see of a ChromeOS device's Directory record
// ({{.Device.Directory.AssetID}}). Fields the admin never set are empty strings.
type DeviceDirectory struct {
	DeviceID           string // the directory id (deviceId)
	SerialNumber       string
	Model              string
	AssetID            string // annotatedAssetId
	Location           string // annotatedLocation
	User               string // annotatedUser
	Notes              string
	OrgUnitPath        string // e.g. /Sales/EMEA
	OrgUnitID          string
	MACAddress         string // the wireless interface, as the Directory writes it (lower-case hex, no separators)
	EthernetMACAddress string
}

// UserDirectory is what templates see of a user's Directory record
// ({{.User.Directory.OrgUnitPath}}, {{index .User.Directory.ExternalIDs "organization"}}).
type UserDirectory struct {
	ID           string
	PrimaryEmail string
	OrgUnitPath  string
	GivenName    string
	FamilyName   string
	FullName     string
	// ExternalIDs maps an external id's type (organization — the employee id —, account,
	// customer, login_id, network, or the customType of a custom one) to its value; the first
	// of a type wins.
	ExternalIDs map[string]string
	// CustomSchemas maps a custom schema to its fields' values; a multi-valued field's values are
	// joined with commas.
	CustomSchemas map[string]map[string]string
}

// TemplateData is what profile templates see ({{.Device.SerialNumber}}, {{.User.Email}}, …).
// It is a copy of the process fields, so that templates cannot reach anything else (the SPKI, the
// signature) and so that the set of names a template may use is fixed and checked at Compile.
type TemplateData struct {
	Device      TemplateDevice
	User        TemplateUser
	Customer    string
	ProcessID   string
	ProfileID   string
	ProcessName string
}

// DataFor builds the template data for p. Missing parts (no device, no user) are empty strings.
func DataFor(p *process.Process) TemplateData {
	var d TemplateData
	if p == nil {
		return d
	}
	if p.Device != nil {
		d.Device = TemplateDevice{SerialNumber: p.Device.SerialNumber, DirectoryID: p.Device.DirectoryID}
	}
	if p.User != nil {
		d.User = TemplateUser{Email: p.User.Email, DirectoryID: p.User.DirectoryID}
	}
	d.Customer = p.Customer
	d.ProcessID = p.ID
	d.ProfileID = p.ProfileID
	d.ProcessName = p.Name
	return d
}

// sampleData is used to execute every template once at Compile: text/template only finds an
// unknown field ({{.Device.Nope}}) when it executes, and a typo should fail at startup, not on the
// first device. The values are plausible so that the helper functions succeed on them.
func sampleData() TemplateData {
	return TemplateData{
		Device: TemplateDevice{SerialNumber: "5CD0000000", DirectoryID: "00000000-0000-0000-0000-000000000000",
			Directory: DeviceDirectory{DeviceID: "00000000-0000-0000-0000-000000000000", SerialNumber: "5CD0000000",
				Model: "Chromebook", AssetID: "ASSET-0001", Location: "Building 1", User: "user@example.com",
				Notes: "notes", OrgUnitPath: "/Devices", OrgUnitID: "id:00000000", MACAddress: "0123456789ab",
				EthernetMACAddress: "0123456789ac"}},
		User: TemplateUser{Email: "user@example.com", DirectoryID: "100000000000000000000",
			Directory: UserDirectory{ID: "100000000000000000000", PrimaryEmail: "user@example.com",
				OrgUnitPath: "/Users", GivenName: "Given", FamilyName: "Family", FullName: "Given Family",
				ExternalIDs: sampleExternalIDs(), CustomSchemas: map[string]map[string]string{}}},
		Customer:    "C00000000",
		ProcessID:   "0123456789ABCDEF0123456789ABCDEF",
		ProfileID:   "profile",
		ProcessName: process.Name("C00000000", "0123456789ABCDEF0123456789ABCDEF"),
	}
}

// sampleExternalIDs holds every external id type the Directory defines, so that a template may
// name one as a field ({{.User.Directory.ExternalIDs.organization}}) and compile; index is the
// spelling that renders empty for a user without one, and the one for custom schemas, whose
// names the adapter cannot know in advance.
func sampleExternalIDs() map[string]string {
	m := map[string]string{}
	for _, t := range []string{"account", "custom", "customer", "login_id", "network", "organization"} {
		m[t] = "0000"
	}
	return m
}

// templateFuncs are the helpers templates may call. They are all pure string functions; the value
// comes last so that they work in pipelines: {{.User.Email | emailLocal | lower}}.
func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"lower":      strings.ToLower,
		"upper":      strings.ToUpper,
		"trimSpace":  strings.TrimSpace,
		"trimPrefix": func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
		"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		"replace":    func(old, repl, s string) string { return strings.ReplaceAll(s, old, repl) },
		"emailLocal": func(s string) string {
			if i := strings.LastIndexByte(s, '@'); i >= 0 {
				return s[:i]
			}
			return s
		},
		"emailDomain": func(s string) string {
			if i := strings.LastIndexByte(s, '@'); i >= 0 {
				return s[i+1:]
			}
			return ""
		},
		"default": func(def, s string) string {
			if s == "" {
				return def
			}
			return s
		},
	}
}

// field is one compiled template string and the configuration key it came from.
type field struct {
	name string
	tmpl *template.Template
}

func (f *field) render(data any) (string, error) {
	var b strings.Builder
	if err := f.tmpl.Execute(&b, data); err != nil {
		return "", &FieldError{Field: f.name, Err: err}
	}
	return b.String(), nil
}

// Spec is what a profile asks of a certificate: text/template strings for the subject and the
// subject alternative names, key usage and extended key usage names, and the CA template name
// (config.Profile.Spec). Compile's errors name its fields by their configuration keys
// (subject.commonName, subjectAltNames.email[0], extendedKeyUsage[1], …).
type Spec struct {
	Subject         Subject
	SubjectAltNames SANs
	KeyUsage        []string // digitalSignature, keyEncipherment, …
	ExtKeyUsage     []string // clientAuth, serverAuth, …
	TemplateName    string
}

// Subject holds the subject's templates.
type Subject struct {
	CommonName         string
	Organization       []string
	OrganizationalUnit []string
	Locality           string
	Province           string
	Country            string
}

// SANs holds the subject alternative names' templates.
type SANs struct {
	DNS   []string
	Email []string
	URI   []string
	UPN   []string
}

// Template is a compiled Spec: parsed templates plus resolved key usages. It is immutable and
// safe for concurrent use.
type Template struct {
	commonName, locality, province, country *field
	organization, organizationalUnit        []field
	dns, email, uri, upn                    []field

	keyUsage           x509.KeyUsage
	extKeyUsage        []x509.ExtKeyUsage
	unknownExtKeyUsage []asn1.ObjectIdentifier
	templateName       string

	// dataType is the type templates were compiled against; Render and RenderData refuse data of
	// another type, whose fields the templates were never checked against.
	dataType reflect.Type
	// needs is what Directory data the templates use, found by reading them at Compile.
	needs Needs
}

type compiler struct {
	sample any // executed once per template, so that unknown fields fail at Compile
	errs   []error
}

func (c *compiler) parse(name, text string) *field {
	t, err := template.New(name).Option("missingkey=error").Funcs(templateFuncs()).Parse(text)
	if err != nil {
		c.errs = append(c.errs, &FieldError{Field: name, Err: explainParse(err)})
		return nil
	}
	f := &field{name: name, tmpl: t}
	var b strings.Builder
	if err := t.Execute(&b, c.sample); err != nil {
		c.errs = append(c.errs, &FieldError{Field: name, Err: explainExec(t.Tree, c.sample, err)})
		return nil
	}
	return f
}

// optional compiles a single-valued key; an empty string means the key is not set.
func (c *compiler) optional(name, text string) *field {
	if text == "" {
		return nil
	}
	return c.parse(name, text)
}

// list compiles a list key; an empty entry is a mistake in the configuration, not "unset".
// check, when not nil, is applied now to entries without template actions: a literal value that
// Render would refuse for every process is a mistake in the configuration.
func (c *compiler) list(name string, texts []string, check func(string) error) []field {
	var out []field
	for i, text := range texts {
		n := fmt.Sprintf("%s[%d]", name, i)
		if text == "" {
			c.errs = append(c.errs, &FieldError{Field: n, Err: errors.New("empty template")})
			continue
		}
		f := c.parse(n, text)
		if f == nil {
			continue
		}
		if check != nil && !strings.Contains(text, "{{") {
			if err := check(text); err != nil {
				c.errs = append(c.errs, fieldError(n, text, err))
				continue
			}
		}
		out = append(out, *f)
	}
	return out
}

// Compile parses every template of p and resolves its key usage names. It returns all problems
// at once (errors.Join), each naming its configuration key, e.g.
// `subject.commonName: template: subject.commonName:1: function "nope" not defined`.
func Compile(p Spec) (*Template, error) {
	return CompileData(p, sampleData())
}

// CompileData is Compile for templates over another data type than TemplateData, such as a
// Verified Access verify result: the subject, SAN and key usage rules, helper functions and value
// checks stay the same, only the names templates may use change. sample must be a value of that
// type (not a pointer to one) whose fields hold plausible values: every template is executed on it
// once, so that a misspelt field fails here and not on the first device. Render the result with
// RenderData and values of the same type.
func CompileData(p Spec, sample any) (*Template, error) {
	if sample == nil {
		return nil, errors.New("compile templates: no sample data")
	}
	c := &compiler{sample: sample}
	t := &Template{templateName: p.TemplateName, dataType: reflect.TypeOf(sample)}
	t.commonName = c.optional("subject.commonName", p.Subject.CommonName)
	t.organization = c.list("subject.organization", p.Subject.Organization, nil)
	t.organizationalUnit = c.list("subject.organizationalUnit", p.Subject.OrganizationalUnit, nil)
	t.locality = c.optional("subject.locality", p.Subject.Locality)
	t.province = c.optional("subject.province", p.Subject.Province)
	t.country = c.optional("subject.country", p.Subject.Country)
	t.dns = c.list("subjectAltNames.dns", p.SubjectAltNames.DNS, checkDNSName)
	t.email = c.list("subjectAltNames.email", p.SubjectAltNames.Email, checkEmail)
	t.uri = c.list("subjectAltNames.uri", p.SubjectAltNames.URI, func(v string) error { _, err := checkURI(v); return err })
	t.upn = c.list("subjectAltNames.upn", p.SubjectAltNames.UPN, checkUPN)

	for i, name := range p.KeyUsage {
		ku, err := parseKeyUsage(name)
		if err != nil {
			c.errs = append(c.errs, &FieldError{Field: fmt.Sprintf("keyUsage[%d]", i), Err: err})
			continue
		}
		t.keyUsage |= ku
	}
	for i, name := range p.ExtKeyUsage {
		eku, oid, err := parseExtKeyUsage(name)
		switch {
		case err != nil:
			c.errs = append(c.errs, &FieldError{Field: fmt.Sprintf("extendedKeyUsage[%d]", i), Err: err})
		case oid != nil:
			if !slices.ContainsFunc(t.unknownExtKeyUsage, oid.Equal) {
				t.unknownExtKeyUsage = append(t.unknownExtKeyUsage, oid)
			}
		default:
			if !slices.Contains(t.extKeyUsage, eku) {
				t.extKeyUsage = append(t.extKeyUsage, eku)
			}
		}
	}
	if err := checkText(p.TemplateName); err != nil {
		c.errs = append(c.errs, fieldError("templateName", p.TemplateName, err))
	}
	if p.Subject.CommonName == "" && len(p.SubjectAltNames.DNS)+len(p.SubjectAltNames.Email)+
		len(p.SubjectAltNames.URI)+len(p.SubjectAltNames.UPN) == 0 {
		c.errs = append(c.errs, &FieldError{Field: "subject.commonName", Err: errors.New("empty and no subjectAltNames: the certificate would name nobody")})
	}
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	t.needs = t.directoryNeeds()
	return t, nil
}

// Render executes the templates over p and checks every rendered value. Subject values that
// render empty are left out (a profile may serve users and devices); a rendered SAN may not be
// empty, and the request must name its subject somehow.
func (t *Template) Render(p *process.Process) (*Request, error) {
	return t.RenderData(DataFor(p))
}

// RenderData is Render over data of the type the template was compiled with (CompileData); a
// Template from Compile takes a TemplateData. The same value checks apply.
func (t *Template) RenderData(data any) (*Request, error) {
	if got := reflect.TypeOf(data); got != t.dataType {
		return nil, fmt.Errorf("render templates: data of type %v, compiled for %v", got, t.dataType)
	}
	req := &Request{
		KeyUsage:           t.keyUsage,
		ExtKeyUsage:        slices.Clone(t.extKeyUsage),
		UnknownExtKeyUsage: slices.Clone(t.unknownExtKeyUsage),
		TemplateName:       t.templateName,
	}
	var errs []error
	// value renders f and checks the result. A subject value that renders empty is left out
	// (ok is false); a SAN that renders empty goes to check, which refuses it.
	value := func(f *field, isSAN bool, check func(string) error) (string, bool) {
		v, err := f.render(data)
		if err != nil {
			errs = append(errs, err)
			return "", false
		}
		if v == "" && !isSAN {
			return "", false
		}
		if err := check(v); err != nil {
			if v == "" {
				// Say which of the data it names was empty: the usual reason is a value the
				// process (or the verify result) did not carry.
				err = &EmptyError{Err: err, Empty: emptyRefs(f.tmpl.Tree, data)}
			}
			errs = append(errs, fieldError(f.name, v, err))
			return "", false
		}
		return v, true
	}
	subject := func(maxLen int) func(string) error {
		return func(v string) error { return checkSubjectValue(v, maxLen) }
	}
	if t.commonName != nil {
		req.Subject.CommonName, _ = value(t.commonName, false, subject(maxCommonName))
	}
	for i := range t.organization {
		if v, ok := value(&t.organization[i], false, subject(maxOrganization)); ok {
			req.Subject.Organization = append(req.Subject.Organization, v)
		}
	}
	for i := range t.organizationalUnit {
		if v, ok := value(&t.organizationalUnit[i], false, subject(maxOrgUnit)); ok {
			req.Subject.OrganizationalUnit = append(req.Subject.OrganizationalUnit, v)
		}
	}
	if t.locality != nil {
		if v, ok := value(t.locality, false, subject(maxLocality)); ok {
			req.Subject.Locality = []string{v}
		}
	}
	if t.province != nil {
		if v, ok := value(t.province, false, subject(maxProvince)); ok {
			req.Subject.Province = []string{v}
		}
	}
	if t.country != nil {
		if v, ok := value(t.country, false, checkCountry); ok {
			req.Subject.Country = []string{v}
		}
	}
	for i := range t.dns {
		if v, ok := value(&t.dns[i], true, checkDNSName); ok {
			req.DNSNames = append(req.DNSNames, v)
		}
	}
	for i := range t.email {
		if v, ok := value(&t.email[i], true, checkEmail); ok {
			req.EmailAddresses = append(req.EmailAddresses, v)
		}
	}
	for i := range t.uri {
		var u *url.URL
		if _, ok := value(&t.uri[i], true, func(v string) (err error) {
			u, err = checkURI(v)
			return err
		}); ok {
			req.URIs = append(req.URIs, u)
		}
	}
	for i := range t.upn {
		if v, ok := value(&t.upn[i], true, checkUPN); ok {
			req.UPNs = append(req.UPNs, v)
		}
	}
	if len(errs) == 0 && req.Subject.CommonName == "" && !req.hasSANs() {
		empty := &EmptyError{Err: errors.New("rendered empty and no subject alternative names: the certificate would name nobody")}
		if t.commonName != nil {
			empty.Empty = emptyRefs(t.commonName.tmpl.Tree, data)
		}
		errs = append(errs, &FieldError{Field: "subject.commonName", Err: empty})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return req, nil
}

// parseKeyUsage resolves a keyUsage name as RFC 5280 spells it (case-insensitive).
func parseKeyUsage(name string) (x509.KeyUsage, error) {
	switch strings.ToLower(name) {
	case "digitalsignature":
		return x509.KeyUsageDigitalSignature, nil
	case "contentcommitment", "nonrepudiation":
		return x509.KeyUsageContentCommitment, nil
	case "keyencipherment":
		return x509.KeyUsageKeyEncipherment, nil
	case "dataencipherment":
		return x509.KeyUsageDataEncipherment, nil
	case "keyagreement":
		return x509.KeyUsageKeyAgreement, nil
	case "encipheronly":
		return x509.KeyUsageEncipherOnly, nil
	case "decipheronly":
		return x509.KeyUsageDecipherOnly, nil
	case "keycertsign", "crlsign":
		return 0, fmt.Errorf("%q is for CA certificates, not device certificates", name)
	}
	return 0, fmt.Errorf("unknown key usage %q (want digitalSignature, contentCommitment, keyEncipherment, dataEncipherment, keyAgreement, encipherOnly or decipherOnly)", name)
}

// OIDs of extended key usages crypto/x509 has no constant for.
func oidSmartcardLogon() asn1.ObjectIdentifier {
	return asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 2}
}

// parseExtKeyUsage resolves an extendedKeyUsage name (case-insensitive) or a dotted OID. Names
// crypto/x509 knows come back as x509.ExtKeyUsage, anything else as an OID.
func parseExtKeyUsage(name string) (x509.ExtKeyUsage, asn1.ObjectIdentifier, error) {
	switch strings.ToLower(name) {
	case "any", "anyextendedkeyusage":
		return x509.ExtKeyUsageAny, nil, nil
	case "serverauth":
		return x509.ExtKeyUsageServerAuth, nil, nil
	case "clientauth":
		return x509.ExtKeyUsageClientAuth, nil, nil
	case "codesigning":
		return x509.ExtKeyUsageCodeSigning, nil, nil
	case "emailprotection":
		return x509.ExtKeyUsageEmailProtection, nil, nil
	case "ipsecendsystem":
		return x509.ExtKeyUsageIPSECEndSystem, nil, nil
	case "ipsectunnel":
		return x509.ExtKeyUsageIPSECTunnel, nil, nil
	case "ipsecuser":
		return x509.ExtKeyUsageIPSECUser, nil, nil
	case "timestamping":
		return x509.ExtKeyUsageTimeStamping, nil, nil
	case "ocspsigning":
		return x509.ExtKeyUsageOCSPSigning, nil, nil
	case "smartcardlogon":
		return 0, oidSmartcardLogon(), nil
	}
	if oid, ok := parseOID(name); ok {
		return 0, oid, nil
	}
	return 0, nil, fmt.Errorf("unknown extended key usage %q (want clientAuth, serverAuth, emailProtection, codeSigning, timeStamping, OCSPSigning, ipsecEndSystem, ipsecTunnel, ipsecUser, smartcardLogon, any, or a dotted OID)", name)
}

// parseOID parses a dotted object identifier such as 1.3.6.1.5.5.7.3.2.
func parseOID(s string) (asn1.ObjectIdentifier, bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, false
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || p == "" || (len(p) > 1 && p[0] == '0') || (p[0] == '+') {
			return nil, false
		}
		oid[i] = n
	}
	if oid[0] > 2 || (oid[0] < 2 && oid[1] > 39) {
		return nil, false
	}
	return oid, true
}
