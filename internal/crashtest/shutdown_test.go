package crashtest

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// scepChallenge is the static challenge password the test scepserver wants.
const scepChallenge = "5D2C8E4F1A3B6C7D"

// writeShutdownConfig writes the configuration of an adapter that enrols through the SCEP
// connector at scepURL (a connector that cannot recover an interrupted request) on a SQLite
// journal, logging at info so that its stop can be followed.
func (w *world) writeShutdownConfig(name, pubsubEndpoint, scepURL string, grace time.Duration) string {
	w.t.Helper()
	cfg := fmt.Sprintf(`instanceId: stop-adapter-1
customers: [%s]
shutdownGracePeriod: %s
pubsub:
  project: crash
  subscription: adapter
  endpoint: %s
  insecure: true
google:
  endpoint: %s/
  credentials: {type: none}
  rateLimit: {requestsPerSecond: 500, burst: 100}
  requestTimeout: 5s
engine:
  pollInterval: 100ms
  maxPollInterval: 500ms
  retry: {initialBackoff: 100ms, maxBackoff: 1s, maxDuration: 5m}
journal:
  type: sqlite
  path: %s
log: {level: info, format: json}
ops: {listen: "127.0.0.1:0"}
profiles:
  device:
    subject: {commonName: "{{.Device.SerialNumber}}"}
    extendedKeyUsage: [clientAuth]
    validity: 24h
    signDeadline: 10m
caConnections:
  scep:
    type: scep
    url: %s
    challenge: %s
    signerKeyFile: scep-signer.key
    signerCertFile: scep-signer.crt
    timeout: 5m
`, customer, grace, pubsubEndpoint, w.restURL, filepath.Join(w.dir, name+".db"), scepURL, scepChallenge)
	path := filepath.Join(w.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return path
}

func (p *adapterProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", sig, err)
	}
}

// waitLog waits until the adapter logged a line containing text.
func (p *adapterProc) waitLog(t *testing.T, text string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.output(), text) {
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("the adapter did not log %q (exited: %v); its log:\n%s", text, p.exited(), p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExit waits for the adapter to exit and returns its exit code.
func (p *adapterProc) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("the adapter did not exit within %s; its log:\n%s", timeout, p.output())
		return -1
	}
}

// stopScene is a running adapter whose one process has its CA answer held by the proxy.
type stopScene struct {
	w       *world
	scep    *testservers.SCEPServer
	proxy   *holdingProxy
	config  string
	adapter *adapterProc
	process string
	logs    string // of every adapter run, once finish returned
}

func newStopScene(t *testing.T, grace time.Duration) *stopScene {
	w := newWorld(t)
	scep := testservers.StartSCEP(t, scepChallenge)
	proxy := newHoldingProxy(t, scep.URL)
	s := &stopScene{w: w, scep: scep, proxy: proxy, config: w.writeShutdownConfig("stop", w.emu.PubSubAddr(), proxy.URL, grace)}
	s.adapter = w.startAdapter(s.config)
	name, err := w.emu.StartProcess(context.Background(), emulator.ProcessSpec{Customer: customer, ProfileRef: "device", CARef: "scep"})
	if err != nil {
		t.Fatal(err)
	}
	s.process = name
	proxy.waitHeld(t, time.Minute)
	return s
}

// finish restarts the adapter when the process has not ended yet, waits for it to end and
// returns its final state; the adapter logs are checked for a decided failure.
func (s *stopScene) finish(t *testing.T) emulator.Snapshot {
	t.Helper()
	logs := s.adapter.output()
	if snap, _ := s.w.emu.Process(s.process); !snap.Finished() {
		again := s.w.startAdapter(s.config)
		s.w.waitAll([]string{s.process}, time.Minute)
		again.stop()
		logs += again.output()
	}
	snap, _ := s.w.emu.Process(s.process)
	if !snap.Finished() {
		t.Fatalf("process unfinished in state %s; logs:\n%s", snap.State, logs)
	}
	if snap.SignDataCount != 1 {
		t.Errorf("signData requested %d times", snap.SignDataCount)
	}
	if n := depotCounts(t, s.scep.Depot)[string(snap.SPKI)]; n != 1 {
		t.Errorf("the CA issued %d certificates for the device key, want 1", n)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("adapter logs:\n%s", logs)
		}
	})
	s.logs = logs
	return snap
}

// TestGracefulStopDuringCACall stops the adapter (SIGTERM) while the CA has issued but its
// answer is still on the way, with a connector that cannot recover an interrupted request: the
// adapter waits for the answer, journals it, exits 0, and the process ends with that one
// certificate uploaded — not failed.
func TestGracefulStopDuringCACall(t *testing.T) {
	s := newStopScene(t, 20*time.Second)
	s.adapter.signal(t, syscall.SIGTERM)
	s.adapter.waitLog(t, "shutting down, waiting up to 20s for 1 in-flight steps", 10*time.Second)
	s.proxy.releaseAll()
	if code := s.adapter.waitExit(t, time.Minute); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; log:\n%s", code, s.adapter.output())
	}
	snap := s.finish(t)
	if _, err := emulator.VerifyIssued(snap, poolOf(s.scep.CA), nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s.logs, "process will fail") {
		t.Fatal("a failure was decided for the process")
	}
}

// TestSecondSignalCutsTheStopShort: a second SIGTERM during the grace period ends the wait at
// once, with a non-zero exit, while the CA answer is still held. The process then ends as after
// a crash: never with a second certificate.
func TestSecondSignalCutsTheStopShort(t *testing.T) {
	s := newStopScene(t, 2*time.Minute)
	s.adapter.signal(t, syscall.SIGTERM)
	s.adapter.waitLog(t, "shutting down, waiting up to 2m0s for 1 in-flight steps", 10*time.Second)
	s.adapter.signal(t, syscall.SIGTERM)
	// The answer stays held, so only the second signal can end the wait before two minutes.
	if code := s.adapter.waitExit(t, 30*time.Second); code == 0 {
		t.Fatal("exit code 0 after a cut-short stop")
	}
	if !strings.Contains(s.adapter.output(), "second signal; stopping without waiting for in-flight steps") {
		t.Fatalf("the second signal was not logged:\n%s", s.adapter.output())
	}
	s.proxy.releaseAll()
	snap := s.finish(t)
	t.Logf("after the cut-short stop the process ended %s: %s", snap.State, snap.FailureMessage)
}

// TestStopWithPubSubUnreachable: SIGTERM ends the adapter promptly, exit 0, although its Pub/Sub
// client is still trying to open a stream, to a closed port or to one that accepts TCP and
// never speaks gRPC.
func TestStopWithPubSubUnreachable(t *testing.T) {
	closed := testservers.FreeAddr(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	const grace = 3 * time.Second
	tests := []struct {
		name, endpoint, waitFor string
	}{
		// Refused connections fail at once and are reported; the silent port only after gRPC's
		// 20 s connect timeout, so there the test stops the adapter before any report.
		{"closed port", closed, "cannot open a Pub/Sub stream"},
		{"silent port", silent.Addr().String(), "adapter running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			p := w.startAdapter(w.writeShutdownConfig("unreachable", tt.endpoint, "http://"+testservers.FreeAddr(t)+"/scep", grace))
			p.waitLog(t, tt.waitFor, 30*time.Second)
			p.signal(t, syscall.SIGTERM)
			start := time.Now()
			// Bound: the grace period, the margin for the parts and the Pub/Sub close, and slack.
			if code := p.waitExit(t, grace+15*time.Second); code != 0 {
				t.Fatalf("exit code %d, want 0; log:\n%s", code, p.output())
			}
			t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
		})
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
