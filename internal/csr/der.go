package csr

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/certprov/certprov-adapter/internal/process"
)

// Object identifiers used in requests. Functions rather than package variables, so that no caller
// can modify them.
func oidExtensionRequest() asn1.ObjectIdentifier {
	return asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
}
func oidChallengePassword() asn1.ObjectIdentifier {
	return asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
}
func oidSubjectAltName() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{2, 5, 29, 17} }
func oidKeyUsage() asn1.ObjectIdentifier       { return asn1.ObjectIdentifier{2, 5, 29, 15} }
func oidExtKeyUsage() asn1.ObjectIdentifier    { return asn1.ObjectIdentifier{2, 5, 29, 37} }

// OIDUPN is the otherName type of a Microsoft user principal name (szOID_NT_PRINCIPAL_NAME).
func OIDUPN() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3} }

func oidSHA256WithRSA() asn1.ObjectIdentifier {
	return asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
}
func oidECDSAWithSHA256() asn1.ObjectIdentifier {
	return asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
}

// minRSABits is the smallest device RSA key accepted; ChromeOS keys are RSA-2048.
const minRSABits = 2048

// AlgorithmFor picks the signData algorithm for a device key. The device refuses an algorithm that
// does not match its key, so this is decided by the SPKI alone: RSA (2048 bits or more) signs with
// PKCS#1 v1.5 and SHA-256, EC P-256 with ECDSA and SHA-256; other keys cannot be provisioned.
func AlgorithmFor(spki []byte) (string, error) {
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return "", fmt.Errorf("parse subject public key info: %w", err)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits {
			return "", fmt.Errorf("RSA key of %d bits: at least %d required", n, minRSABits)
		}
		return process.AlgorithmRSAPKCS1SHA256, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("EC key on curve %s: only P-256 is supported", k.Curve.Params().Name)
		}
		return process.AlgorithmECDSASHA256, nil
	default:
		return "", fmt.Errorf("unsupported device key type %T: want RSA or EC P-256", pub)
	}
}

// ChallengePassword builds the PKCS#9 challengePassword attribute (a DirectoryString:
// PrintableString when the password allows it, else UTF8String), as SCEP expects it in the
// signed request.
func ChallengePassword(password string) (Attribute, error) {
	if password == "" {
		return Attribute{}, errors.New("challenge password: empty")
	}
	der, err := asn1.Marshal(password)
	if err != nil {
		return Attribute{}, fmt.Errorf("challenge password: %w", err)
	}
	return Attribute{Type: oidChallengePassword(), Values: []asn1.RawValue{{FullBytes: der}}}, nil
}

// pkcs10Attribute is Attribute ::= SEQUENCE { type OID, values SET OF ANY } (RFC 2986).
type pkcs10Attribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue `asn1:"set"`
}

// certificationRequestInfo keeps subject, SPKI and attributes as raw DER, so that the device SPKI
// goes into the request byte for byte, however it was encoded.
type certificationRequestInfo struct {
	Version    int
	Subject    asn1.RawValue
	SPKI       asn1.RawValue
	Attributes asn1.RawValue // [0] IMPLICIT SET OF Attribute
}

