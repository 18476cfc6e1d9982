package est

import (
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
)

// Certificates returns the TLS client certificate and the trust anchors: those of caCertsFile,
// or else the last /cacerts answer.
func (c *Connector) Certificates() []ca.HeldCertificate {
	out := catls.Held(catls.ClientTLS(c.client))
	anchors := c.fixed
	if anchors == nil {
		c.mu.Lock()
		anchors = c.fetched
		c.mu.Unlock()
	}
	for _, a := range anchors {
		out = append(out, ca.HeldCertificate{Role: ca.RoleRoot, Cert: a})
	}
	return out
}
