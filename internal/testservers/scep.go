package testservers

import (
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// SCEPServer is a running micromdm scepserver.
type SCEPServer struct {
	URL   string            // the SCEP endpoint, http://127.0.0.1:port/scep
	CA    *x509.Certificate // the server's CA, which signs what it issues
	Depot string            // the server's file depot: its CA and every certificate it issued

	t       testing.TB
	bin     string
	args    []string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error
	log    *os.File
}

// StartSCEP runs the real scepserver on loopback with a new CA until the test ends (skipped
// locally, failing in CI, when it is not installed). An empty challenge runs it without one.
func StartSCEP(t testing.TB, challenge string) *SCEPServer {
	t.Helper()
	bin := Binary(t, "scepserver")
	dir := t.TempDir()
	depot := filepath.Join(dir, "depot")
	if out, err := exec.Command(bin, "ca", "-init", "-keySize", "2048", "-depot", depot, "-common_name", "certprov scepserver test CA").CombinedOutput(); err != nil {
		t.Fatalf("scepserver ca -init: %v\n%s", err, out)
	}
	addr := FreeAddr(t)
	// -allowrenew 0: tests reuse subjects, which scepserver otherwise refuses for 14 days.
	args := []string{"-depot", depot, "-http-addr", addr, "-allowrenew", "0", "-crtvalid", "2"}
	if challenge != "" {
		args = append(args, "-challenge", challenge)
	}
	s := &SCEPServer{URL: "http://" + addr + "/scep", Depot: depot, t: t, bin: bin, args: args, logPath: filepath.Join(dir, "scepserver.log")}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(s.logPath); err == nil {
				t.Logf("scepserver log:\n%s", b)
			}
		}
	})
	s.Start()
	pemBytes, err := os.ReadFile(filepath.Join(depot, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("scepserver ca.pem: no PEM")
	}
	if s.CA, err = x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatal(err)
	}
	return s
}

// Stop kills the server, as a crash or an outage would; the address stays reserved for Start.
// It does nothing when the server is not running.
func (s *SCEPServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	_ = s.log.Close()
	s.cmd = nil
}

// Start runs the server (again, after Stop) on its address with its depot, and returns once
// it answers GetCACaps.
func (s *SCEPServer) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		s.t.Fatalf("start scepserver: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.cmd, s.exited, s.log = cmd, exited, logFile
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for Stop
			b, _ := os.ReadFile(s.logPath)
			s.t.Fatalf("scepserver exited: %v\n%s", err, b)
		default:
		}
		resp, err := http.Get(s.URL + "?operation=GetCACaps")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("scepserver at %s did not answer GetCACaps: %v", s.URL, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
