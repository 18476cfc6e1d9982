package scep

import "github.com/certprov/certprov-adapter/internal/ca"

// Certificates returns the signer certificate and, once the server was asked (GetCACert), its
// issuing CA and, when it is another certificate, the RA certificate requests are encrypted to.
func (c *Connector) Certificates() []ca.HeldCertificate {
	out := []ca.HeldCertificate{{Role: ca.RoleSigner, Cert: c.signerCert}}
	c.mu.Lock()
	info := c.info
	c.mu.Unlock()
	if info == nil {
		return out
	}
	if info.issuer != nil {
		out = append(out, ca.HeldCertificate{Role: ca.RoleIssuer, Cert: info.issuer})
	}
	if info.recipient != nil && (info.issuer == nil || !info.recipient.Equal(info.issuer)) {
		out = append(out, ca.HeldCertificate{Role: ca.RoleRecipient, Cert: info.recipient})
	}
	return out
}
