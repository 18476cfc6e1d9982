package scep

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// TestServerInfoSelection picks the encryption certificate and the issuing CA out of the bundles
// servers send, and refuses bundles that do not hang together.
func TestServerInfoSelection(t *testing.T) {
	root := newTestCA(t, "root")
	issuing := newCert(t, "issuing", root, true, x509.KeyUsageCertSign)
	raSign := newCert(t, "ra sign", issuing, false, x509.KeyUsageDigitalSignature)
	raEnc := newCert(t, "ra exchange", issuing, false, x509.KeyUsageKeyEncipherment)
	raDual := newCert(t, "ra dual", issuing, false, x509.KeyUsageKeyEncipherment|x509.KeyUsageDigitalSignature)
	stranger := newTestCA(t, "stranger")
	strayRA := newCert(t, "stray ra", stranger, false, x509.KeyUsageKeyEncipherment)

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecTmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "ec ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ecDER, err := x509.CreateCertificate(rand.Reader, ecTmpl, ecTmpl, &ecKey.PublicKey, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecCA, err := x509.ParseCertificate(ecDER)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name          string
		certs         []*x509.Certificate
		wantRecipient *x509.Certificate
		wantIssuer    *x509.Certificate
		wantChain     []*x509.Certificate
		wantErr       string
	}{
		{"single CA", []*x509.Certificate{root.cert}, root.cert, root.cert, []*x509.Certificate{root.cert}, ""},
		{"NDES: sign, exchange, issuing, root", []*x509.Certificate{raSign.cert, raEnc.cert, issuing.cert, root.cert}, raEnc.cert, issuing.cert, []*x509.Certificate{issuing.cert, root.cert}, ""},
		{"order does not matter", []*x509.Certificate{root.cert, issuing.cert, raEnc.cert, raSign.cert}, raEnc.cert, issuing.cert, []*x509.Certificate{issuing.cert, root.cert}, ""},
		{"pure encryption preferred over dual use", []*x509.Certificate{raDual.cert, raEnc.cert, issuing.cert}, raEnc.cert, issuing.cert, []*x509.Certificate{issuing.cert}, ""},
		{"dual use RA", []*x509.Certificate{raDual.cert, issuing.cert}, raDual.cert, issuing.cert, []*x509.Certificate{issuing.cert}, ""},
		{"CA chain without RA", []*x509.Certificate{root.cert, issuing.cert}, issuing.cert, issuing.cert, []*x509.Certificate{issuing.cert, root.cert}, ""},
		{"RA from another CA", []*x509.Certificate{strayRA.cert, issuing.cert, root.cert}, nil, nil, nil, "not signed by a CA certificate"},
		{"no CA", []*x509.Certificate{raSign.cert, raEnc.cert}, nil, nil, nil, "no CA certificate"},
		{"EC CA cannot be encrypted to", []*x509.Certificate{ecCA}, nil, nil, nil, "SCEP needs RSA"},
		{"nothing", nil, nil, nil, nil, "no certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := newServerInfo(parseCaps(nil), tc.certs, time.Now())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !info.recipient.Equal(tc.wantRecipient) || !info.issuer.Equal(tc.wantIssuer) {
				t.Fatalf("recipient %q issuer %q, want %q and %q", info.recipient.Subject.CommonName, info.issuer.Subject.CommonName,
					tc.wantRecipient.Subject.CommonName, tc.wantIssuer.Subject.CommonName)
			}
			if len(info.chain) != len(tc.wantChain) {
				t.Fatalf("chain of %d, want %d", len(info.chain), len(tc.wantChain))
			}
			for i := range info.chain {
				if !info.chain[i].Equal(tc.wantChain[i]) {
					t.Fatalf("chain[%d] %q, want %q", i, info.chain[i].Subject.CommonName, tc.wantChain[i].Subject.CommonName)
				}
			}
		})
	}
}

