package testservers

import (
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// SCEPServer is a running micromdm scepserver.
type SCEPServer struct {
	URL   string            // the SCEP endpoint, http://127.0.0.1:port/scep
	CA    *x509.Certificate // the server's CA, which signs what it issues
	Depot string            // the server's file depot: its CA and every certificate it issued
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
	logPath := filepath.Join(dir, "scepserver.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start scepserver: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("scepserver log:\n%s", b)
			}
		}
	})
	url := "http://" + addr + "/scep"
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("scepserver exited: %v\n%s", err, b)
		default:
		}
		resp, err := http.Get(url + "?operation=GetCACaps")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("scepserver at %s did not answer GetCACaps: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	pemBytes, err := os.ReadFile(filepath.Join(depot, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("scepserver ca.pem: no PEM")
	}
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &SCEPServer{URL: url, CA: caCert, Depot: depot}
}