// BuildCRI encodes the PKCS#10 CertificationRequestInfo the device is asked to sign. The SPKI is
// copied verbatim (the device compares it byte for byte later). Subject attributes are encoded one
// per RDN from the Request fields, never parsed from a DN string; the SANs (including UPN
// otherNames), key usage (critical) and extended key usage go into an extensionRequest attribute,
// followed by req.Attributes.
//
// The request is encoded here rather than by x509.CreateCertificateRequest because that function
// needs a working signer (it verifies the signature it gets back) and re-encodes the public key.
func BuildCRI(req *Request, spki []byte) ([]byte, error) {
	if req == nil {
		return nil, errors.New("build certification request info: no request")
	}
	if _, err := AlgorithmFor(spki); err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	if err := req.check(requestFields); err != nil {
		return nil, err
	}
	subject, err := asn1.Marshal(req.Subject.ToRDNSequence())
	if err != nil {
		return nil, fmt.Errorf("encode subject: %w", err)
	}
	exts, err := extensions(req)
	if err != nil {
		return nil, err
	}
	var attrs [][]byte
	if len(exts) > 0 {
		extsDER, err := asn1.Marshal(exts)
		if err != nil {
			return nil, fmt.Errorf("encode extensions: %w", err)
		}
		der, err := asn1.Marshal(pkcs10Attribute{Type: oidExtensionRequest(), Values: []asn1.RawValue{{FullBytes: extsDER}}})
		if err != nil {
			return nil, fmt.Errorf("encode extensionRequest: %w", err)
		}
		attrs = append(attrs, der)
	}
	seen := []asn1.ObjectIdentifier{oidExtensionRequest()}
	for i, a := range req.Attributes {
		if len(a.Type) == 0 {
			return nil, fmt.Errorf("attributes[%d]: no type", i)
		}
		if slices.ContainsFunc(seen, a.Type.Equal) {
			return nil, fmt.Errorf("attributes[%d]: %v given twice (or built from the profile)", i, a.Type)
		}
		seen = append(seen, a.Type)
		if len(a.Values) == 0 {
			return nil, fmt.Errorf("attributes[%d] %v: no values", i, a.Type)
		}
		for j, v := range a.Values {
			if len(v.FullBytes) == 0 {
				continue
			}
			var one asn1.RawValue
			if rest, err := asn1.Unmarshal(v.FullBytes, &one); err != nil || len(rest) > 0 {
				return nil, fmt.Errorf("attributes[%d] %v value %d: not one DER element", i, a.Type, j)
			}
		}
		der, err := asn1.Marshal(pkcs10Attribute(a))
		if err != nil {
			return nil, fmt.Errorf("encode attributes[%d] %v: %w", i, a.Type, err)
		}
		attrs = append(attrs, der)
	}
	// DER wants the members of a SET OF in ascending order of their encodings.
	slices.SortFunc(attrs, bytes.Compare)
	cri := certificationRequestInfo{
		Subject:    asn1.RawValue{FullBytes: subject},
		SPKI:       asn1.RawValue{FullBytes: spki},
		Attributes: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: bytes.Join(attrs, nil)},
	}
	der, err := asn1.Marshal(cri)
	if err != nil {
		return nil, fmt.Errorf("encode certification request info: %w", err)
	}
	return der, nil
}

// extensions builds the requested extensions in the order crypto/x509 would: SAN, key usage,
// extended key usage.
func extensions(req *Request) ([]pkix.Extension, error) {
	var exts []pkix.Extension
	if req.hasSANs() {
		value, err := marshalSANs(req)
		if err != nil {
			return nil, err
		}
		// RFC 5280 4.2.1.6: with an empty subject, the SAN extension must be critical.
		critical := len(req.Subject.ToRDNSequence()) == 0
		exts = append(exts, pkix.Extension{Id: oidSubjectAltName(), Critical: critical, Value: value})
	}
	if req.KeyUsage != 0 {
		value, err := marshalKeyUsage(req.KeyUsage)
		if err != nil {
			return nil, err
		}
		exts = append(exts, pkix.Extension{Id: oidKeyUsage(), Critical: true, Value: value})
	}
	if len(req.ExtKeyUsage)+len(req.UnknownExtKeyUsage) > 0 {
		var oids []asn1.ObjectIdentifier
		for _, u := range req.ExtKeyUsage {
			oid, ok := extKeyUsageOID(u)
			if !ok {
				return nil, fmt.Errorf("extended key usage %d: unknown", u)
			}
			oids = append(oids, oid)
		}
		oids = append(oids, req.UnknownExtKeyUsage...)
		value, err := asn1.Marshal(oids)
		if err != nil {
			return nil, fmt.Errorf("encode extended key usage: %w", err)
		}
		exts = append(exts, pkix.Extension{Id: oidExtKeyUsage(), Value: value})
	}
	return exts, nil
}