// TestParseCACerts reads the three forms of GetCACert answers and refuses junk without panicking.
func TestParseCACerts(t *testing.T) {
	a, b := newTestCA(t, "a"), newTestCA(t, "b")
	deg, err := degenerate([]*x509.Certificate{a.cert, b.cert})
	if err != nil {
		t.Fatal(err)
	}
	pemBoth := append(pemCert(a.cert), pemCert(b.cert)...)
	tests := []struct {
		name    string
		body    []byte
		want    int
		wantErr bool
	}{
		{"DER", a.cert.Raw, 1, false},
		{"PKCS#7", deg, 2, false},
		{"PEM", pemBoth, 2, false},
		{"empty", nil, 0, true},
		{"HTML", []byte("<html>error</html>"), 0, true},
		{"truncated PKCS#7", deg[:len(deg)/2], 0, true},
		{"random", bytes.Repeat([]byte{0x30, 0x82, 0xff}, 50), 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			certs, err := parseCACerts(tc.body)
			if tc.wantErr != (err != nil) || len(certs) != tc.want {
				t.Fatalf("%d certificates, error %v", len(certs), err)
			}
		})
	}
}

// TestParsePKIMessageJunk: answers that are not signed SCEP messages are errors, never panics.
func TestParsePKIMessageJunk(t *testing.T) {
	a := newTestCA(t, "a")
	deg, err := degenerate([]*x509.Certificate{a.cert})
	if err != nil {
		t.Fatal(err)
	}
	good, err := signPKIMessage(&pkiMessage{MessageType: msgCertRep, TransactionID: "T", PKIStatus: statusPending}, a.cert, a.key, digestSHA1)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-5] ^= 0xff // inside the signature
	for name, body := range map[string][]byte{
		"empty":             nil,
		"html":              []byte("<html><body>Bad gateway</body></html>"),
		"certs only":        deg,
		"truncated":         good[:len(good)-20],
		"bad signature":     flipped,
		"random DER header": append([]byte{0x30, 0x80}, bytes.Repeat([]byte{0xa0, 0x80}, 40)...),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parsePKIMessage(body, nil); err == nil {
				t.Fatal("parsed")
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		m, err := parsePKIMessage(good, nil)
		if err != nil || m.PKIStatus != statusPending || m.TransactionID != "T" || !m.Signer.Equal(a.cert) {
			t.Fatalf("%+v, %v", m, err)
		}
	})
	t.Run("bad signature is recognisable", func(t *testing.T) {
		if _, err := parsePKIMessage(flipped, nil); !errors.Is(err, errBadSignature) {
			t.Fatalf("error %v, want errBadSignature", err)
		}
	})
}

// TestEnvelopeRoundTrip encrypts with each cipher and decrypts with the PKCS#7 library, the way a
// server would.
func TestEnvelopeRoundTrip(t *testing.T) {
	rcpt := newTestCA(t, "recipient")
	content := []byte("a certificate request, more or less")
	for _, alg := range []cipherAlg{cipherAES256, cipherAES128, cipher3DES} {
		t.Run(alg.String(), func(t *testing.T) {
			env, err := envelope(content, rcpt.cert, alg)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := envelopeCipher(env); err != nil || got != alg {
				t.Fatalf("cipher %v, %v", got, err)
			}
			plain, err := openEnvelope(env, rcpt.cert, rcpt.key)
			if err != nil || !bytes.Equal(plain, content) {
				t.Fatalf("decrypted %q, %v", plain, err)
			}
		})
	}
	t.Run("EC recipient", func(t *testing.T) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		cert := &x509.Certificate{PublicKey: &key.PublicKey}
		if _, err := envelope(content, cert, cipherAES128); !errors.Is(err, errNoRSARecipient) {
			t.Fatalf("error %v", err)
		}
	})
}

