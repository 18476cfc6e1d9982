package local

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// BenchmarkRevoke measures one revocation (read and verify the CRL, add the entry, sign it, write
// it atomically with two fsyncs) against CRLs that already list n certificates.
func BenchmarkRevoke(b *testing.B) {
	for _, n := range []int{0, 1_000, 10_000} {
		b.Run(fmt.Sprintf("listed=%d", n), func(b *testing.B) {
			f := newFixture(b, caSpec{}, nil)
			path := filepath.Join(f.dir, "ca.crl")
			writeListedCRL(b, f, path, n)
			c, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "crlFile": "ca.crl"}, ca.Env{BaseDir: f.dir})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = c.Close() })
			leaves := make([]*x509.Certificate, b.N)
			for i := range leaves {
				leaves[i] = issueOne(b, c, fmt.Sprintf("BENCHREVOKE%d", i)).Leaf
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if err := c.Revoke(context.Background(), &ca.RevokeRequest{Serial: leaves[i].SerialNumber, Certificate: leaves[i], Reason: ca.ReasonSuperseded}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			fi, err := os.Stat(path)
			if err == nil {
				b.ReportMetric(float64(fi.Size()), "crl-bytes")
			}
		})
	}
}

// BenchmarkRevokeBySerial measures finding a serial in a ledger of 100K certificates (the index
// has no index on serials) before revoking it.
func BenchmarkRevokeBySerial(b *testing.B) {
	dir := benchLedgerDir(b, 100_000)
	c, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "ledgerFile": "ledger.jsonl", "crlFile": "ca.crl"}, ca.Env{BaseDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// Ledger serials are 1..100000 (hex); a serial near the end is found last by the scan.
		serial := big.NewInt(int64(100_000 - i%1000))
		if err := c.Revoke(context.Background(), &ca.RevokeRequest{Serial: serial, Reason: ca.ReasonSuperseded}); err != nil {
			b.Fatal(err)
		}
	}
}

// writeListedCRL publishes a CRL of n entries signed by f's CA.
func writeListedCRL(b *testing.B, f *fixture, path string, n int) {
	b.Helper()
	entries := make([]x509.RevocationListEntry, n)
	for i := range entries {
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			b.Fatal(err)
		}
		entries[i] = x509.RevocationListEntry{SerialNumber: serial, RevocationTime: time.Now().Add(-time.Hour).Truncate(time.Second), ReasonCode: 4}
	}
	iss, err := crlIssuer(f.cert, f.conn.authKeyID)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		RevokedCertificateEntries: entries, Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(DefaultCRLValidity),
	}, iss, f.conn.signer)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, der, 0o644); err != nil {
		b.Fatal(err)
	}
}
