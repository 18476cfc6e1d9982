// Package leafcheck is the adapter's one check of a certificate a CA connector returned, before
// anybody receives it: the leaf carries the requested key byte for byte, is valid now, is not a
// CA, chains to the roots its CA connection knows (ca.Issued.Roots) through the chain the
// connector returned, and carries the subject alternative names and extended key usages the
// request asked for. The provisioning engine runs it on every issuance. It needs nothing the
// Verified Access enrollment path lacks (without a CSR, names and usages are simply not
// compared), so that path can apply the same rules.
//
// A CA that drops or adds names or usages is common (CA templates rewrite requests), so a
// difference is reported as a Mismatch for the caller to log, and refused only when the caller
// asks for strictness. Everything else is an *Error, classified permanent: the same answer
// cannot become usable by asking again, and asking again would issue a second certificate.
package leafcheck

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/csr"
)

// Rule names the rule a certificate broke, as a metric label and in logs.
type Rule string

// The rules Check enforces, in the order it checks them.
const (
	RuleMissing  Rule = "missing"  // no certificate at all
	RuleKey      Rule = "key"      // not for the requested key, byte for byte
	RuleValidity Rule = "validity" // not yet valid (beyond ca.MaxClockSkew) or expired
	RuleCA       Rule = "ca"       // a CA certificate instead of a leaf
	RuleChain    Rule = "chain"    // does not chain to the connection's roots
	RuleContents Rule = "contents" // names or usages differ from the request, under Strict
)

