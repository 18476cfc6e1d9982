package scep

import (
	"encoding/asn1"
	"errors"
	"slices"
	"strings"

	"github.com/smallstep/pkcs7"
)

// caps is what a server said it supports in its GetCACaps answer (RFC 8894 §3.5.2).
type caps struct {
	keywords map[string]bool // upper-cased
}

// parseCaps reads one keyword per line; servers differ in line endings, case and stray blanks.
func parseCaps(body []byte) caps {
	c := caps{keywords: map[string]bool{}}
	for _, f := range strings.Fields(string(body)) {
		c.keywords[strings.ToUpper(f)] = true
	}
	return c
}

func (c caps) has(k string) bool { return c.keywords[k] }

// standard is RFC 8894's "SCEPStandard": it implies AES, POSTPKIOperation and SHA-256.
func (c caps) standard() bool { return c.has("SCEPSTANDARD") }

// post reports whether PKIOperation may be sent by POST; otherwise it goes base64 in a GET.
func (c caps) post() bool { return c.has("POSTPKIOPERATION") || c.standard() }

// renewal is parsed for operators (Ping logs it); the adapter never renews, since every
// provisioning process brings a new device key.
func (c caps) renewal() bool { return c.has("RENEWAL") }

// String lists the keywords, for logs.
func (c caps) String() string {
	var out []string
	for k := range c.keywords {
		out = append(out, k)
	}
	if len(out) == 0 {
		return "(none)"
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// cipherAlg is the content encryption of the request envelope.
type cipherAlg int

const (
	cipherAuto cipherAlg = iota
	cipher3DES
	cipherAES128
	cipherAES256
)

func (a cipherAlg) String() string {
	switch a {
	case cipher3DES:
		return "3DES-CBC"
	case cipherAES128:
		return "AES-128-CBC"
	case cipherAES256:
		return "AES-256-CBC"
	default:
		return "auto"
	}
}

func parseCipher(s string) (cipherAlg, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return cipherAuto, nil
	case "aes256", "aes-256", "aes-256-cbc":
		return cipherAES256, nil
	case "aes128", "aes-128", "aes-128-cbc", "aes":
		return cipherAES128, nil
	case "3des", "des3", "des-ede3-cbc":
		return cipher3DES, nil
	default:
		return 0, errors.New("want auto, aes256, aes128 or 3des")
	}
}

// cipher picks the strongest content encryption the server offers. RFC 8894 defines "AES" as
// AES-128-CBC, so AES-256 is used only when a server names it (AES256 / AES-256, which some do)
// or the operator forces it with the encryption setting. A server that lists neither AES nor
// DES3 (or answers no GetCACaps at all) gets 3DES: single DES, the RFC's historic default, is
// never used.
func (c caps) cipher(forced cipherAlg) cipherAlg {
	switch {
	case forced != cipherAuto:
		return forced
	case c.has("AES256") || c.has("AES-256"):
		return cipherAES256
	case c.has("AES") || c.standard():
		return cipherAES128
	default:
		return cipher3DES
	}
}

// digestAlg is the message digest of the envelope's signature.
type digestAlg int

const (
	digestSHA1 digestAlg = iota
	digestSHA256
)

func (d digestAlg) String() string {
	if d == digestSHA256 {
		return "SHA-256"
	}
	return "SHA-1"
}

func (d digestAlg) oid() asn1.ObjectIdentifier {
	if d == digestSHA256 {
		return pkcs7.OIDDigestAlgorithmSHA256
	}
	return pkcs7.OIDDigestAlgorithmSHA1
}

// digest picks SHA-256 when offered, else SHA-1 (never MD5, the RFC's historic default).
func (c caps) digest() digestAlg {
	if c.has("SHA-256") || c.standard() {
		return digestSHA256
	}
	return digestSHA1
}
