package verifiedaccess

import (
	"crypto/x509"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// Certificates returns the TLS certificate the server serves with, for the certificate expiry
// metric; none when it serves plain HTTP.
func (s *Server) Certificates() []ca.HeldCertificate {
	if s.tls == nil || len(s.tls.Certificates) == 0 || len(s.tls.Certificates[0].Certificate) == 0 {
		return nil
	}
	leaf := s.tls.Certificates[0].Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(s.tls.Certificates[0].Certificate[0]); err != nil {
			return nil
		}
	}
	return []ca.HeldCertificate{{Role: ca.RoleServer, Cert: leaf}}
}