// GeneralName tags (RFC 5280 4.2.1.6).
const (
	tagOtherName = 0
	tagRFC822    = 1
	tagDNS       = 2
	tagURI       = 6
)

func marshalSANs(req *Request) ([]byte, error) {
	var names []asn1.RawValue
	ia5 := func(tag int, v string) asn1.RawValue {
		return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, Bytes: []byte(v)}
	}
	for _, v := range req.DNSNames {
		names = append(names, ia5(tagDNS, v))
	}
	for _, v := range req.EmailAddresses {
		names = append(names, ia5(tagRFC822, v))
	}
	for _, u := range req.URIs {
		names = append(names, ia5(tagURI, u.String()))
	}
	for _, v := range req.UPNs {
		upn, err := marshalUPN(v)
		if err != nil {
			return nil, err
		}
		names = append(names, upn)
	}
	der, err := asn1.Marshal(names)
	if err != nil {
		return nil, fmt.Errorf("encode subject alternative names: %w", err)
	}
	return der, nil
}

// marshalUPN encodes otherName ::= [0] IMPLICIT SEQUENCE { type-id OID, value [0] EXPLICIT
// UTF8String }, which crypto/x509 cannot produce.
func marshalUPN(v string) (asn1.RawValue, error) {
	typeID, err := asn1.Marshal(OIDUPN())
	if err != nil {
		return asn1.RawValue{}, fmt.Errorf("encode UPN type: %w", err)
	}
	str, err := asn1.MarshalWithParams(v, "utf8")
	if err != nil {
		return asn1.RawValue{}, fmt.Errorf("encode UPN %q: %w", v, err)
	}
	value, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: str})
	if err != nil {
		return asn1.RawValue{}, fmt.Errorf("encode UPN %q: %w", v, err)
	}
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tagOtherName, IsCompound: true, Bytes: append(typeID, value...)}, nil
}

// ParseUPNs returns the UPN otherNames of a subjectAltName extension value, which crypto/x509
// skips when it parses SANs. CA connectors and tests use it to see what a request asks for.
func ParseUPNs(sanValue []byte) ([]string, error) {
	var names []asn1.RawValue
	rest, err := asn1.Unmarshal(sanValue, &names)
	if err != nil {
		return nil, fmt.Errorf("parse subject alternative names: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("parse subject alternative names: trailing data")
	}
	var upns []string
	for _, n := range names {
		if n.Class != asn1.ClassContextSpecific || n.Tag != tagOtherName {
			continue
		}
		var on struct {
			TypeID asn1.ObjectIdentifier
			Value  asn1.RawValue // [0] EXPLICIT wrapper around the UTF8String
		}
		// The GeneralName's implicit [0] replaces the SEQUENCE tag; put it back to parse.
		seq, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: n.Bytes})
		if err != nil {
			return nil, fmt.Errorf("parse otherName: %w", err)
		}
		if rest, err := asn1.Unmarshal(seq, &on); err != nil || len(rest) > 0 {
			return nil, fmt.Errorf("parse otherName: malformed")
		}
		if !on.TypeID.Equal(OIDUPN()) {
			continue
		}
		if on.Value.Class != asn1.ClassContextSpecific || on.Value.Tag != 0 || !on.Value.IsCompound {
			return nil, errors.New("parse UPN otherName: value is not [0] EXPLICIT")
		}
		var s string
		if rest, err := asn1.UnmarshalWithParams(on.Value.Bytes, &s, "utf8"); err != nil || len(rest) > 0 {
			return nil, fmt.Errorf("parse UPN otherName: value is not a UTF8String")
		}
		upns = append(upns, s)
	}
	return upns, nil
}

