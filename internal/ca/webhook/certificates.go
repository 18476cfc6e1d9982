package webhook

import (
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
)

// Certificates returns the caCertsFile roots and the TLS client certificate.
func (c *Connector) Certificates() []ca.HeldCertificate {
	out := catls.Held(catls.ClientTLS(c.client))
	for _, r := range c.rootCerts {
		out = append(out, ca.HeldCertificate{Role: ca.RoleRoot, Cert: r})
	}
	return out
}
