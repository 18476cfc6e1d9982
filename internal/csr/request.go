// Package csr builds the PKCS#10 request a ChromeOS device signs, and checks what comes back.
//
// The device holds the private key, so the adapter cannot create a CSR the usual way. Instead it
// renders a Request from the adapter profile (Compile, Render) or from the scepProfile the process
// carries (FromSCEPProfile), encodes a CertificationRequestInfo around the device's own
// SubjectPublicKeyInfo (BuildCRI), has Google ask the device to sign exactly those bytes, then adds
// the signature (Assemble) and checks the result against the device key (Verify).
//
// Everything here is a pure function: no I/O, no clocks, no randomness. Values that come from the
// process (serial numbers, e-mail addresses, ids) are data, never template code or DN syntax: each
// rendered value becomes one attribute or one name on its own, and any value a CA or a relying
// party could misread (control characters, invalid names) is refused with an error that names the
// profile field and quotes the value.
//
// # Templates
//
// Profile strings are text/template templates over TemplateData ({{.Device.SerialNumber}},
// {{.User.Email}}, …). Every template is executed once at Compile on sample data, so an unknown
// field fails at startup. Helper functions take the value last, for pipelines:
//
//	lower, upper, trimSpace        case and whitespace
//	trimPrefix P, trimSuffix S     strip a fixed prefix or suffix
//	replace OLD NEW                replace every OLD by NEW
//	emailLocal, emailDomain        the parts of user@domain
//	default D                      D when the value is empty
//
// Example: {{.User.Email | emailLocal | lower}}, {{.Device.SerialNumber | default "unknown"}}.
//
// # Values
//
// Subject values that render empty are left out; a SAN that renders empty is an error. Subject
// values must be valid UTF-8 without control or bidirectional-override characters and within the
// RFC 5280 upper bounds (64 characters for commonName, organization, organizationalUnit; 128 for
// locality and province); country is two upper-case letters. DNS names are LDH ASCII (a leading
// "*." is allowed), e-mail addresses ASCII RFC 5321 mailboxes (a dot-atom or quoted local part,
// @, a host name; see checkEmail), URIs absolute and printable ASCII in canonical form, UPNs
// user@domain in UTF-8 without whitespace. SAN values without template actions are checked at
// Compile.
package csr

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/certprov/certprov-adapter/internal/process"
)

// Request is what the certificate should say, before it is encoded for the device to sign.
type Request struct {
	Subject        pkix.Name
	DNSNames       []string
	EmailAddresses []string
	URIs           []*url.URL
	// UPNs are Microsoft user principal names, encoded as otherName SANs
	// (1.3.6.1.4.1.311.20.2.3, UTF8String), which crypto/x509 cannot produce itself.
	UPNs []string

	KeyUsage           x509.KeyUsage
	ExtKeyUsage        []x509.ExtKeyUsage
	UnknownExtKeyUsage []asn1.ObjectIdentifier

	// TemplateName is passed to the CA (e.g. an AD CS certificate template); it is not encoded.
	TemplateName string
	// Attributes are extra PKCS#10 attributes a connector asked for (ca.AttributeContributor),
	// such as a SCEP challengePassword.
	Attributes []Attribute
}

// hasSANs reports whether the request names its subject in a subjectAltName.
func (r *Request) hasSANs() bool {
	return len(r.DNSNames)+len(r.EmailAddresses)+len(r.URIs)+len(r.UPNs) > 0
}

// Upper bounds from RFC 5280 Appendix A (ub-*), in characters. Many CAs (AD CS among them) refuse
// longer values, and a refusal after the device signed costs the user a day, so check up front.
const (
	maxCommonName   = 64
	maxOrganization = 64
	maxOrgUnit      = 64
	maxLocality     = 128
	maxProvince     = 128
)

// checkText refuses values that are not plain, printable Unicode text. Control characters (newline,
// NUL, DEL, C1) can split log lines and DN strings in other tools; bidirectional overrides make a
// value display differently from what it is.
func checkText(v string) error {
	if !utf8.ValidString(v) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return fmt.Errorf("contains control character %U", r)
		}
		if isBidiControl(r) {
			return fmt.Errorf("contains bidirectional control character %U", r)
		}
	}
	return nil
}

