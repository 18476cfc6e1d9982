package testservers

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// StepCA is a real smallstep step-ca made by `step ca init` (deploy/local/servers/step-ca.sh
// builds both binaries): its root, intermediate and the files a connector needs. Start and
// Stop run and end the server; a stopped CA can be started again on the same address.
type StepCA struct {
	URL          string // https://127.0.0.1:port
	Addr         string
	Fingerprint  string // SHA-256 of the root, hex
	Root         *x509.Certificate
	Roots        *x509.CertPool
	Intermediate *x509.Certificate // step-ca's issuing CA, below Root
	// Anchors trusts root and intermediate, for checks of a lone uploaded leaf (the adapter
	// uploads no chain); use Roots with Intermediate to prove the whole path.
	Anchors      *x509.CertPool
	Dir          string // STEPPATH
	RootFile     string // the root, PEM
	PasswordFile string // the CA's (and the first provisioner's) password, with a trailing newline

	stepCA string
	home   string
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	log    *LockedBuffer
}

// StepCABinaries returns the step-ca and step binaries, skipping (or, in CI, failing) the test
// when they are not installed.
func StepCABinaries(t testing.TB) (stepCA, step string) {
	t.Helper()
	return Binary(t, "step-ca"), Binary(t, "step")
}

// InitStepCA runs `step ca init` in dir for a CA listening on addr, with a JWK provisioner
// named provisioner whose key is encrypted with password, then lets edit change ca.json (add
// provisioners, policies, a CRL) before the CA first starts; edit may use the CA's fields
// (Dir, Root, Intermediate). It does not start it.
func InitStepCA(stepCABin, stepBin, dir, addr, provisioner, password string, edit func(s *StepCA, cfg map[string]any) error) (*StepCA, error) {
	s := &StepCA{
		URL: "https://" + addr, Addr: addr, Dir: filepath.Join(dir, "step"), PasswordFile: filepath.Join(dir, "password"),
		stepCA: stepCABin, home: dir, log: &LockedBuffer{},
	}
	// A trailing newline, as an editor leaves it: connectors must ignore it as step does.
	if err := os.WriteFile(s.PasswordFile, []byte(password+"\n"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(stepBin, "ca", "init", "--deployment-type", "standalone", "--name", "certprov test CA",
		"--dns", "127.0.0.1", "--address", addr, "--provisioner", provisioner,
		"--password-file", s.PasswordFile, "--provisioner-password-file", s.PasswordFile)
	cmd.Env = append(os.Environ(), "STEPPATH="+s.Dir, "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("step ca init: %w\n%s", err, out)
	}
	var err error
	s.RootFile = filepath.Join(s.Dir, "certs", "root_ca.crt")
	if s.Root, err = readPEMCert(s.RootFile); err != nil {
		return nil, err
	}
	if s.Intermediate, err = readPEMCert(filepath.Join(s.Dir, "certs", "intermediate_ca.crt")); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(s.Root.Raw)
	s.Fingerprint = hex.EncodeToString(sum[:])
	s.Roots = x509.NewCertPool()
	s.Roots.AddCert(s.Root)
	s.Anchors = x509.NewCertPool()
	s.Anchors.AddCert(s.Root)
	s.Anchors.AddCert(s.Intermediate)
	if edit != nil {
		if err := s.editConfig(edit); err != nil {
			return nil, fmt.Errorf("edit ca.json: %w", err)
		}
	}
	return s, nil
}

func readPEMCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

func (s *StepCA) editConfig(edit func(s *StepCA, cfg map[string]any) error) error {
	path := filepath.Join(s.Dir, "config", "ca.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return err
	}
	if err := edit(s, cfg); err != nil {
		return err
	}
	out, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o600)
}

// Start runs step-ca and waits until it answers /health.
func (s *StepCA) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.stepCA, filepath.Join(s.Dir, "config", "ca.json"), "--password-file", s.PasswordFile)
	cmd.Env = append(os.Environ(), "STEPPATH="+s.Dir, "HOME="+s.home)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start step-ca: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.Roots, MinVersion: tls.VersionTLS12},
	}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("step-ca exited during startup:\n%s", s.log)
		default:
		}
		resp, err := client.Get(s.URL + "/health")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("step-ca did not answer /health at %s (last error %v):\n%s", s.URL, err, s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills step-ca and waits for it; stopping a stopped CA does nothing.
func (s *StepCA) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// IntermediateKey decrypts the intermediate's key (encrypted by `step ca init` with the CA
// password, as legacy PEM encryption), for tests that issue certificates under it themselves,
// such as an RA certificate.
func (s *StepCA) IntermediateKey(password string) (crypto.Signer, error) {
	b, err := os.ReadFile(filepath.Join(s.Dir, "secrets", "intermediate_ca_key"))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("intermediate_ca_key: no PEM")
	}
	der := block.Bytes
	//lint:ignore SA1019 legacy PEM encryption is the format `step ca init` writes
	if x509.IsEncryptedPEMBlock(block) {
		//lint:ignore SA1019 as above
		if der, err = x509.DecryptPEMBlock(block, []byte(password)); err != nil {
			return nil, fmt.Errorf("intermediate_ca_key: %w", err)
		}
	}
	return x509.ParseECPrivateKey(der)
}

// Log is the end of what step-ca printed, for failure messages.
func (s *StepCA) Log() string { return s.log.String() }

// StartStepCA initialises and starts a step-ca of the test's own in a temporary directory,
// stopped when the test ends, with ca.json changed by edit.
func StartStepCA(t testing.TB, provisioner, password string, edit func(s *StepCA, cfg map[string]any) error) *StepCA {
	t.Helper()
	stepCA, step := StepCABinaries(t)
	s, err := InitStepCA(stepCA, step, t.TempDir(), FreeAddr(t), provisioner, password, edit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("step-ca log:\n%s", s.Log())
		}
	})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// LockedBuffer collects a server's output for failure messages; safe for concurrent writes.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is the last 4000 bytes written.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > 4000 {
		s = "…" + s[len(s)-4000:]
	}
	return s
}
