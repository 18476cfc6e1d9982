package stepca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// The real step-ca the integration tests run against (deploy/local/servers/step-ca.sh builds it).

const (
	// adminProvisioner is the JWK provisioner `step ca init` creates; its key is encrypted with
	// the CA password, in the format step writes.
	adminProvisioner = "adapter"
	// keyFileProvisioner is a JWK provisioner whose private key the test holds (for
	// provisionerKeyFile); its encrypted key uses the same password.
	keyFileProvisioner = "keyfile"
	// restrictedProvisioner signs only names under allowedSuffix: its x509 template fails for
	// any other SAN, the way a CA operator restricts a provisioner.
	restrictedProvisioner = "restricted"
	// x5cProvisioner is an X5C provisioner: tokens signed by a certificate under x5cRoot.
	x5cProvisioner = "x5c-devices"
	allowedSuffix  = ".allowed.example.com"
	caPassword     = "correct horse battery staple"
)

// restrictedTemplate is the x509 template of the restricted provisioner.
const restrictedTemplate = `{{- range .SANs }}{{ if not (hasSuffix "` + allowedSuffix + `" .Value) }}{{ fail (printf "%s is outside the names this provisioner may sign (*` + allowedSuffix + `)" .Value) }}{{ end }}{{ end -}}
{
	"subject": {{ toJson .Subject }},
	"sans": {{ toJson .SANs }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["clientAuth"]
}`

// stepCA is a running step-ca with the provisioners these tests use.
type stepCA struct {
	*testservers.StepCA
	KeyFile string // private JWK of keyFileProvisioner
	// X5C credentials: under the X5C provisioner's root, and under a root it does not trust.
	X5CCertFile, X5CKeyFile     string
	ShortCertFile, ShortKeyFile string // under the provisioner's root, valid for two hours
	ForeignCertFile, ForeignKey string

	dir string // temp dir holding everything
}

type bins struct{ stepCA, step string }

// caOptions change the CA's ca.json before it starts.
type caOptions struct {
	// policy is the authority-wide x509 name policy ("allow"/"deny" blocks), nil for none.
	policy map[string]any
}

func binaries(t testing.TB) bins {
	t.Helper()
	return bins{stepCA: testservers.Binary(t, "step-ca"), step: testservers.Binary(t, "step")}
}

// shared is one CA for the tests that do not need a CA of their own, started on first use and
// stopped by TestMain: `step ca init` and the CA's startup cost seconds each.
var shared struct {
	once sync.Once
	ca   *stepCA
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.ca != nil {
		shared.ca.stop()
		_ = os.RemoveAll(shared.ca.dir)
	}
	os.Exit(code)
}

// sharedCA returns the shared CA (skipping or failing the test when step-ca is not installed).
func sharedCA(t testing.TB) *stepCA {
	t.Helper()
	b := binaries(t)
	addr := testservers.FreeAddr(t) // unused once the CA runs; cheap
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "certprov-stepca-")
		if err != nil {
			shared.err = err
			return
		}
		shared.ca, shared.err = initCA(b, dir, addr, caOptions{})
		if shared.err == nil {
			shared.err = shared.ca.start()
		}
	})
	if shared.err != nil {
		t.Fatalf("shared step-ca: %v", shared.err)
	}
	if shared.ca == nil {
		t.Fatal("shared step-ca: did not start")
	}
	return shared.ca
}

