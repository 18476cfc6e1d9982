package local

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/csr"
)

// caSpec describes a test issuer.
type caSpec struct {
	key       crypto.Signer
	notBefore time.Time
	notAfter  time.Time
	notCA     bool
	keyUsage  x509.KeyUsage
	parent    *x509.Certificate
	parentKey crypto.Signer
}

func makeCert(t testing.TB, s caSpec) *x509.Certificate {
	t.Helper()
	if s.notBefore.IsZero() {
		s.notBefore = time.Now().Add(-time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	if s.keyUsage == 0 {
		s.keyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "test CA " + serial.Text(16)[:8]},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  !s.notCA,
		KeyUsage:              s.keyUsage,
	}
	parent, parentKey := tmpl, s.key
	if s.parent != nil {
		parent, parentKey = s.parent, s.parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, s.key.Public(), parentKey)
	if err != nil {
		t.Fatalf("create CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func certPEM(c *x509.Certificate) *pem.Block { return &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw} }

func pkcs8PEM(t testing.TB, key crypto.Signer) *pem.Block {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
}

func writePEM(t testing.TB, path string, blocks ...*pem.Block) {
	t.Helper()
	var buf bytes.Buffer
	for _, b := range blocks {
		if err := pem.Encode(&buf, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fixture is a CA on disk plus a connector over it.
type fixture struct {
	dir  string
	cert *x509.Certificate
	conn *Connector
}

// newFixture writes an issuer from spec to a temporary directory and builds a connector with
// relative paths; extra settings are merged in.
func newFixture(t testing.TB, spec caSpec, extra ca.Settings) *fixture {
	t.Helper()
	if spec.key == nil {
		spec.key = ecKey(t)
	}
	dir := t.TempDir()
	cert := makeCert(t, spec)
	writePEM(t, filepath.Join(dir, "ca.crt"), certPEM(cert))
	writePEM(t, filepath.Join(dir, "ca.key"), pkcs8PEM(t, spec.key))
	settings := ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key"}
	for k, v := range extra {
		settings[k] = v
	}
	conn, err := New(settings, ca.Env{Name: "test", BaseDir: dir})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &fixture{dir: dir, cert: cert, conn: conn}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// conformanceTarget is a connection for the suite: its CRL, read from the file as a relying
// party would, tells the suite what it revoked.
func conformanceTarget(t testing.TB, conn *Connector, roots *x509.CertPool, crlPath string) *catest.Target {
	t.Cleanup(func() { _ = conn.Close() })
	return &catest.Target{
		Connector: conn,
		Roots:     roots,
		Revocation: &catest.Revocation{Status: func(t testing.TB, cert *x509.Certificate) (bool, ca.Reason) {
			return crlStatus(t, crlPath, conn.Certificate(), cert.SerialNumber)
		}},
	}
}

func TestConformance(t *testing.T) {
	t.Run("CreateCA ecdsa root", func(t *testing.T) {
		catest.RunTarget(t, func(t *testing.T) *catest.Target {
			dir := t.TempDir()
			certPath, keyPath, err := CreateCA(dir, "ecdsa", "", 0)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := ca.New(Type, ca.Settings{"certificateFile": filepath.Base(certPath), "keyFile": keyPath, "crlFile": "ca.crl"},
				ca.Env{Name: "builtin", BaseDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			return conformanceTarget(t, conn.(*Connector), pool(conn.(*Connector).Certificate()), filepath.Join(dir, "ca.crl"))
		})
	})
	t.Run("RSA root, ledger, PEM CRL", func(t *testing.T) {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		catest.RunTarget(t, func(t *testing.T) *catest.Target {
			crlDir := t.TempDir()
			f := newFixture(t, caSpec{key: key}, ca.Settings{
				"ledgerFile": filepath.Join(crlDir, "ledger.jsonl"), "crlFile": filepath.Join(crlDir, "ca.crl.pem"), "crlFormat": "pem",
			})
			return conformanceTarget(t, f.conn, pool(f.cert), filepath.Join(crlDir, "ca.crl.pem"))
		})
	})
	t.Run("Ed25519 intermediate with chainFile", func(t *testing.T) {
		rootKey := ecKey(t)
		root := makeCert(t, caSpec{key: rootKey})
		_, edKey, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		catest.RunTarget(t, func(t *testing.T) *catest.Target {
			dir := t.TempDir()
			inter := makeCert(t, caSpec{key: edKey, parent: root, parentKey: rootKey})
			writePEM(t, filepath.Join(dir, "inter.crt"), certPEM(inter))
			writePEM(t, filepath.Join(dir, "inter.key"), pkcs8PEM(t, edKey))
			writePEM(t, filepath.Join(dir, "chain.pem"), certPEM(inter), certPEM(root))
			conn, err := New(ca.Settings{"certificateFile": "inter.crt", "keyFile": "inter.key", "chainFile": "chain.pem", "crlFile": "inter.crl"},
				ca.Env{Name: "inter", BaseDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if len(conn.chain) != 2 || !conn.chain[0].Equal(inter) || !conn.chain[1].Equal(root) {
				t.Fatalf("chain = %d certificates, want intermediate then root without duplicates", len(conn.chain))
			}
			return conformanceTarget(t, conn, pool(root), filepath.Join(dir, "inter.crl"))
		})
	})
}

func TestIssueCopiesTheRequest(t *testing.T) {
	f := newFixture(t, caSpec{}, nil)
	for _, kt := range []catest.KeyType{catest.RSA2048, catest.P256} {
		t.Run(string(kt), func(t *testing.T) {
			device := catest.DeviceKey(t, kt)
			req := catest.NewRequest(t, device, "COPY"+string(kt))
			issued, err := f.conn.Issue(context.Background(), req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			catest.CheckIssued(t, req, issued, pool(f.cert))
			catest.CheckRoots(t, issued)
			leaf := issued.Leaf
			spki, _ := x509.MarshalPKIXPublicKey(device.Public())
			if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, spki) {
				t.Error("leaf SPKI differs from the device SPKI")
			}
			if !bytes.Equal(leaf.RawSubject, req.CSR.RawSubject) {
				t.Errorf("subject %s, want %s", leaf.Subject, req.CSR.Subject)
			}
			if !slices.Equal(leaf.DNSNames, req.CSR.DNSNames) || !slices.Equal(leaf.EmailAddresses, req.CSR.EmailAddresses) {
				t.Errorf("SANs %q %q, want %q %q", leaf.DNSNames, leaf.EmailAddresses, req.CSR.DNSNames, req.CSR.EmailAddresses)
			}
			var upns []string
			for _, e := range leaf.Extensions {
				if e.Id.Equal(oidSubjectAltName()) {
					if upns, err = csr.ParseUPNs(e.Value); err != nil {
						t.Fatal(err)
					}
				}
			}
			if len(upns) != 1 || !strings.HasSuffix(upns[0], "@corp.example.com") {
				t.Errorf("UPNs = %q", upns)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("KeyUsage %b ExtKeyUsage %v", leaf.KeyUsage, leaf.ExtKeyUsage)
			}
			if !bytes.Equal(leaf.AuthorityKeyId, f.cert.SubjectKeyId) || len(leaf.AuthorityKeyId) == 0 {
				t.Errorf("AuthorityKeyId %x, want %x", leaf.AuthorityKeyId, f.cert.SubjectKeyId)
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %s", leaf.SerialNumber)
			}
			if leaf.IsCA || !leaf.BasicConstraintsValid {
				t.Error("leaf must carry basicConstraints cA=false")
			}
			if len(issued.Chain) != 1 || !issued.Chain[0].Equal(f.cert) {
				t.Errorf("chain has %d certificates, want the issuer", len(issued.Chain))
			}
			if got := f.conn.Issued(req.Key); got != 1 {
				t.Errorf("Issued(%s) = %d, want 1", req.Key, got)
			}
		})
	}
	if got := f.conn.IssuedTotal(); got != 2 {
		t.Errorf("IssuedTotal = %d, want 2", got)
	}
	if got := f.conn.Issued("never asked"); got != 0 {
		t.Errorf("Issued(never asked) = %d", got)
	}
}

func TestAuthorityKeyID(t *testing.T) {
	f := newFixture(t, caSpec{}, nil)
	got, err := authorityKeyID(f.cert)
	if err != nil || !bytes.Equal(got, f.cert.SubjectKeyId) {
		t.Errorf("with a subject key id: %x, %v; want %x", got, err, f.cert.SubjectKeyId)
	}
	// crypto/x509 always gives CA certificates a subject key id, so take it away by hand.
	noSKI := *f.cert
	noSKI.SubjectKeyId = nil
	got, err = authorityKeyID(&noSKI)
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(f.cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		t.Fatal(err)
	}
	want := sha1.Sum(spki.PublicKey.Bytes)
	if err != nil || !bytes.Equal(got, want[:]) {
		t.Errorf("without a subject key id: %x, %v; want %x", got, err, want)
	}
}

func TestValidity(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	caFrom, caUntil := now.Add(-24*time.Hour), now.Add(90*24*time.Hour)
	cases := []struct {
		name          string
		settings      ca.Settings
		caFrom        time.Time
		caUntil       time.Time
		requested     time.Duration
		wantNotBefore time.Time
		wantNotAfter  time.Time
	}{
		{"as requested", nil, caFrom, caUntil, 24 * time.Hour, now.Add(-time.Minute), now.Add(-time.Minute + 24*time.Hour)},
		{"none requested takes maxValidity", ca.Settings{"maxValidity": "720h"}, caFrom, caUntil, 0,
			now.Add(-time.Minute), now.Add(-time.Minute + 720*time.Hour)},
		{"capped at maxValidity", ca.Settings{"maxValidity": "48h"}, caFrom, caUntil, 1000 * time.Hour,
			now.Add(-time.Minute), now.Add(-time.Minute + 48*time.Hour)},
		{"clipped to the CA's notAfter", nil, caFrom, now.Add(2 * time.Hour), 24 * time.Hour,
			now.Add(-time.Minute), now.Add(2 * time.Hour)},
		{"backdate zero", ca.Settings{"backdate": "0s"}, caFrom, caUntil, time.Hour, now, now.Add(time.Hour)},
		{"backdate as a duration value", ca.Settings{"backdate": 5 * time.Minute}, caFrom, caUntil, time.Hour,
			now.Add(-5 * time.Minute), now.Add(-5*time.Minute + time.Hour)},
		{"backdate clipped to the CA's notBefore", ca.Settings{"backdate": "1h"}, now.Add(-10 * time.Minute), caUntil, time.Hour,
			now.Add(-10 * time.Minute), now.Add(50 * time.Minute)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, caSpec{notBefore: tc.caFrom, notAfter: tc.caUntil}, tc.settings)
			f.conn.now = func() time.Time { return now }
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "VALIDITY")
			req.Validity = tc.requested
			issued, err := f.conn.Issue(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			// Certificates carry whole seconds.
			if got := issued.Leaf.NotBefore; !got.Equal(tc.wantNotBefore.Truncate(time.Second)) {
				t.Errorf("NotBefore %s, want %s", got, tc.wantNotBefore)
			}
			if got := issued.Leaf.NotAfter; !got.Equal(tc.wantNotAfter.Truncate(time.Second)) {
				t.Errorf("NotAfter %s, want %s", got, tc.wantNotAfter)
			}
		})
	}
}

func TestExpiredCA(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name     string
		from, to time.Time
		want     string
	}{
		{"expired", now.Add(-48 * time.Hour), now.Add(-time.Hour), "expired at"},
		{"not yet valid", now.Add(time.Hour), now.Add(48 * time.Hour), "not valid before"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Construction succeeds, so that the adapter starts and Ping reports the problem.
			f := newFixture(t, caSpec{notBefore: tc.from, notAfter: tc.to}, nil)
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "EXPIRED")
			issued, err := f.conn.Issue(context.Background(), req)
			if err == nil || issued != nil {
				t.Fatalf("Issue = %v, %v; want an error", issued, err)
			}
			if !ca.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Issue error %q: want permanent, containing %q", err, tc.want)
			}
			if err := f.conn.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Ping = %v, want an error containing %q", err, tc.want)
			}
			if f.conn.IssuedTotal() != 0 {
				t.Error("refused request counted as issued")
			}
		})
	}
	f := newFixture(t, caSpec{}, nil)
	if err := f.conn.Ping(context.Background()); err != nil {
		t.Errorf("Ping on a valid CA: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.conn.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Ping with a cancelled context = %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	key := ecKey(t)
	other := ecKey(t)
	good := makeCert(t, caSpec{key: key})
	writePEM(t, filepath.Join(dir, "ca.crt"), certPEM(good))
	writePEM(t, filepath.Join(dir, "ca.key"), pkcs8PEM(t, key))
	writePEM(t, filepath.Join(dir, "other.key"), pkcs8PEM(t, other))
	writePEM(t, filepath.Join(dir, "leaf.crt"), certPEM(makeCert(t, caSpec{key: key, notCA: true, keyUsage: x509.KeyUsageDigitalSignature})))
	writePEM(t, filepath.Join(dir, "nosign.crt"), certPEM(makeCert(t, caSpec{key: key, keyUsage: x509.KeyUsageDigitalSignature})))
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	writePEM(t, filepath.Join(dir, "encrypted.key"), &pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: keyDER})
	writePEM(t, filepath.Join(dir, "legacy-encrypted.key"), &pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})
	writePEM(t, filepath.Join(dir, "x25519.key"), x25519PEM(t))
	if err := os.WriteFile(filepath.Join(dir, "empty.pem"), []byte("nothing here\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	base := func(kv ...any) ca.Settings {
		s := ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key"}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(s, kv[i].(string))
			} else {
				s[kv[i].(string)] = kv[i+1]
			}
		}
		return s
	}
	cases := []struct {
		name     string
		settings ca.Settings
		want     []string
	}{
		{"unknown key", base("certificateFlie", "x.crt"), []string{"certificateFlie: unknown key", `did you mean "certificateFile"`}},
		{"missing certificateFile", base("certificateFile", nil), []string{"certificateFile: required"}},
		{"missing keyFile", base("keyFile", nil), []string{"keyFile: required"}},
		{"certificate file does not exist", base("certificateFile", "nope.crt"), []string{`certificateFile: "nope.crt"`, "no such file"}},
		{"key file does not exist", base("keyFile", "nope.key"), []string{`keyFile: "nope.key"`, "no such file"}},
		{"no certificate in file", base("certificateFile", "empty.pem"), []string{`certificateFile: "empty.pem"`, "no PEM CERTIFICATE"}},
		{"no key in file", base("keyFile", "ca.crt"), []string{`keyFile: "ca.crt"`, "no PEM private key"}},
		{"key does not match", base("keyFile", "other.key"), []string{`keyFile "other.key"`, "does not match the certificate"}},
		{"not a CA", base("certificateFile", "leaf.crt"), []string{"not a CA certificate"}},
		{"no keyCertSign", base("certificateFile", "nosign.crt"), []string{"keyCertSign"}},
		{"encrypted PKCS#8", base("keyFile", "encrypted.key"), []string{"encrypted"}},
		{"encrypted legacy PEM", base("keyFile", "legacy-encrypted.key"), []string{"encrypted"}},
		{"X25519 key", base("keyFile", "x25519.key"), []string{"unsupported issuer key type"}},
		{"bad maxValidity", base("maxValidity", "a year"), []string{"maxValidity", `"a year" is not a duration`}},
		{"negative maxValidity", base("maxValidity", "-1h"), []string{"maxValidity", "must be positive"}},
		{"negative backdate", base("backdate", "-1m"), []string{"backdate", "must not be negative"}},
		{"wrong type", base("certificateFile", 42), []string{"certificateFile"}},
		{"missing chainFile", base("chainFile", "chain.pem"), []string{`chainFile: "chain.pem"`}},
		{"ledger in a missing directory", base("ledgerFile", "no/such/dir/ledger.jsonl"), []string{`ledgerFile: "no/such/dir/ledger.jsonl"`}},
	}
	settingOf := map[string]string{
		"unknown key": "certificateFlie", "missing certificateFile": "certificateFile", "missing keyFile": "keyFile",
		"certificate file does not exist": "certificateFile", "key file does not exist": "keyFile",
		"no certificate in file": "certificateFile", "no key in file": "keyFile", "key does not match": "certificateFile",
		"not a CA": "certificateFile", "no keyCertSign": "certificateFile", "encrypted PKCS#8": "keyFile",
		"encrypted legacy PEM": "keyFile", "X25519 key": "keyFile", "bad maxValidity": "maxValidity",
		"negative maxValidity": "maxValidity", "negative backdate": "backdate", "wrong type": "certificateFile",
		"missing chainFile": "chainFile", "ledger in a missing directory": "ledgerFile",
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.New(Type, tc.settings, ca.Env{Name: "builtin", BaseDir: dir})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tc.want, `local connector "builtin"`) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// Every settings problem names its key, so that validate reports it at
			// caConnections.<name>.<key>.
			var se *ca.SettingError
			if !errors.As(err, &se) || se.Key != settingOf[tc.name] {
				t.Errorf("error %q: not a setting error at %q", err, settingOf[tc.name])
			}
		})
	}
	// Viper lower-cases configuration keys; they must still match.
	if _, err := New(ca.Settings{"certificatefile": "ca.crt", "keyfile": "ca.key", "maxvalidity": "1h"}, ca.Env{BaseDir: dir}); err != nil {
		t.Errorf("lower-cased keys: %v", err)
	}
	if !slices.Contains(ca.Types(), Type) {
		t.Errorf("ca.Types() = %v, want %q registered", ca.Types(), Type)
	}
}

func x25519PEM(t *testing.T) *pem.Block {
	t.Helper()
	// PKCS#8 X25519 key (RFC 8410): not a signing key.
	seed := make([]byte, 32)
	inner, _ := asn1.Marshal(seed)
	der, err := asn1.Marshal(struct {
		Version int
		Algo    pkix.AlgorithmIdentifier
		Key     []byte
	}{0, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 3, 101, 110}}, inner})
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
}