// marshalKeyUsage encodes the KeyUsage BIT STRING with bit 0 (digitalSignature) first and no
// trailing zero bits, as DER requires for named bit lists.
func marshalKeyUsage(ku x509.KeyUsage) ([]byte, error) {
	var b [2]byte
	for bit := 0; bit < 9; bit++ {
		if ku&(1<<bit) != 0 {
			b[bit/8] |= 0x80 >> (bit % 8)
		}
	}
	if ku>>9 != 0 {
		return nil, fmt.Errorf("encode key usage: unknown bits %#x", uint(ku>>9))
	}
	n := 1
	if b[1] != 0 {
		n = 2
	}
	bitLength := n * 8
	for bitLength > 0 && b[(bitLength-1)/8]&(0x80>>((bitLength-1)%8)) == 0 {
		bitLength--
	}
	der, err := asn1.Marshal(asn1.BitString{Bytes: b[:n], BitLength: bitLength})
	if err != nil {
		return nil, fmt.Errorf("encode key usage: %w", err)
	}
	return der, nil
}

// extKeyUsageOID maps crypto/x509's extended key usages back to their OIDs (RFC 5280 4.2.1.12 and
// vendor arcs), since crypto/x509 keeps that table private.
func extKeyUsageOID(u x509.ExtKeyUsage) (asn1.ObjectIdentifier, bool) {
	kp := func(n int) asn1.ObjectIdentifier { return asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, n} }
	switch u {
	case x509.ExtKeyUsageAny:
		return asn1.ObjectIdentifier{2, 5, 29, 37, 0}, true
	case x509.ExtKeyUsageServerAuth:
		return kp(1), true
	case x509.ExtKeyUsageClientAuth:
		return kp(2), true
	case x509.ExtKeyUsageCodeSigning:
		return kp(3), true
	case x509.ExtKeyUsageEmailProtection:
		return kp(4), true
	case x509.ExtKeyUsageIPSECEndSystem:
		return kp(5), true
	case x509.ExtKeyUsageIPSECTunnel:
		return kp(6), true
	case x509.ExtKeyUsageIPSECUser:
		return kp(7), true
	case x509.ExtKeyUsageTimeStamping:
		return kp(8), true
	case x509.ExtKeyUsageOCSPSigning:
		return kp(9), true
	case x509.ExtKeyUsageMicrosoftServerGatedCrypto:
		return asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 10, 3, 3}, true
	case x509.ExtKeyUsageNetscapeServerGatedCrypto:
		return asn1.ObjectIdentifier{2, 16, 840, 1, 113730, 4, 1}, true
	case x509.ExtKeyUsageMicrosoftCommercialCodeSigning:
		return asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 1, 22}, true
	case x509.ExtKeyUsageMicrosoftKernelCodeSigning:
		return asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 61, 1, 1}, true
	}
	return nil, false
}

