package adapter

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/metrics/metricstest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/tlstest"
)

// reloadScene is a running adapter (Run) against the emulator, with two CAs on disk and the
// enrollment server on TLS, whose configuration file the test rewrites.
type reloadScene struct {
	t          *testing.T
	emu        *emulator.Emulator
	a          *Adapter
	logs       *observer.ObservedLogs
	dir, path  string
	pubsub     string
	rest       string
	listen     string
	ca1, ca2   caFiles
	tlsDir     string
	tlsC, tlsK string
}

type caFiles struct {
	cert, key string
	roots     *x509.CertPool
}

func newCAFiles(t *testing.T, dir, name string) caFiles {
	t.Helper()
	cert, key, err := local.CreateCA(filepath.Join(dir, name), "ecdsa", name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pemutil.ReadCertificates(cert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(certs[0])
	return caFiles{cert: cert, key: key, roots: roots}
}

// yaml is the adapter's configuration: the profile "device" and, with extra, more YAML
// appended to the profiles section; builtin is the CA connection's files.
func (s *reloadScene) yaml(instanceID string, builtin caFiles, keyFile, tlsCert string, extraProfiles string) string {
	return fmt.Sprintf(`instanceId: %s
customers: [C0demo]
pubsub: {project: p, subscription: s, endpoint: %q, insecure: true}
google: {credentials: {type: none}, endpoint: %q}
journal: {type: memory}
engine: {pollInterval: 20ms, maxPollInterval: 200ms}
log: {level: info}
ops: {listen: "127.0.0.1:0"}
audit: {path: audit.jsonl}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}, extendedKeyUsage: [clientAuth]}
%scaConnections:
  builtin: {type: local, certificateFile: %q, keyFile: %q}
verifiedAccess:
  enabled: true
  listen: %q
  tls: {certFile: %q, keyFile: %q}
  endpoint: %q
  profiles:
    wifi: {enrollmentDomain: example.com, caConnection: builtin, subject: {commonName: x}}
`, instanceID, s.pubsub, s.rest+"/", extraProfiles, builtin.cert, keyFile, s.listen, tlsCert, s.tlsK, s.rest+"/")
}

func (s *reloadScene) write(content string) {
	s.t.Helper()
	if err := os.WriteFile(s.path, []byte(content), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

func newReloadScene(t *testing.T) *reloadScene {
	t.Helper()
	ctx := context.Background()
	core, logs := observer.New(zapcore.InfoLevel)
	log := zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return zapcore.NewTee(c, core) })))
	emu, rest := startEmulator(t, log)
	dir := t.TempDir()
	s := &reloadScene{t: t, emu: emu, logs: logs, dir: dir, path: filepath.Join(dir, "adapter.yaml"),
		pubsub: emu.PubSubAddr(), rest: rest.URL, listen: freeLoopbackAddr(t),
		ca1: newCAFiles(t, dir, "ca1"), ca2: newCAFiles(t, dir, "ca2"), tlsDir: filepath.Join(dir, "tls")}
	if err := os.Mkdir(s.tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	s.tlsC, s.tlsK = tlstest.WriteServerCert(t, s.tlsDir, 1)
	s.write(s.yaml("a1", s.ca1, s.ca1.key, s.tlsC, ""))
	cfg, err := config.Load(s.path)
	if err != nil {
		t.Fatal(err)
	}
	s.a, err = New(ctx, cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.a.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done; _ = s.a.Close() })
	waitFor(t, 10*time.Second, func() bool {
		conn, err := (&net.Dialer{}).Dial("tcp", s.listen)
		if err == nil {
			_ = conn.Close()
		}
		return err == nil
	})
	return s
}

// provision runs one process with profile and returns the certificate the device received.
func (s *reloadScene) provision(profile string) *x509.Certificate {
	s.t.Helper()
	name, err := s.emu.StartProcess(context.Background(), emulator.ProcessSpec{Customer: "C0demo", ProfileRef: profile, CARef: "builtin"})
	if err != nil {
		s.t.Fatal(err)
	}
	var snap emulator.Snapshot
	waitFor(s.t, 30*time.Second, func() bool { snap, _ = s.emu.Process(name); return snap.Finished() })
	if snap.State != emulator.StateIssued {
		s.t.Fatalf("%s (profile %s): %s %q", name, profile, snap.State, snap.FailureMessage)
	}
	certs, err := pemutil.ParseCertificates([]byte(snap.CertificatePEM))
	if err != nil {
		s.t.Fatal(err)
	}
	return certs[0]
}