func TestIssuerKeyFormats(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec := ecKey(t)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	cases := []struct {
		name   string
		key    crypto.Signer
		blocks []*pem.Block
	}{
		{"RSA PKCS#1", rsaKey, []*pem.Block{{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}}},
		{"RSA PKCS#8", rsaKey, []*pem.Block{pkcs8PEM(t, rsaKey)}},
		{"EC SEC1 with parameters block", ec, []*pem.Block{{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}}, {Type: "EC PRIVATE KEY", Bytes: sec1}}},
		{"EC PKCS#8", ec, []*pem.Block{pkcs8PEM(t, ec)}},
		{"Ed25519 PKCS#8", ed, []*pem.Block{pkcs8PEM(t, ed)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cert := makeCert(t, caSpec{key: tc.key})
			// A combined file: key and certificate together serve as both settings.
			writePEM(t, filepath.Join(dir, "ca.pem"), append(slices.Clone(tc.blocks), certPEM(cert))...)
			conn, err := New(ca.Settings{"certificateFile": "ca.pem", "keyFile": "ca.pem"}, ca.Env{BaseDir: dir})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "FORMAT")
			issued, err := conn.Issue(context.Background(), req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			catest.CheckIssued(t, req, issued, pool(cert))
		})
	}
}

func TestRefusedRequests(t *testing.T) {
	f := newFixture(t, caSpec{}, nil)
	device := catest.DeviceKey(t, catest.P256)
	goCSR := func(tmpl *x509.CertificateRequest) *ca.Request {
		t.Helper()
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, device)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		return &ca.Request{Key: "customers/C/certificateProvisioningProcesses/X", CSR: parsed, CSRDER: der, Validity: time.Hour}
	}
	kuExt := func(bits byte) pkix.Extension {
		v, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{bits}, BitLength: 8})
		return pkix.Extension{Id: oidKeyUsage(), Critical: true, Value: v}
	}
	cases := []struct {
		name string
		req  *ca.Request
		want string
	}{
		{"nil request", nil, "no request"},
		{"no CSR", &ca.Request{Key: "k"}, "no CSR"},
		{"unparseable CSR", &ca.Request{Key: "k", CSRDER: []byte("junk")}, "parse CSR"},
		{"keyCertSign", goCSR(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, ExtraExtensions: []pkix.Extension{kuExt(0x84)}}), "CA key usages"},
		{"cRLSign", goCSR(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, ExtraExtensions: []pkix.Extension{kuExt(0x82)}}), "CA key usages"},
		{"nobody", goCSR(&x509.CertificateRequest{}), "neither a subject nor subject alternative names"},
		{"malformed EKU", goCSR(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"},
			ExtraExtensions: []pkix.Extension{{Id: oidExtKeyUsage(), Value: []byte{0x05, 0x00}}}}), "extKeyUsage extension is malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			issued, err := f.conn.Issue(context.Background(), tc.req)
			if err == nil || issued != nil {
				t.Fatalf("Issue = %v, %v; want an error", issued, err)
			}
			if !ca.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want permanent, containing %q", err, tc.want)
			}
		})
	}

	t.Run("basicConstraints CA request is ignored", func(t *testing.T) {
		bc, _ := asn1.Marshal(struct {
			IsCA bool `asn1:"optional"`
		}{true})
		req := goCSR(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, DNSNames: []string{"x.example.com"},
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}}})
		issued, err := f.conn.Issue(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if issued.Leaf.IsCA {
			t.Fatal("issued a CA certificate because the CSR asked for one")
		}
	})
	t.Run("CSR given as DER only", func(t *testing.T) {
		req := catest.NewRequest(t, device, "DERONLY")
		req.CSR = nil
		issued, err := f.conn.Issue(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(issued.Leaf.RawSubjectPublicKeyInfo, req.Process.SPKI) {
			t.Error("leaf does not carry the device key")
		}
	})
	t.Run("empty subject makes the SAN critical", func(t *testing.T) {
		der := catest.SignedCSR(t, device, &csr.Request{DNSNames: []string{"only-san.example.com"}})
		parsed, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		issued, err := f.conn.Issue(context.Background(), &ca.Request{Key: "k", CSR: parsed, CSRDER: der})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range issued.Leaf.Extensions {
			if e.Id.Equal(oidSubjectAltName()) && !e.Critical {
				t.Error("SAN not critical with an empty subject")
			}
		}
		if _, err := issued.Leaf.Verify(x509.VerifyOptions{Roots: pool(f.cert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("verify: %v", err)
		}
	})
}

func TestConcurrentCounting(t *testing.T) {
	f := newFixture(t, caSpec{}, ca.Settings{"ledgerFile": "ledger.jsonl"})
	reqA := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "AAAA")
	reqB := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "BBBB")
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := reqA
			if i%4 == 0 {
				req = reqB
			}
			if _, err := f.conn.Issue(context.Background(), req); err != nil {
				t.Errorf("Issue: %v", err)
			}
			_ = f.conn.Issued(req.Key)
		})
	}
	wg.Wait()
	if a, b := f.conn.Issued(reqA.Key), f.conn.Issued(reqB.Key); a != 12 || b != 4 || f.conn.IssuedTotal() != n {
		t.Errorf("Issued A=%d B=%d total=%d, want 12, 4, %d", a, b, f.conn.IssuedTotal(), n)
	}
	counts, err := LedgerCounts(filepath.Join(f.dir, "ledger.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if counts[reqA.Key] != 12 || counts[reqB.Key] != 4 {
		t.Errorf("ledger counts %v", counts)
	}
}