// parseCRI splits a CertificationRequestInfo and checks its outer shape.
func parseCRI(cri []byte) (*certificationRequestInfo, error) {
	var info certificationRequestInfo
	rest, err := asn1.Unmarshal(cri, &info)
	if err != nil {
		return nil, fmt.Errorf("parse certification request info: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("parse certification request info: trailing data")
	}
	if info.Version != 0 {
		return nil, fmt.Errorf("certification request info: version %d, want 0 (v1)", info.Version)
	}
	if info.Attributes.Class != asn1.ClassContextSpecific || info.Attributes.Tag != 0 || !info.Attributes.IsCompound {
		return nil, errors.New("certification request info: attributes are not [0] IMPLICIT SET OF")
	}
	return &info, nil
}

// certificationRequest is CertificationRequest ::= SEQUENCE { info, algorithm, signature }.
type certificationRequest struct {
	Info      asn1.RawValue
	Algorithm pkix.AlgorithmIdentifier
	Signature asn1.BitString
}

// Assemble wraps the signed CertificationRequestInfo and the device's signature into a CSR (DER).
// algorithm must be the one AlgorithmFor gives for the SPKI inside cri. ECDSA signatures may come
// as DER SEQUENCE{r,s} or as raw 64-byte r||s; both are re-encoded as canonical DER. A DER parse is
// tried first; a raw r||s that happens to parse as DER is astronomically unlikely.
func Assemble(cri []byte, algorithm string, signature []byte) ([]byte, error) {
	info, err := parseCRI(cri)
	if err != nil {
		return nil, err
	}
	want, err := AlgorithmFor(info.SPKI.FullBytes)
	if err != nil {
		return nil, fmt.Errorf("certification request info: %w", err)
	}
	if algorithm != want {
		return nil, fmt.Errorf("signature algorithm %q does not match the device key (want %q)", algorithm, want)
	}
	if len(signature) == 0 {
		return nil, errors.New("empty signature")
	}
	var alg pkix.AlgorithmIdentifier
	switch algorithm {
	case process.AlgorithmRSAPKCS1SHA256:
		// RFC 4055 2.1: the parameters of sha256WithRSAEncryption are an explicit NULL.
		alg = pkix.AlgorithmIdentifier{Algorithm: oidSHA256WithRSA(), Parameters: asn1.NullRawValue}
		pub, err := x509.ParsePKIXPublicKey(info.SPKI.FullBytes)
		if err != nil {
			return nil, fmt.Errorf("certification request info: %w", err)
		}
		if size := pub.(*rsa.PublicKey).Size(); len(signature) != size {
			return nil, fmt.Errorf("RSA signature of %d bytes, want %d", len(signature), size)
		}
	case process.AlgorithmECDSASHA256:
		// RFC 5758 3.2: ecdsa-with-SHA256 has no parameters.
		alg = pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256()}
		signature, err = ECDSASignatureDER(signature)
		if err != nil {
			return nil, err
		}
	}
	der, err := asn1.Marshal(certificationRequest{
		Info:      asn1.RawValue{FullBytes: cri},
		Algorithm: alg,
		Signature: asn1.BitString{Bytes: signature, BitLength: 8 * len(signature)},
	})
	if err != nil {
		return nil, fmt.Errorf("encode certification request: %w", err)
	}
	return der, nil
}

// p256Order bounds ECDSA P-256 signature values.
func p256Order() *big.Int { return elliptic.P256().Params().N }

// ECDSASignatureDER normalises an ECDSA P-256 signature, DER SEQUENCE{r,s} or raw 64-byte r||s
// (what a TPM returns), to canonical DER. A DER parse is tried first.
func ECDSASignatureDER(sig []byte) ([]byte, error) {
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(sig, &rs)
	switch {
	case err == nil && len(rest) == 0:
	case len(sig) == 64:
		rs.R = new(big.Int).SetBytes(sig[:32])
		rs.S = new(big.Int).SetBytes(sig[32:])
	default:
		return nil, fmt.Errorf("ECDSA signature of %d bytes is neither DER SEQUENCE{r,s} nor raw 64-byte r||s", len(sig))
	}
	n := p256Order()
	if rs.R.Sign() <= 0 || rs.S.Sign() <= 0 || rs.R.Cmp(n) >= 0 || rs.S.Cmp(n) >= 0 {
		return nil, errors.New("ECDSA signature values out of range")
	}
	der, err := asn1.Marshal(rs)
	if err != nil {
		return nil, fmt.Errorf("encode ECDSA signature: %w", err)
	}
	return der, nil
}

// Verify parses a CSR and checks that it is what the device was asked for: the public key is the
// device key byte for byte, the algorithm is one a device uses, and the signature verifies.
// Nothing goes to a CA before this passes.
func Verify(csrDER, spki []byte) (*x509.CertificateRequest, error) {
	req, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("parse CSR: %w", err)
	}
	if !bytes.Equal(req.RawSubjectPublicKeyInfo, spki) {
		return nil, errors.New("CSR public key is not the device key (SubjectPublicKeyInfo differs)")
	}
	switch req.SignatureAlgorithm {
	case x509.SHA256WithRSA, x509.ECDSAWithSHA256:
	default:
		return nil, fmt.Errorf("CSR signature algorithm %v: want SHA256-RSA or ECDSA-SHA256", req.SignatureAlgorithm)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature check: %w", err)
	}
	return req, nil
}