func chainsTo(c *x509.Certificate, roots *x509.CertPool) bool {
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// A reload with a broken file — YAML that does not parse, a CA key that is not the
// certificate's, a TLS certificate file that is missing — is refused and changes nothing: the
// old CA still issues, the old TLS certificate is served. A good one applies at once: a new
// profile works, the CA connection is the new CA, the new TLS certificate is served, and a key
// that needs a restart is named in a warning.
func TestReload(t *testing.T) {
	s := newReloadScene(t)
	if leaf := s.provision("device"); !chainsTo(leaf, s.ca1.roots) {
		t.Fatal("first certificate not from CA 1")
	}
	if got := tlstest.ServedSerial(t, s.listen); got != 1 {
		t.Fatalf("serving TLS serial %d", got)
	}
	added := "  added: {subject: {commonName: \"added-{{.Device.SerialNumber}}\"}, extendedKeyUsage: [clientAuth]}\n"
	broken := map[string]string{
		"bad YAML":                     "instanceId: [a1\n",
		"CA key of another CA":         s.yaml("a1", s.ca1, s.ca2.key, s.tlsC, added),
		"missing TLS certificate file": s.yaml("a1", s.ca2, s.ca2.key, filepath.Join(s.tlsDir, "gone.crt"), added),
	}
	for _, name := range []string{"bad YAML", "CA key of another CA", "missing TLS certificate file"} {
		s.write(broken[name])
		if err := s.a.ReloadFile(s.path); err == nil {
			t.Fatalf("%s: reload accepted", name)
		}
		if leaf := s.provision("device"); !chainsTo(leaf, s.ca1.roots) || chainsTo(leaf, s.ca2.roots) {
			t.Fatalf("%s: after the refused reload the certificate is not from CA 1", name)
		}
		if got := tlstest.ServedSerial(t, s.listen); got != 1 {
			t.Fatalf("%s: serving TLS serial %d after a refused reload", name, got)
		}
	}
	reloads := metrics.NewAdapter(s.a.Registry).Reloads
	if got := testutil.ToFloat64(reloads.WithLabelValues(metrics.ReloadRefused)); got != 3 {
		t.Fatalf("config_reloads_total{refused} = %v", got)
	}
	if n := s.logs.FilterMessage("configuration reload refused; the running configuration stays").Len(); n != 3 {
		t.Fatalf("%d refusals logged", n)
	}

	tlsCert, _ := tlstest.WriteServerCert(t, s.tlsDir, 2)
	s.write(s.yaml("a2", s.ca2, s.ca2.key, tlsCert, added))
	if err := s.a.ReloadFile(s.path); err != nil {
		t.Fatalf("good reload: %v", err)
	}
	for _, profile := range []string{"device", "added"} {
		leaf := s.provision(profile)
		if !chainsTo(leaf, s.ca2.roots) || chainsTo(leaf, s.ca1.roots) {
			t.Errorf("profile %s: after the reload the certificate is not from CA 2", profile)
		}
		if profile == "added" && !strings.HasPrefix(leaf.Subject.CommonName, "added-") {
			t.Errorf("the new profile was not used: %s", leaf.Subject)
		}
	}
	if got := tlstest.ServedSerial(t, s.listen); got != 2 {
		t.Fatalf("serving TLS serial %d after the reload, want 2", got)
	}
	if got := testutil.ToFloat64(reloads.WithLabelValues(metrics.ReloadApplied)); got != 1 {
		t.Fatalf("config_reloads_total{applied} = %v", got)
	}
	// The expiry metrics follow the swap: CA 2's certificate for builtin, TLS serial 2.
	ca2, err := pemutil.ReadCertificates(s.ca2.cert)
	if err != nil {
		t.Fatal(err)
	}
	expiry := map[string]string{}
	for _, l := range metricstest.Labels(metricstest.Gather(t, s.a.Registry), "certprov_certificate_expiry_timestamp_seconds") {
		expiry[l["kind"]+"/"+l["name"]+"/"+l["role"]] = l["serial"]
	}
	if got := expiry["ca_connection/builtin/issuer"]; got != ca2[0].SerialNumber.Text(16) {
		t.Errorf("builtin issuer serial %q after the reload, want CA 2's %s (all: %v)", got, ca2[0].SerialNumber.Text(16), expiry)
	}
	if got := expiry["verified_access/server/server"]; got != "2" {
		t.Errorf("enrollment server certificate serial %q after the reload, want 2", got)
	}
	warn := s.logs.FilterMessage("configuration keys changed that take effect only after a restart; running with their old values").All()
	if len(warn) != 1 {
		t.Fatalf("%d restart warnings", len(warn))
	}
	keys, _ := warn[0].ContextMap()["keys"].([]any)
	if len(keys) != 1 || keys[0] != "instanceId" {
		t.Fatalf("restart warning names %v; want [instanceId] (profiles, CAs and TLS are live)", keys)
	}
}

func TestRestartKeys(t *testing.T) {
	base := config.Defaults()
	next := base
	next.Customers = []string{"C0new"}
	next.Google.RateLimit.Burst = 99
	next.Log.Level = "debug"
	next.VerifiedAccess.TLS.CertFile = "new.crt"
	if got := restartKeys(&base, &next); len(got) != 0 {
		t.Errorf("live keys reported as needing a restart: %v", got)
	}
	next.Journal.Type = config.JournalPostgres
	next.PubSub.Subscription = "other"
	next.VerifiedAccess.Listen = "0.0.0.0:9443"
	next.Log.Format = "console"
	next.Engine.Retry.MaxDuration = time.Minute
	want := []string{"pubsub.subscription", "engine.retry.maxDuration", "journal.type", "log.format", "verifiedAccess.listen"}
	if got := restartKeys(&base, &next); !slices.Equal(got, want) {
		t.Errorf("restartKeys = %v, want %v", got, want)
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	clocktest.WaitFor(t, "the condition", timeout, cond)
}