func TestLedgerAcrossRestarts(t *testing.T) {
	f := newFixture(t, caSpec{}, ca.Settings{"ledgerFile": "ledger.jsonl"})
	ledger := filepath.Join(f.dir, "ledger.jsonl")
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "RESTART")
	first, err := f.conn.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	// A second connector over the same files stands for the adapter after a restart.
	again, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "ledgerFile": "ledger.jsonl"}, ca.Env{BaseDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	if again.Issued(req.Key) != 0 {
		t.Error("in-memory count survived a restart")
	}
	second, err := again.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ReadLedger(ledger)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Key != req.Key || entries[1].Key != req.Key ||
		entries[0].Serial != first.Leaf.SerialNumber.Text(16) || entries[1].Serial != second.Leaf.SerialNumber.Text(16) {
		t.Fatalf("ledger = %+v", entries)
	}
	if entries[0].Time.IsZero() || !entries[0].NotAfter.Equal(first.Leaf.NotAfter) {
		t.Errorf("entry %+v", entries[0])
	}
	fi, err := os.Stat(ledger)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ledger mode %v, %v", fi.Mode(), err)
	}

	// A line the crash cut short is skipped; a corrupt complete line is an error.
	appendFile(t, ledger, `{"key":"customers/C/certificateProvisioningProcesses/TORN","ser`)
	counts, err := LedgerCounts(ledger)
	if err != nil || counts[req.Key] != 2 || len(counts) != 1 {
		t.Errorf("counts with a torn last line = %v, %v", counts, err)
	}
	appendFile(t, ledger, "\nnot json\n")
	if _, err := ReadLedger(ledger); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("ReadLedger on a corrupt line = %v", err)
	}
	if _, err := ReadLedger(filepath.Join(f.dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadLedger on a missing file = %v", err)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLedgerWriteFailureReturnsNoCertificate(t *testing.T) {
	f := newFixture(t, caSpec{}, ca.Settings{"ledgerFile": "ledger.jsonl"})
	ledger := filepath.Join(f.dir, "ledger.jsonl")
	// Replace the ledger by a directory: opening it for writing fails.
	if err := os.Remove(ledger); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(ledger, 0o700); err != nil {
		t.Fatal(err)
	}
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "NOLEDGER")
	issued, err := f.conn.Issue(context.Background(), req)
	if err == nil || issued != nil {
		t.Fatalf("Issue = %v, %v; want an error", issued, err)
	}
	if c, _ := ca.Classify(err); c != ca.ClassRetryable {
		t.Errorf("ledger failure classified %v, want retryable", c)
	}
	if f.conn.Issued(req.Key) != 0 {
		t.Error("certificate counted although it was not returned")
	}
}

