// Package install links every built-in CA connector into a binary. Importing it for its side
// effects is the one place that decides which connector types a build offers.
package install

import (
	_ "github.com/certprov/certprov-adapter/internal/ca/awspca"  // type "awspca": AWS Private CA
	_ "github.com/certprov/certprov-adapter/internal/ca/cas"     // type "cas": Google Cloud Certificate Authority Service
	_ "github.com/certprov/certprov-adapter/internal/ca/ejbca"   // type "ejbca": Keyfactor EJBCA's REST API
	_ "github.com/certprov/certprov-adapter/internal/ca/est"     // type "est": an RFC 7030 EST server
	_ "github.com/certprov/certprov-adapter/internal/ca/local"   // type "local": the built-in CA
	_ "github.com/certprov/certprov-adapter/internal/ca/scep"    // type "scep": SCEP (RFC 8894), Microsoft NDES/AD CS
	_ "github.com/certprov/certprov-adapter/internal/ca/stepca"  // type "stepca": smallstep step-ca
	_ "github.com/certprov/certprov-adapter/internal/ca/vault"   // type "vault": HashiCorp Vault / OpenBao PKI
	_ "github.com/certprov/certprov-adapter/internal/ca/webhook" // type "webhook": an in-house CA behind an HTTPS service
)
