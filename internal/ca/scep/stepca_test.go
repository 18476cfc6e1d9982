package scep

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// step-ca's SCEP provisioner is the second real SCEP server the connector is held to (after
// micromdm's scepserver): another implementation of RFC 8894, with an RSA decrypter (RA)
// certificate apart from its issuing CA, an intermediate below the root, and AES content
// encryption.

const stepSCEPChallenge = "stepca-scep-Secr3t"

// startStepCASCEP runs a step-ca with two SCEP provisioners, "scep" without a challenge and
// "scep-challenge" with stepSCEPChallenge, sharing one RSA decrypter.
func startStepCASCEP(t *testing.T) *testservers.StepCA {
	t.Helper()
	const password = "step-scep-ca-password"
	return testservers.StartStepCA(t, "admin", password, func(sc *testservers.StepCA, cfg map[string]any) error {
		// The RA certificate, issued by step-ca's intermediate as an NDES RA is by its CA.
		interKey, err := sc.IntermediateKey(password)
		if err != nil {
			return err
		}
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "step-ca SCEP decrypter"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		}, sc.Intermediate, key.Public(), interKey)
		if err != nil {
			return err
		}
		certPEM := pemutil.EncodeCertificateDER(der)
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
		auth := cfg["authority"].(map[string]any)
		provs, _ := auth["provisioners"].([]any)
		for _, p := range []struct{ name, challenge string }{{"scep", ""}, {"scep-challenge", stepSCEPChallenge}} {
			provs = append(provs, map[string]any{
				"type": "SCEP", "name": p.name, "challenge": p.challenge,
				"decrypterCertificate": certPEM, "decrypterKeyPEM": keyPEM,
				"encryptionAlgorithmIdentifier": 2, // AES-256-CBC for the answers
			})
		}
		auth["provisioners"] = provs
		return nil
	})
}

func stepSCEPSettings(s *testservers.StepCA, provisioner string) ca.Settings {
	return ca.Settings{"url": s.URL + "/scep/" + provisioner, "tls": map[string]any{"caFile": s.RootFile}}
}

func TestConformanceStepCASCEP(t *testing.T) {
	s := startStepCASCEP(t)
	catest.Run(t, func(t *testing.T) (ca.Connector, *x509.CertPool) {
		return newTestConnector(t, stepSCEPSettings(s, "scep")), s.Roots
	})
}

// TestStepCASCEPChallenge: the static challenge travels in the signed request; a wrong one is
// refused permanently with step-ca's failInfo and the message never repeats it.
func TestStepCASCEPChallenge(t *testing.T) {
	s := startStepCASCEP(t)
	for i, tc := range []struct {
		name, challenge string
		wantErr         string
	}{
		{"right challenge", stepSCEPChallenge, ""},
		{"wrong challenge", "not-the-secret", "failInfo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			settings := stepSCEPSettings(s, "scep-challenge")
			settings["challenge"] = tc.challenge
			c := newTestConnector(t, settings)
			req := requestWithChallenge(t, c, catest.RSA2048, "STEPSCEP"+string(rune('A'+i)))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := c.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			issued, err := c.Issue(ctx, req)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				catest.CheckIssued(t, req, issued, s.Roots)
				catest.CheckRoots(t, issued)
				return
			}
			if err == nil || !ca.IsPermanent(err) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Issue: %v; want a permanent error containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), tc.challenge) {
				t.Fatalf("error %q reveals the challenge", err)
			}
		})
	}
}