func TestCreateCA(t *testing.T) {
	cases := []struct {
		keyType string
		check   func(crypto.PublicKey) bool
	}{
		{"ecdsa", func(k crypto.PublicKey) bool {
			e, ok := k.(*ecdsa.PublicKey)
			return ok && e.Curve == elliptic.P256()
		}},
		{"", func(k crypto.PublicKey) bool { _, ok := k.(*ecdsa.PublicKey); return ok }},
		{"rsa", func(k crypto.PublicKey) bool {
			r, ok := k.(*rsa.PublicKey)
			return ok && r.N.BitLen() == 3072
		}},
	}
	for _, tc := range cases {
		t.Run("keyType "+tc.keyType, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "pki", "ca")
			certPath, keyPath, err := CreateCA(dir, tc.keyType, "Lab Root", 30*24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if certPath != filepath.Join(dir, CACertificateFile) || keyPath != filepath.Join(dir, CAKeyFile) {
				t.Errorf("paths %s %s", certPath, keyPath)
			}
			fi, err := os.Stat(keyPath)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("key file mode %v, %v; want 0600", fi.Mode(), err)
			}
			conn, err := New(ca.Settings{"certificateFile": certPath, "keyFile": keyPath}, ca.Env{})
			if err != nil {
				t.Fatalf("New over CreateCA's files: %v", err)
			}
			cert := conn.Certificate()
			if cert.Subject.CommonName != "Lab Root" || !cert.IsCA || cert.CheckSignatureFrom(cert) != nil || !tc.check(cert.PublicKey) {
				t.Errorf("CA certificate %s IsCA=%v key %T", cert.Subject, cert.IsCA, cert.PublicKey)
			}
			if d := time.Until(cert.NotAfter); d < 29*24*time.Hour || d > 31*24*time.Hour {
				t.Errorf("CA valid for %v, want about 30 days", d)
			}
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "CREATED")
			issued, err := conn.Issue(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			catest.CheckIssued(t, req, issued, pool(cert))

			before, _ := os.ReadFile(keyPath)
			if _, _, err := CreateCA(dir, tc.keyType, "", 0); !errors.Is(err, fs.ErrExist) {
				t.Errorf("second CreateCA = %v, want fs.ErrExist", err)
			}
			after, _ := os.ReadFile(keyPath)
			if !bytes.Equal(before, after) {
				t.Error("CreateCA overwrote an existing key")
			}
		})
	}
	t.Run("only the certificate exists", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, CACertificateFile), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := CreateCA(dir, "", "", 0); !errors.Is(err, fs.ErrExist) {
			t.Errorf("CreateCA = %v, want fs.ErrExist", err)
		}
		if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Error("CreateCA wrote a key next to a foreign certificate")
		}
	})
	t.Run("defaults", func(t *testing.T) {
		certPath, _, err := CreateCA(t.TempDir(), "", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		certs, err := readCertificates(certPath)
		if err != nil {
			t.Fatal(err)
		}
		if certs[0].Subject.CommonName != DefaultCACommonName || certs[0].NotAfter.Before(time.Now().Add(DefaultCAValidity-24*time.Hour)) {
			t.Errorf("defaults: %s until %s", certs[0].Subject, certs[0].NotAfter)
		}
	})
	if _, _, err := CreateCA(t.TempDir(), "dsa", "", 0); err == nil || !strings.Contains(err.Error(), `"dsa"`) {
		t.Errorf("unknown key type: %v", err)
	}
}

