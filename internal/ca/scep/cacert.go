package scep

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// serverInfo is what the adapter learnt from GetCACaps and GetCACert.
type serverInfo struct {
	caps  caps
	certs []*x509.Certificate // as GetCACert returned them
	// recipient is the certificate requests are encrypted to: the RA encryption certificate
	// (NDES: the "CEP Encryption" / Exchange certificate with keyEncipherment), else the CA.
	recipient *x509.Certificate
	// issuer is the CA that issues the leaves: the RA's issuer, or the CA itself.
	issuer *x509.Certificate
	// chain is issuer first, then its issuers as far as the bundle goes: returned with leaves.
	chain  []*x509.Certificate
	caPool *x509.CertPool // every CA certificate of the bundle
	at     time.Time
}

// parseCACerts reads a GetCACert answer: one DER certificate (application/x-x509-ca-cert), a
// degenerate PKCS#7 (application/x-x509-ca-ra-cert), or, leniently, PEM.
func parseCACerts(body []byte) ([]*x509.Certificate, error) {
	if len(body) == 0 {
		return nil, errors.New("empty answer")
	}
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("-----BEGIN")) {
		return pemutil.ParseCertificates(body)
	}
	return certsOnly(body)
}

func isCA(c *x509.Certificate) bool { return c.BasicConstraintsValid && c.IsCA }

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// issuerOf returns the certificate among cands whose key signed c, or nil.
func issuerOf(c *x509.Certificate, cands []*x509.Certificate) *x509.Certificate {
	for _, p := range cands {
		if p != c && bytes.Equal(c.RawIssuer, p.RawSubject) && c.CheckSignatureFrom(p) == nil {
			return p
		}
	}
	return nil
}

// newServerInfo picks the recipient and the issuing CA out of a GetCACert bundle and checks that
// the bundle hangs together: every RA certificate must be signed by a CA certificate of the
// bundle, so that pinning the CA (caCertFingerprint) also vouches for the RA.
func newServerInfo(cp caps, certs []*x509.Certificate, now time.Time) (*serverInfo, error) {
	if len(certs) == 0 {
		return nil, errors.New("GetCACert returned no certificate")
	}
	info := &serverInfo{caps: cp, certs: certs, caPool: x509.NewCertPool(), at: now}
	var cas, ras []*x509.Certificate
	for _, c := range certs {
		if isCA(c) {
			cas = append(cas, c)
			info.caPool.AddCert(c)
		} else {
			ras = append(ras, c)
		}
	}
	switch {
	case len(certs) == 1:
		// A CA that does SCEP itself (micromdm scepserver, step-ca): one certificate for all.
		c := certs[0]
		info.recipient, info.issuer, info.chain = c, c, []*x509.Certificate{c}
		if !isCA(c) {
			info.caPool.AddCert(c)
		}
	case len(cas) == 0:
		return nil, fmt.Errorf("GetCACert returned %d certificates but no CA certificate", len(certs))
	default:
		for _, ra := range ras {
			if issuerOf(ra, cas) == nil {
				return nil, fmt.Errorf("RA certificate %q is not signed by a CA certificate GetCACert returned", ra.Subject)
			}
		}
		info.recipient = pickRecipient(ras)
		if info.recipient != nil {
			info.issuer = issuerOf(info.recipient, cas)
		} else {
			// No RA: encrypt to the CA, which must then be the issuing one (the lowest).
			info.issuer = lowestCA(cas)
			info.recipient = info.issuer
		}
		info.chain = chainFrom(info.issuer, cas)
	}
	if _, ok := info.recipient.PublicKey.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("the certificate to encrypt to, %q, has a %T key; SCEP needs RSA", info.recipient.Subject, info.recipient.PublicKey)
	}
	return info, nil
}

// pickRecipient prefers a pure encryption certificate (keyEncipherment without digitalSignature,
// like NDES's "CEP Encryption" certificate) over a dual-use one, and an RA certificate without
// key usage over none.
func pickRecipient(ras []*x509.Certificate) *x509.Certificate {
	var dual, unrestricted *x509.Certificate
	for _, c := range ras {
		if _, ok := c.PublicKey.(*rsa.PublicKey); !ok {
			continue
		}
		switch {
		case c.KeyUsage&x509.KeyUsageKeyEncipherment != 0 && c.KeyUsage&x509.KeyUsageDigitalSignature == 0:
			return c
		case c.KeyUsage&x509.KeyUsageKeyEncipherment != 0 && dual == nil:
			dual = c
		case c.KeyUsage == 0 && unrestricted == nil:
			unrestricted = c
		}
	}
	if dual != nil {
		return dual
	}
	return unrestricted
}

// lowestCA is the CA certificate that issued no other CA certificate of the bundle.
func lowestCA(cas []*x509.Certificate) *x509.Certificate {
	for _, c := range cas {
		issuesOther := false
		for _, o := range cas {
			if o != c && bytes.Equal(o.RawIssuer, c.RawSubject) && o.CheckSignatureFrom(c) == nil {
				issuesOther = true
				break
			}
		}
		if !issuesOther {
			return c
		}
	}
	return cas[0]
}

// chainFrom follows issuers from c through cas, stopping at a self-signed certificate.
func chainFrom(c *x509.Certificate, cas []*x509.Certificate) []*x509.Certificate {
	chain := []*x509.Certificate{c}
	for cur := c; !isSelfSigned(cur) && len(chain) <= len(cas); {
		next := issuerOf(cur, cas)
		if next == nil || next == cur {
			break
		}
		chain = append(chain, next)
		cur = next
	}
	return chain
}

// fingerprint is the SHA-256 of a certificate in the colon-free lower-case hex that
// caCertFingerprint accepts.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// checkPin requires one certificate of the bundle to have the pinned fingerprint. Pinning the CA
// or an RA both anchor the bundle, since newServerInfo checked that every RA is signed by a CA
// of the bundle. A mismatch is permanent: retrying cannot change which certificate the server has.
func checkPin(pin []byte, certs []*x509.Certificate) error {
	if pin == nil {
		return nil
	}
	var offered []string
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		if bytes.Equal(sum[:], pin) {
			return nil
		}
		offered = append(offered, fmt.Sprintf("%q %s", c.Subject.CommonName, fingerprint(c)))
	}
	// The explanation comes before the list, which failure messages may cut short.
	return ca.Permanentf("caCertFingerprint %s matches no certificate from GetCACert: the server is not the CA you pinned, or its CA was renewed (it offered %s)",
		hex.EncodeToString(pin), strings.Join(offered, ", "))
}

// trusts reports whether the server may sign CertReps with c: a bundle certificate, or one issued
// by a CA of the bundle (NDES may sign with an RA signing certificate it does not list).
func (info *serverInfo) trusts(c *x509.Certificate, now time.Time) bool {
	for _, b := range info.certs {
		if b.Equal(c) {
			return true
		}
	}
	_, err := c.Verify(x509.VerifyOptions{Roots: info.caPool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}