func isBidiControl(r rune) bool {
	return r == '\u200e' || r == '\u200f' || (r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069')
}

func isASCII(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// fieldError names the profile field and quotes the offending value.
func fieldError(field, value string, err error) error {
	return &FieldError{Field: field, Err: fmt.Errorf("%q: %w", value, err)}
}

// checkSubjectValue checks one subject attribute value; empty values are the caller's business.
func checkSubjectValue(value string, maxLen int) error {
	if err := checkText(value); err != nil {
		return err
	}
	if n := utf8.RuneCountInString(value); n > maxLen {
		return fmt.Errorf("%d characters, at most %d allowed", n, maxLen)
	}
	return nil
}

// checkCountry wants an ISO 3166 alpha-2 code, which is what X.520 countryName allows.
func checkCountry(value string) error {
	if len(value) != 2 || value[0] < 'A' || value[0] > 'Z' || value[1] < 'A' || value[1] > 'Z' {
		return errors.New("must be a two-letter upper-case ISO 3166 country code")
	}
	return nil
}

// checkDNSName accepts a host name in LDH form: ASCII letters, digits and hyphens in dot-separated
// labels, no trailing dot, optionally a whole-label wildcard on the left ("*.example.com").
// Internationalized names must already be in A-label (punycode) form: dNSName is an IA5String.
func checkDNSName(v string) error {
	if rest, ok := strings.CutPrefix(v, "*."); ok {
		return checkHostname(rest)
	}
	return checkHostname(v)
}

// checkHostname is checkDNSName without wildcards.
func checkHostname(v string) error {
	if v == "" {
		return errors.New("empty DNS name")
	}
	if !isASCII(v) {
		return errors.New("DNS name must be ASCII (use the punycode A-label form)")
	}
	if len(v) > 253 {
		return errors.New("DNS name longer than 253 characters")
	}
	for _, label := range strings.Split(v, ".") {
		if label == "" {
			return errors.New("DNS name has an empty label")
		}
		if len(label) > 63 {
			return fmt.Errorf("DNS label %q longer than 63 characters", label)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("DNS label %q starts or ends with a hyphen", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("DNS label %q contains %q", label, c)
			}
		}
	}
	return nil
}

// isAtext reports whether c may appear in an RFC 5321 Atom (atext, RFC 5322 section 3.2.3).
func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+/=?^_`{|}~-", c) >= 0
}

// Limits of an RFC 5321 Mailbox (section 4.5.3.1): a local part of at most 64 octets, and 254 in
// all (a path is at most 256 octets with its angle brackets).
const (
	maxEmailLocal = 64
	maxEmail      = 254
)

// checkEmail accepts what an RFC 5280 rfc822Name holds: an RFC 5321 Mailbox in ASCII. The local
// part is a Dot-string (john.doe+tag) or a Quoted-string ("john doe", "a@b", "\"q\"", in which
// a backslash escapes the next character); the domain is an LDH host name. The value is kept
// exactly as written, quotes and backslashes included: it is data in an IA5String of its own,
// so nothing is escaped.
//
// Refused, each with its reason: characters outside ASCII (the rfc822Name is an IA5String; an
// SMTPUTF8 address would need RFC 8398's SmtpUTF8Mailbox, which is not supported, and a domain
// must be in its A-label form), control characters, an unbalanced quote, a backslash or quote
// outside a quoted local part, an empty local part (quoted or not), an address literal
// (user@[192.0.2.1]: no ChromeOS user has one, and e-mail name constraints cannot match it),
// and more than 64 octets of local part or 254 in all.
func checkEmail(v string) error {
	if v == "" {
		return errors.New("empty e-mail address")
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c >= utf8.RuneSelf:
			return errors.New("e-mail address must be ASCII: rfc822Name cannot carry internationalized addresses (give the domain in its punycode A-label form)")
		case c < ' ' || c == 0x7f:
			return fmt.Errorf("e-mail address contains control character %U", rune(c))
		}
	}
	if len(v) > maxEmail {
		return fmt.Errorf("e-mail address longer than %d characters", maxEmail)
	}
	local, domain, err := splitMailbox(v)
	if err != nil {
		return err
	}
	if len(local) > maxEmailLocal {
		return fmt.Errorf("e-mail local part longer than %d characters", maxEmailLocal)
	}
	if strings.HasPrefix(domain, "[") {
		return errors.New("e-mail domain: address literals such as [192.0.2.1] are not accepted; use a host name")
	}
	if err := checkHostname(domain); err != nil {
		return fmt.Errorf("e-mail domain: %w", err)
	}
	return nil
}

// splitMailbox splits an ASCII address without control characters into its local part, as
// written, and its domain, checking the local part's syntax. A quoted local part ends at its
// closing quote, which must be followed by the @; an unquoted one at the last @, since neither a
// Dot-string nor a domain contains one.
func splitMailbox(v string) (local, domain string, err error) {
	if v[0] == '"' {
		end := -1
	scan:
		for i := 1; i < len(v); i++ {
			switch v[i] {
			case '\\':
				i++ // quoted-pairSMTP: a backslash and any printable character or space
			case '"':
				end = i
				break scan
			}
		}
		switch {
		case end < 0:
			return "", "", errors.New("e-mail local part has an unbalanced quote")
		case end == 1:
			return "", "", errors.New("e-mail address has an empty local part")
		case end+1 == len(v):
			return "", "", errors.New("e-mail address has no @")
		case v[end+1] != '@':
			return "", "", errors.New("e-mail local part has text after its closing quote: quote the whole local part")
		}
		return v[:end+1], v[end+2:], nil
	}
	at := strings.LastIndexByte(v, '@')
	if at < 0 {
		return "", "", errors.New("e-mail address has no @")
	}
	local, domain = v[:at], v[at+1:]
	if local == "" {
		return "", "", errors.New("e-mail address has an empty local part")
	}
	for _, atom := range strings.Split(local, ".") {
		if atom == "" {
			return "", "", errors.New("e-mail local part has an empty dot-separated part")
		}
		for i := 0; i < len(atom); i++ {
			if !isAtext(atom[i]) {
				return "", "", fmt.Errorf("e-mail local part contains %q: only a quoted local part (\"john doe\"@example.com) may hold it", atom[i])
			}
		}
	}
	return local, domain, nil
}

// checkURI accepts an absolute URI of printable ASCII (uniformResourceIdentifier is an IA5String)
// whose host, if any, crypto/x509 can parse back.
func checkURI(v string) (*url.URL, error) {
	if v == "" {
		return nil, errors.New("empty URI")
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return nil, fmt.Errorf("URI contains %q: only printable ASCII without spaces is allowed (percent-encode the rest)", v[i])
		}
	}
	u, err := url.Parse(v)
	if err != nil {
		return nil, fmt.Errorf("invalid URI: %w", err)
	}
	if u.Scheme == "" {
		return nil, errors.New("URI has no scheme (want an absolute URI such as urn:… or https://…)")
	}
	if h := u.Host; h != "" && (strings.HasSuffix(h, ".") || strings.HasPrefix(h, ".") || strings.Contains(h, "..")) {
		return nil, errors.New("URI host has an empty label")
	}
	if s := u.String(); s != v {
		return nil, fmt.Errorf("URI is not in canonical form (would be encoded as %q)", s)
	}
	return u, nil
}

// checkUPN accepts user@domain without whitespace. A UPN is a UTF8String, so non-ASCII is allowed.
func checkUPN(v string) error {
	if v == "" {
		return errors.New("empty user principal name")
	}
	if err := checkText(v); err != nil {
		return err
	}
	if strings.ContainsFunc(v, unicode.IsSpace) {
		return errors.New("user principal name contains whitespace")
	}
	at := strings.LastIndexByte(v, '@')
	if at <= 0 || at == len(v)-1 {
		return errors.New("user principal name must look like user@domain")
	}
	return nil
}

// fieldNames says how to name each part of a Request in errors, so that an error points at the
// configuration key the operator wrote.
type fieldNames struct {
	commonName, organization, organizationalUnit, locality, province, country string
	dns, email, uri, upn                                                      string
	// indexed reports whether organization is a list (adapter profiles) or a single value
	// (scepProfile); organizationalUnit is a list in both.
	indexedOrganization bool
}

var requestFields = fieldNames{
	commonName: "subject.commonName", organization: "subject.organization",
	organizationalUnit: "subject.organizationalUnit", locality: "subject.locality",
	province: "subject.province", country: "subject.country",
	dns: "dnsNames", email: "emailAddresses", uri: "uris", upn: "upns",
	indexedOrganization: true,
}

// check runs every value check on r and returns all problems joined. URIs are checked through
// their String form, which is what gets encoded.
func (r *Request) check(names fieldNames) error {
	var errs []error
	add := func(field, value string, err error) {
		if err != nil {
			errs = append(errs, fieldError(field, value, err))
		}
	}
	s := r.Subject
	if s.CommonName != "" {
		add(names.commonName, s.CommonName, checkSubjectValue(s.CommonName, maxCommonName))
	}
	for i, v := range s.Organization {
		field := names.organization
		if names.indexedOrganization || len(s.Organization) > 1 {
			field = fmt.Sprintf("%s[%d]", field, i)
		}
		add(field, v, nonEmpty(v, checkSubjectValue(v, maxOrganization)))
	}
	for i, v := range s.OrganizationalUnit {
		add(fmt.Sprintf("%s[%d]", names.organizationalUnit, i), v, nonEmpty(v, checkSubjectValue(v, maxOrgUnit)))
	}
	for i, v := range s.Locality {
		add(indexed(names.locality, i, len(s.Locality)), v, nonEmpty(v, checkSubjectValue(v, maxLocality)))
	}
	for i, v := range s.Province {
		add(indexed(names.province, i, len(s.Province)), v, nonEmpty(v, checkSubjectValue(v, maxProvince)))
	}
	for i, v := range s.Country {
		add(indexed(names.country, i, len(s.Country)), v, checkCountry(v))
	}
	if len(s.StreetAddress)+len(s.PostalCode)+len(s.ExtraNames) > 0 || s.SerialNumber != "" {
		errs = append(errs, errors.New("subject: only commonName, organization, organizationalUnit, locality, province and country are supported"))
	}
	for i, v := range r.DNSNames {
		add(fmt.Sprintf("%s[%d]", names.dns, i), v, checkDNSName(v))
	}
	for i, v := range r.EmailAddresses {
		add(fmt.Sprintf("%s[%d]", names.email, i), v, checkEmail(v))
	}
	for i, u := range r.URIs {
		field := fmt.Sprintf("%s[%d]", names.uri, i)
		if u == nil {
			errs = append(errs, fmt.Errorf("%s: nil URI", field))
			continue
		}
		_, err := checkURI(u.String())
		add(field, u.String(), err)
	}
	for i, v := range r.UPNs {
		add(fmt.Sprintf("%s[%d]", names.upn, i), v, checkUPN(v))
	}
	if s.CommonName == "" && !r.hasSANs() {
		errs = append(errs, fmt.Errorf("%s: empty and no subject alternative names: the certificate would name nobody", names.commonName))
	}
	if r.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		errs = append(errs, errors.New("keyUsage: keyCertSign and cRLSign are for CA certificates, not device certificates"))
	}
	return errors.Join(errs...)
}

func nonEmpty(v string, err error) error {
	if v == "" {
		return errors.New("empty value")
	}
	return err
}

func indexed(field string, i, n int) string {
	if n == 1 {
		return field
	}
	return fmt.Sprintf("%s[%d]", field, i)
}

var scepFields = fieldNames{
	commonName: "scepProfile.subjectCommonName", organization: "scepProfile.organization",
	organizationalUnit: "scepProfile.organizationalUnits", locality: "scepProfile.locality",
	province: "scepProfile.state", country: "scepProfile.country",
	dns: "scepProfile.subjectAltNames", email: "scepProfile.subjectAltNames",
	uri: "scepProfile.subjectAltNames", upn: "scepProfile.subjectAltNames",
}

// FromSCEPProfile turns the subject a scepProfile process carries into a Request. The profile is
// data from the Admin console, so it gets the same value checks as rendered templates; errors name
// the scepProfile field (subjectAltNames by their index in the profile).
func FromSCEPProfile(sp *process.SCEPProfile) (*Request, error) {
	if sp == nil {
		return nil, errors.New("scepProfile: missing")
	}
	req := &Request{TemplateName: sp.TemplateName}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	req.Subject.CommonName = sp.CommonName
	if sp.Organization != "" {
		req.Subject.Organization = []string{sp.Organization}
	}
	req.Subject.OrganizationalUnit = append([]string(nil), sp.OrganizationalUnits...)
	if sp.Locality != "" {
		req.Subject.Locality = []string{sp.Locality}
	}
	if sp.State != "" {
		req.Subject.Province = []string{sp.State}
	}
	if sp.Country != "" {
		req.Subject.Country = []string{sp.Country}
	}
	for i, san := range sp.SANs {
		field := fmt.Sprintf("scepProfile.subjectAltNames[%d]", i)
		switch san.Type {
		case process.SANEmail:
			if err := checkEmail(san.Value); err != nil {
				add(fieldError(field, san.Value, err))
				continue
			}
			req.EmailAddresses = append(req.EmailAddresses, san.Value)
		case process.SANDNS:
			if err := checkDNSName(san.Value); err != nil {
				add(fieldError(field, san.Value, err))
				continue
			}
			req.DNSNames = append(req.DNSNames, san.Value)
		case process.SANUPN:
			if err := checkUPN(san.Value); err != nil {
				add(fieldError(field, san.Value, err))
				continue
			}
			req.UPNs = append(req.UPNs, san.Value)
		case process.SANURI:
			u, err := checkURI(san.Value)
			if err != nil {
				add(fieldError(field, san.Value, err))
				continue
			}
			req.URIs = append(req.URIs, u)
		default:
			add(fmt.Errorf("%s: unsupported subject alternative name type %q", field, san.Type))
		}
	}
	for i, ku := range sp.KeyUsages {
		switch ku {
		case process.KeyUsageSigning:
			req.KeyUsage |= x509.KeyUsageDigitalSignature
		case process.KeyUsageKeyEncipherment:
			req.KeyUsage |= x509.KeyUsageKeyEncipherment
		default:
			add(fmt.Errorf("scepProfile.keyUsages[%d]: unsupported key usage %q", i, ku))
		}
	}
	// SANs were checked above, so that errors carry their index in the profile; this checks the
	// subject and that the request names somebody (valid SANs pass again).
	add(req.check(scepFields))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return req, nil
}

// Attribute is a PKCS#10 attribute (RFC 2986) inside the CertificationRequestInfo, such as a
// SCEP challenge password (ChallengePassword); a connector asks for it through
// ca.AttributeContributor.
type Attribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue
}