// Serial numbers must not repeat; 128 random bits make that a non-event, this guards the code.
func TestRandomSerial(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		s, err := randomSerial()
		if err != nil {
			t.Fatal(err)
		}
		if s.Sign() <= 0 || s.Cmp(new(big.Int).Lsh(big.NewInt(1), 128)) >= 0 || seen[s.String()] {
			t.Fatalf("bad or repeated serial %s", s)
		}
		seen[s.String()] = true
	}
}

// TestRecoverAcrossRestarts: a request interrupted after the CA issued is completed with that
// same certificate by a connector built after the restart, never with a second one.
func TestRecoverAcrossRestarts(t *testing.T) {
	f := newFixture(t, caSpec{}, ca.Settings{"ledgerFile": "ledger.jsonl"})
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.RSA2048), "RECOVER")
	ctx := context.Background()
	if got, err := f.conn.Recover(ctx, req.Key); err != nil || got != nil {
		t.Fatalf("Recover before any issuance = %v, %v", got, err)
	}
	first, err := f.conn.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for name, conn := range map[string]*Connector{"same process": f.conn, "after restart": mustNew(t, f.dir)} {
		got, err := conn.Recover(ctx, req.Key)
		if err != nil || got == nil {
			t.Fatalf("%s: Recover = %v, %v", name, got, err)
		}
		if !got.Leaf.Equal(first.Leaf) {
			t.Fatalf("%s: recovered serial %s, issued %s", name, got.Leaf.SerialNumber, first.Leaf.SerialNumber)
		}
		if len(got.Chain) == 0 || !got.Chain[0].Equal(f.cert) {
			t.Fatalf("%s: chain not returned", name)
		}
		if other, err := conn.Recover(ctx, "customers/C/certificateProvisioningProcesses/OTHER"); err != nil || other != nil {
			t.Fatalf("%s: Recover of an unknown key = %v, %v", name, other, err)
		}
	}
	counts, err := LedgerCounts(filepath.Join(f.dir, "ledger.jsonl"))
	if err != nil || counts[req.Key] != 1 {
		t.Fatalf("ledger counts %v, %v: recovering must not issue", counts, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.conn.Recover(cancelled, req.Key); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recover with a cancelled context = %v", err)
	}
}

func mustNew(t *testing.T, dir string) *Connector {
	t.Helper()
	c, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "ledgerFile": "ledger.jsonl"}, ca.Env{BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRecoverFromAnotherProcess: a replica that started before another one issued (and died)
// still finds that certificate in the shared ledger.
func TestRecoverFromAnotherProcess(t *testing.T) {
	f := newFixture(t, caSpec{}, ca.Settings{"ledgerFile": "ledger.jsonl"})
	survivor := mustNew(t, f.dir)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "TAKEOVER")
	issued, err := f.conn.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := survivor.Recover(context.Background(), req.Key)
	if err != nil || got == nil || !got.Leaf.Equal(issued.Leaf) {
		t.Fatalf("Recover on a connector started earlier = %v, %v", got, err)
	}
}