// Error is a certificate that must not be used; Error() is a sentence fit for the user's failure
// message ("it expired at …"), naming no secret.
type Error struct {
	Rule Rule
	msg  string
	err  error // the crypto/x509 verification error, for RuleChain
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

// RuleOf returns the rule err reports, or "" when err is not from Check.
func RuleOf(err error) Rule {
	var e *Error
	if errors.As(err, &e) {
		return e.Rule
	}
	return ""
}

func refuse(rule Rule, err error, format string, args ...any) error {
	return ca.Permanent(&Error{Rule: rule, msg: fmt.Sprintf(format, args...), err: err})
}

// Expectations are what a certificate issued for one request must satisfy.
type Expectations struct {
	// SPKI is the DER SubjectPublicKeyInfo the certificate must carry, byte for byte: ChromeOS
	// compares the bytes, not the key.
	SPKI []byte
	// Now is when the certificate must be valid; zero means time.Now().
	Now time.Time
	// CSR is the request the CA was sent. When set, the certificate must carry exactly its
	// subject alternative names (DNS, e-mail, URI, IP, UPN) and, unless CAChoosesUsages, exactly
	// its extended key usages; nil compares neither.
	CSR *x509.CertificateRequest
	// CAChoosesUsages leaves the extended key usages to the CA: for requests that cannot state
	// any (a SCEP profile from the Admin console has key usages but no extended ones), where the
	// CA's template decides and a comparison would only ever report that.
	CAChoosesUsages bool
	// Strict refuses a certificate with mismatches (RuleContents); otherwise they are returned
	// for the caller to report, and the certificate is usable.
	Strict bool
}

// The Mismatch fields, named like the profile keys an operator compares them with.
const (
	FieldDNS         = "dns"
	FieldEmail       = "email"
	FieldURI         = "uri"
	FieldUPN         = "upn"
	FieldIP          = "ip"
	FieldExtKeyUsage = "extendedKeyUsage"
	// FieldIntermediateExtKeyUsage is an intermediate CA whose extended key usages do not
	// include one of the leaf's: Windows, OpenSSL and Go refuse such a leaf for that purpose
	// (usage nesting), whatever the leaf says.
	FieldIntermediateExtKeyUsage = "intermediateExtendedKeyUsage"
)

// Mismatch is one way the certificate differs from the request.
type Mismatch struct {
	Field string // one of the Field constants
	// Asked and Got are what the request asked for and what the certificate carries, sorted.
	// For FieldIntermediateExtKeyUsage, Asked are the leaf's usages and Got the intermediate's.
	Asked, Got []string
	// Intermediate is the subject of the intermediate, for FieldIntermediateExtKeyUsage.
	Intermediate string
}

// Dropped lists what was asked for but is missing; Added what the CA put in unasked. For
// FieldIntermediateExtKeyUsage, Dropped are the leaf's usages the intermediate does not allow.
func (m Mismatch) Dropped() []string { return m.missing(m.Asked, m.Got) }

// Added lists what the certificate carries although the request did not ask for it.
func (m Mismatch) Added() []string {
	if m.Field == FieldIntermediateExtKeyUsage {
		return nil
	}
	return m.missing(m.Got, m.Asked)
}

func (m Mismatch) missing(from, in []string) []string {
	have := map[string]bool{}
	for _, v := range in {
		have[normalize(m.Field, v)] = true
	}
	if (m.Field == FieldExtKeyUsage || m.Field == FieldIntermediateExtKeyUsage) && have[anyEKU] {
		// anyExtendedKeyUsage allows every purpose: nothing is missing where it is.
		return nil
	}
	var out []string
	for _, v := range from {
		if !have[normalize(m.Field, v)] {
			out = append(out, v)
		}
	}
	return out
}

func (m Mismatch) String() string {
	if m.Field == FieldIntermediateExtKeyUsage {
		return fmt.Sprintf("%s: intermediate %q allows only [%s], not the leaf's [%s]; relying parties that check usage nesting refuse it",
			m.Field, m.Intermediate, strings.Join(m.Got, " "), strings.Join(m.Dropped(), " "))
	}
	var what []string
	if d := m.Dropped(); len(d) > 0 {
		what = append(what, "dropped "+strings.Join(d, " "))
	}
	if a := m.Added(); len(a) > 0 {
		what = append(what, "added "+strings.Join(a, " "))
	}
	return fmt.Sprintf("%s: asked [%s], got [%s] (the CA %s)",
		m.Field, strings.Join(m.Asked, " "), strings.Join(m.Got, " "), strings.Join(what, " and "))
}

// Check applies every rule to issued, in order, and returns the first broken one as a permanent
// *Error. A certificate that passes may still differ from want.CSR: those differences are
// returned as mismatches, and are an error (RuleContents) only when want.Strict is set. Check
// does no I/O; it is safe for concurrent use.
func Check(issued *ca.Issued, want Expectations) ([]Mismatch, error) {
	if issued == nil || issued.Leaf == nil {
		return nil, refuse(RuleMissing, nil, "no certificate")
	}
	leaf := issued.Leaf
	now := want.Now
	if now.IsZero() {
		now = time.Now()
	}
	switch {
	case !bytes.Equal(leaf.RawSubjectPublicKeyInfo, want.SPKI):
		return nil, refuse(RuleKey, nil, "it is for a different key than the device's")
	case leaf.NotBefore.After(now.Add(ca.MaxClockSkew)):
		return nil, refuse(RuleValidity, nil, "it is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	case !leaf.NotAfter.After(now):
		return nil, refuse(RuleValidity, nil, "it expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	case leaf.IsCA:
		return nil, refuse(RuleCA, nil, "it is a CA certificate, not a leaf")
	}
	var chains [][]*x509.Certificate
	if issued.Roots != nil {
		var err error
		if chains, err = VerifyChain(leaf, issued.Chain, issued.Roots, now); err != nil {
			return nil, refuse(RuleChain, err, "it was issued by %q and does not chain to the CA certificates this CA connection trusts: %v",
				leaf.Issuer.String(), err)
		}
	}
	mismatches := compare(leaf, want)
	if m, ok := nesting(leaf, chains); ok {
		mismatches = append(mismatches, m)
	}
	if len(mismatches) > 0 && want.Strict {
		parts := make([]string, len(mismatches))
		for i, m := range mismatches {
			parts[i] = m.String()
		}
		return mismatches, refuse(RuleContents, nil, "the profile is strict and the certificate differs from the request: %s",
			strings.Join(parts, "; "))
	}
	return mismatches, nil
}

// VerifyChain verifies leaf to roots with chain as intermediates, as of now or, for a leaf whose
// notBefore lies ahead (a CA clock a little fast), as of its notBefore. It walks the chain for any
// extended key usage: which usages a leaf must have is the request's business (Check compares
// them), and asking crypto/x509 for clientAuth here would refuse every leaf made for another
// purpose, and every chain with a restricted intermediate, as untrusted rather than as what it is.
func VerifyChain(leaf *x509.Certificate, chain []*x509.Certificate, roots *x509.CertPool, now time.Time) ([][]*x509.Certificate, error) {
	intermediates := x509.NewCertPool()
	for _, c := range chain {
		if c != nil {
			intermediates.AddCert(c)
		}
	}
	at := now
	if leaf.NotBefore.After(now) {
		at = leaf.NotBefore
	}
	return leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
}

// compare lists how the leaf's names and usages differ from the request's.
func compare(leaf *x509.Certificate, want Expectations) []Mismatch {
	if want.CSR == nil {
		return nil
	}
	r := want.CSR
	type pair struct {
		field      string
		asked, got []string
	}
	pairs := []pair{
		{FieldDNS, r.DNSNames, leaf.DNSNames},
		{FieldEmail, r.EmailAddresses, leaf.EmailAddresses},
		{FieldURI, strs(r.URIs), strs(leaf.URIs)},
		{FieldIP, strs(r.IPAddresses), strs(leaf.IPAddresses)},
		{FieldUPN, upns(r.Extensions), upns(leaf.Extensions)},
	}
	if !want.CAChoosesUsages {
		pairs = append(pairs, pair{FieldExtKeyUsage, extKeyUsages(r.Extensions), extKeyUsages(leaf.Extensions)})
	}
	var out []Mismatch
	for _, p := range pairs {
		m := Mismatch{Field: p.field, Asked: sorted(p.field, p.asked), Got: sorted(p.field, p.got)}
		if len(m.Dropped())+len(m.Added()) > 0 {
			out = append(out, m)
		}
	}
	return out
}

// nesting reports an intermediate that does not allow one of the leaf's extended key usages,
// unless some verified chain allows them all (crypto/x509 may find several paths).
func nesting(leaf *x509.Certificate, chains [][]*x509.Certificate) (Mismatch, bool) {
	usages := sorted(FieldExtKeyUsage, extKeyUsages(leaf.Extensions))
	if len(chains) == 0 || len(usages) == 0 || slices.Contains(usages, anyEKU) {
		return Mismatch{}, false
	}
	var first *Mismatch
	for _, chain := range chains {
		m := restriction(usages, chain)
		if m == nil {
			return Mismatch{}, false
		}
		if first == nil {
			first = m
		}
	}
	return *first, true
}

// restriction returns the first intermediate of chain (leaf first, anchor last) whose extended
// key usages exclude one of usages. The anchor is not looked at: which usages a root is trusted
// for is the relying party's decision, not something the CA put in the certificate.
func restriction(usages []string, chain []*x509.Certificate) *Mismatch {
	if len(chain) < 3 {
		return nil // the leaf and its anchor: no intermediate
	}
	for _, c := range chain[1 : len(chain)-1] {
		allowed := extKeyUsages(c.Extensions)
		if len(allowed) == 0 {
			continue // no extension: no restriction
		}
		m := Mismatch{Field: FieldIntermediateExtKeyUsage, Asked: usages, Got: sorted(FieldExtKeyUsage, allowed),
			Intermediate: c.Subject.String()}
		if len(m.Dropped()) > 0 {
			return &m
		}
	}
	return nil
}

var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidExtKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// anyEKU is the display name of anyExtendedKeyUsage (2.5.29.37.0).
const anyEKU = "anyExtendedKeyUsage"

// ekuNames spells the extended key usages profiles name as profiles do (clientAuth, …); others
// appear as dotted OIDs, the other form profiles accept.
var ekuNames = map[string]string{
	"2.5.29.37.0":            anyEKU,
	"1.3.6.1.5.5.7.3.1":      "serverAuth",
	"1.3.6.1.5.5.7.3.2":      "clientAuth",
	"1.3.6.1.5.5.7.3.3":      "codeSigning",
	"1.3.6.1.5.5.7.3.4":      "emailProtection",
	"1.3.6.1.5.5.7.3.5":      "ipsecEndSystem",
	"1.3.6.1.5.5.7.3.6":      "ipsecTunnel",
	"1.3.6.1.5.5.7.3.7":      "ipsecUser",
	"1.3.6.1.5.5.7.3.8":      "timeStamping",
	"1.3.6.1.5.5.7.3.9":      "OCSPSigning",
	"1.3.6.1.4.1.311.20.2.2": "smartcardLogon",
}

// extKeyUsages reads the extKeyUsage extension as OIDs, so that a request that named a usage by
// OID and a certificate that crypto/x509 parsed into a constant compare equal.
func extKeyUsages(exts []pkix.Extension) []string {
	for _, e := range exts {
		if !e.Id.Equal(oidExtKeyUsage) {
			continue
		}
		var oids []asn1.ObjectIdentifier
		if rest, err := asn1.Unmarshal(e.Value, &oids); err != nil || len(rest) > 0 {
			return []string{"(unreadable extKeyUsage extension)"}
		}
		out := make([]string, len(oids))
		for i, oid := range oids {
			out[i] = oid.String()
			if name, ok := ekuNames[out[i]]; ok {
				out[i] = name
			}
		}
		return out
	}
	return nil
}

// upns reads the UPN otherNames of the subjectAltName extension, which crypto/x509 skips.
func upns(exts []pkix.Extension) []string {
	for _, e := range exts {
		if e.Id.Equal(oidSubjectAltName) {
			names, err := csr.ParseUPNs(e.Value)
			if err != nil {
				return []string{"(unreadable UPN: " + err.Error() + ")"}
			}
			return names
		}
	}
	return nil
}

func strs[S fmt.Stringer](in []S) []string {
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = v.String()
	}
	return out
}

// normalize is the form two names are compared in: DNS names and UPNs without regard to case
// (both are case-insensitive where they are used), e-mail addresses with the domain in lower
// case (RFC 5321 leaves the local part's case to the receiving host).
func normalize(field, v string) string {
	switch field {
	case FieldDNS:
		return strings.TrimSuffix(strings.ToLower(v), ".")
	case FieldUPN:
		return strings.ToLower(v)
	case FieldEmail:
		if i := strings.LastIndexByte(v, '@'); i >= 0 {
			return v[:i] + strings.ToLower(v[i:])
		}
	}
	return v
}

// sorted returns the distinct values of in, in order.
func sorted(field string, in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range in {
		if k := normalize(field, v); !seen[k] {
			seen[k] = true
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}
