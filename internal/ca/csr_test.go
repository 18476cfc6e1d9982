package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"strings"
	"testing"
)

// TestCheckedCSR: the request's CSR comes back parsed and signature-checked, from CSR or CSRDER;
// a missing, unparseable or badly signed one is a permanent error saying which.
func TestCheckedCSR(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	forged := append([]byte(nil), der...)
	forged[len(forged)-1] ^= 0xff // inside the signature: still parses, no longer verifies
	forgedCSR, err := x509.ParseCertificateRequest(forged)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		req     Request
		wantErr string
	}{
		{name: "parsed", req: Request{CSR: parsed}},
		{name: "DER only", req: Request{CSRDER: der}},
		{name: "none", req: Request{}, wantErr: "request has no CSR"},
		{name: "not DER", req: Request{CSRDER: []byte("junk")}, wantErr: "parse CSR"},
		{name: "forged DER", req: Request{CSRDER: forged}, wantErr: "CSR signature"},
		{name: "forged parsed", req: Request{CSR: forgedCSR}, wantErr: "CSR signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := tc.req.CheckedCSR()
			if tc.wantErr == "" {
				if err != nil || csr.Subject.CommonName != "device" {
					t.Fatalf("CheckedCSR = %v, %v", csr, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("CheckedCSR error %v, want %q", err, tc.wantErr)
			}
			if !IsPermanent(fmt.Errorf("issue: %w", err)) {
				t.Errorf("%v is not permanent once wrapped", err)
			}
		})
	}
}