// TestSigner: the key and certificate are created when absent (key 0600), reused afterwards, a
// missing certificate is re-created for an existing key, and inconsistent files are refused.
func TestSigner(t *testing.T) {
	log := zaptest.NewLogger(t)
	dir := t.TempDir()
	keyPath, certPath := filepath.Join(dir, "sub", "signer.key"), filepath.Join(dir, "sub", "signer.pem")

	key1, cert1, err := loadOrCreateSigner(keyPath, certPath, "ndes", log)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if !strings.Contains(cert1.Subject.CommonName, "ndes") || cert1.CheckSignature(cert1.SignatureAlgorithm, cert1.RawTBSCertificate, cert1.Signature) != nil {
		t.Errorf("certificate %q is not self-signed for the connection", cert1.Subject)
	}
	if cert1.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Error("the signer certificate lacks keyEncipherment: servers could not encrypt to it")
	}

	key2, cert2, err := loadOrCreateSigner(keyPath, certPath, "ndes", log)
	if err != nil {
		t.Fatal(err)
	}
	if !key2.Equal(key1) || !cert2.Equal(cert1) {
		t.Fatal("a second start made a new signer instead of reusing the files")
	}

	if err := os.Remove(certPath); err != nil {
		t.Fatal(err)
	}
	key3, cert3, err := loadOrCreateSigner(keyPath, certPath, "ndes", log)
	if err != nil {
		t.Fatal(err)
	}
	if !key3.Equal(key1) || cert3.Equal(cert1) || !key1.PublicKey.Equal(cert3.PublicKey) {
		t.Fatal("a missing certificate was not re-created for the existing key")
	}

	t.Run("certificate without key", func(t *testing.T) {
		d := t.TempDir()
		cp := filepath.Join(d, "signer.pem")
		if err := os.WriteFile(cp, pemCert(cert1), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := loadOrCreateSigner(filepath.Join(d, "signer.key"), cp, "x", log)
		if err == nil || !strings.Contains(err.Error(), "is missing but signerCertFile") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("certificate of another key", func(t *testing.T) {
		d := t.TempDir()
		kp, cp := filepath.Join(d, "signer.key"), filepath.Join(d, "signer.pem")
		if _, _, err := loadOrCreateSigner(kp, cp, "x", log); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cp, pemCert(cert1), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := loadOrCreateSigner(kp, cp, "x", log)
		if err == nil || !strings.Contains(err.Error(), "does not belong to signerKeyFile") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("not a key", func(t *testing.T) {
		d := t.TempDir()
		kp := filepath.Join(d, "signer.key")
		if err := os.WriteFile(kp, []byte("hello"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := loadOrCreateSigner(kp, filepath.Join(d, "signer.pem"), "x", log)
		if err == nil || !strings.Contains(err.Error(), "signerKeyFile") {
			t.Fatalf("error %v", err)
		}
	})
}

// TestSettings: every mistake names its key, several at once.
func TestSettings(t *testing.T) {
	dir := t.TempDir()
	base := func() ca.Settings {
		return ca.Settings{"url": "https://ndes.example.com/certsrv/mscep/mscep.dll",
			"signerKeyFile": filepath.Join(dir, "k"), "signerCertFile": filepath.Join(dir, "c")}
	}
	tests := []struct {
		name string
		edit func(ca.Settings)
		want []string
	}{
		{"valid", func(ca.Settings) {}, nil},
		{"valid dynamic", func(s ca.Settings) {
			s["dynamicChallenge"] = map[string]any{"url": "https://ndes.example.com/certsrv/mscep_admin/", "username": "svc", "passwordFile": "pw",
				"tls": map[string]any{"serverName": "ndes.example.com"}}
		}, nil},
		{"missing url and signer", func(s ca.Settings) { delete(s, "url"); delete(s, "signerKeyFile"); delete(s, "signerCertFile") },
			[]string{"url: required", "signerKeyFile: required", "signerCertFile: required"}},
		{"ftp url", func(s ca.Settings) { s["url"] = "ftp://x/scep" }, []string{"url:", "http or https"}},
		{"unknown key", func(s ca.Settings) { s["challange"] = "x" }, []string{"challange"}},
		{"two challenges", func(s ca.Settings) { s["challenge"] = "x"; s["challengeFile"] = "f" }, []string{"set at most one"}},
		{"incomplete dynamic", func(s ca.Settings) { s["dynamicChallenge"] = map[string]any{"url": "https://x/"} },
			[]string{"dynamicChallenge.username", "dynamicChallenge.passwordFile"}},
		{"bad fingerprint", func(s ca.Settings) { s["caCertFingerprint"] = "abcd" }, []string{"caCertFingerprint", "32"}},
		{"bad duration", func(s ca.Settings) { s["pollInterval"] = "soon" }, []string{"pollInterval", "not a duration"}},
		{"negative timeout", func(s ca.Settings) { s["timeout"] = "-1s" }, []string{"timeout"}},
		{"bad encryption", func(s ca.Settings) { s["encryption"] = "des" }, []string{"encryption", "aes256"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.edit(s)
			_, err := ca.New(Type, s, ca.Env{Name: "ndes", Logger: zaptest.NewLogger(t)})
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestChallengeFile reads the file at every request, so that rotation needs no restart.
func TestChallengeFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "challenge")
	c := newTestConnector(t, ca.Settings{"url": "http://127.0.0.1:1/scep", "challengeFile": p})
	if _, err := c.CSRAttributes(ctxT(t), &ca.Request{}); err == nil || ca.IsPermanent(err) {
		t.Fatalf("missing file: %v, want a retryable error", err)
	}
	for _, pw := range []string{"first", "second"} {
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		attrs, err := c.CSRAttributes(ctxT(t), &ca.Request{})
		if err != nil || len(attrs) != 1 || !bytes.Contains(attrs[0].Values[0].FullBytes, []byte(pw)) ||
			bytes.Contains(attrs[0].Values[0].FullBytes, []byte("\n")) {
			t.Fatalf("%q: attributes %+v, %v", pw, attrs, err)
		}
	}
	if err := os.WriteFile(p, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CSRAttributes(ctxT(t), &ca.Request{}); err == nil || !ca.IsPermanent(err) || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: %v", err)
	}
	none := newTestConnector(t, ca.Settings{"url": "http://127.0.0.1:1/scep"})
	if attrs, err := none.CSRAttributes(ctxT(t), &ca.Request{}); err != nil || attrs != nil {
		t.Fatalf("no challenge configured: %v, %v", attrs, err)
	}
}

// TestCapsParsing covers the keyword spellings servers use.
func TestCapsParsing(t *testing.T) {
	tests := []struct {
		body    string
		post    bool
		cipher  cipherAlg
		digest  digestAlg
		renewal bool
	}{
		{"", false, cipher3DES, digestSHA1, false},
		{"Renewal\nSHA-1\nSHA-256\nAES\nDES3\nSCEPStandard\nPOSTPKIOperation", true, cipherAES128, digestSHA256, true},
		{"GetNextCACert\r\nPOSTPKIOperation\r\nRenewal\r\nSHA-512\r\nSHA-256\r\nSHA-1\r\nDES3\r\n", true, cipher3DES, digestSHA256, true},
		{"SCEPStandard", true, cipherAES128, digestSHA256, false},
		{"  aes256  \n sha-256 ", false, cipherAES256, digestSHA256, false},
	}
	for _, tc := range tests {
		c := parseCaps([]byte(tc.body))
		if c.post() != tc.post || c.cipher(cipherAuto) != tc.cipher || c.digest() != tc.digest || c.renewal() != tc.renewal {
			t.Errorf("%q: post %v cipher %v digest %v renewal %v", tc.body, c.post(), c.cipher(cipherAuto), c.digest(), c.renewal())
		}
	}
}

func pemCert(c *x509.Certificate) []byte {
	return pemutil.Encode(c)
}