// newCA initialises and starts a CA of the test's own, stopped when the test ends.
func newCA(t testing.TB, o caOptions) *stepCA {
	t.Helper()
	s, err := initCA(binaries(t), t.TempDir(), testservers.FreeAddr(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// initCA runs `step ca init` in a fresh STEPPATH and adds the test's provisioners to ca.json.
func initCA(b bins, dir, addr string, o caOptions) (*stepCA, error) {
	s := &stepCA{KeyFile: filepath.Join(dir, "keyfile.jwk"), dir: dir}
	var err error
	s.StepCA, err = testservers.InitStepCA(b.stepCA, b.step, dir, addr, adminProvisioner, caPassword,
		func(_ *testservers.StepCA, cfg map[string]any) error { return s.editConfig(cfg, o) })
	if err != nil {
		return nil, err
	}
	return s, nil
}

// editConfig adds the keyfile, restricted and X5C provisioners, a CRL and the options to ca.json.
func (s *stepCA) editConfig(cfg map[string]any, o caOptions) error {
	auth, ok := cfg["authority"].(map[string]any)
	if !ok {
		return errors.New("no authority block")
	}
	provs, _ := auth["provisioners"].([]any)
	kf, priv, err := makeProvisioner(keyFileProvisioner, nil)
	if err != nil {
		return err
	}
	privJSON, err := json.Marshal(priv)
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.KeyFile, privJSON, 0o600); err != nil {
		return err
	}
	rp, _, err := makeProvisioner(restrictedProvisioner, map[string]any{"x509": map[string]any{"template": restrictedTemplate}})
	if err != nil {
		return err
	}
	x5cRoot, err := s.writeX5C()
	if err != nil {
		return err
	}
	x5c := map[string]any{"type": "X5C", "name": x5cProvisioner, "roots": pemutil.Encode(x5cRoot)}
	auth["provisioners"] = append(provs, kf, rp, x5c)
	if o.policy != nil {
		auth["policy"] = map[string]any{"x509": o.policy}
	}
	// A CRL at /1.0/crl, signed again on every revocation: where the tests see what was revoked.
	cfg["crl"] = map[string]any{"enabled": true, "generateOnRevoke": true}
	return nil
}

// writeX5C makes the X5C provisioner's root and writes two credentials: one under that root, one
// under a root of its own (which step-ca must refuse). It returns the provisioner's root.
func (s *stepCA) writeX5C() (*x509.Certificate, error) {
	s.X5CCertFile, s.X5CKeyFile = filepath.Join(s.dir, "x5c.crt"), filepath.Join(s.dir, "x5c.key")
	s.ShortCertFile, s.ShortKeyFile = filepath.Join(s.dir, "short.crt"), filepath.Join(s.dir, "short.key")
	s.ForeignCertFile, s.ForeignKey = filepath.Join(s.dir, "foreign.crt"), filepath.Join(s.dir, "foreign.key")
	var (
		root    *x509.Certificate
		rootKey *ecdsa.PrivateKey
	)
	for i, files := range [][2]string{{s.X5CCertFile, s.X5CKeyFile}, {s.ShortCertFile, s.ShortKeyFile}, {s.ForeignCertFile, s.ForeignKey}} {
		now := time.Now()
		if i == 1 { // the short credential: the same root, two hours
			if err := writeX5CLeaf(files, root, rootKey, now, 2*time.Hour); err != nil {
				return nil, err
			}
			continue
		}
		key0, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "adapter X5C root"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
		rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, key0.Public(), key0)
		if err != nil {
			return nil, err
		}
		r, _ := x509.ParseCertificate(rootDER)
		if root == nil {
			root, rootKey = r, key0
		}
		if err := writeX5CLeaf(files, r, key0, now, 47*time.Hour); err != nil {
			return nil, err
		}
	}
	return root, nil
}

// writeX5CLeaf writes a clientAuth credential issued by root, valid for lifetime from now.
func writeX5CLeaf(files [2]string, root *x509.Certificate, rootKey *ecdsa.PrivateKey, now time.Time, lifetime time.Duration) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()),
		Subject: pkix.Name{CommonName: "certprov-adapter"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(lifetime),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, root, key.Public(), rootKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(files[0], pemutil.EncodeCertificateDER(leafDER), 0o600); err != nil {
		return err
	}
	return os.WriteFile(files[1], pemutil.EncodePrivateKey(keyDER), 0o600)
}

// makeProvisioner makes a JWK provisioner entry as step would: a P-256 key whose kid is its
// thumbprint, the private JWK encrypted with the CA password (PBES2, A256GCM).
func makeProvisioner(name string, options map[string]any) (map[string]any, *jose.JSONWebKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	priv := &jose.JSONWebKey{Key: key, Algorithm: string(jose.ES256), Use: "sig"}
	tp, err := priv.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, nil, err
	}
	priv.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	plain, err := json.Marshal(priv)
	if err != nil {
		return nil, nil, err
	}
	enc, err := jose.NewEncrypter(jose.A256GCM,
		jose.Recipient{Algorithm: jose.PBES2_HS256_A128KW, Key: []byte(caPassword), PBES2Count: 100000},
		(&jose.EncrypterOptions{}).WithContentType("jwk+json"))
	if err != nil {
		return nil, nil, err
	}
	obj, err := enc.Encrypt(plain)
	if err != nil {
		return nil, nil, err
	}
	compact, err := obj.CompactSerialize()
	if err != nil {
		return nil, nil, err
	}
	pub := priv.Public()
	entry := map[string]any{"type": "JWK", "name": name, "key": pub, "encryptedKey": compact}
	if options != nil {
		entry["options"] = options
	}
	return entry, priv, nil
}

func (s *stepCA) start() error { return s.Start() }
func (s *stepCA) stop()        { s.Stop() }

// crlStatus fetches the CA's CRL, as a relying party would, checks it is signed by the issuing
// CA, and says whether serial is on it and why.
func (s *stepCA) crlStatus(t testing.TB, serial *big.Int) (bool, ca.Reason) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.Roots, MinVersion: tls.VersionTLS12},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(s.URL + "/1.0/crl")
	if err != nil {
		t.Fatalf("GET /1.0/crl: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /1.0/crl: HTTP %d %s %v", resp.StatusCode, b, err)
	}
	rl, err := x509.ParseRevocationList(b)
	if err != nil {
		t.Fatalf("step-ca CRL: %v", err)
	}
	if err := rl.CheckSignatureFrom(s.Intermediate); err != nil {
		t.Fatalf("step-ca CRL not signed by the intermediate: %v", err)
	}
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return true, ca.Reason(e.ReasonCode)
		}
	}
	return false, 0
}

// settings are the connector settings for provisioner p of this CA, with a password file.
func (s *stepCA) settings(p string) ca.Settings {
	return ca.Settings{
		"url":                     s.URL,
		"rootFingerprint":         s.Fingerprint,
		"provisioner":             p,
		"provisionerPasswordFile": s.PasswordFile,
	}
}

// connector builds a connector for provisioner p, failing the test on error.
func (s *stepCA) connector(t testing.TB, p string) *Connector {
	t.Helper()
	c, err := New(s.settings(p), ca.Env{Name: "stepca-test"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
