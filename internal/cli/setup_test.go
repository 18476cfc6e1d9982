package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/pubsubsetup"
)

// googleScene is Google's side for the commands to talk to: the emulator in project doc with
// its topic (projects/doc/topics/certprov) and the subscription named, serving REST on loopback,
// and a directory whose ca/ holds a built-in CA (ca/ca.crt, ca/ca.key).
type googleScene struct {
	emu    *emulator.Emulator
	rest   *httptest.Server
	dir    string
	caCert string
}

func newGoogleScene(t *testing.T, subscription string) *googleScene {
	t.Helper()
	emu, err := emulator.New(context.Background(), emulator.Options{Project: "doc", Subscription: subscription})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	rest := httptest.NewServer(emu.Handler())
	t.Cleanup(rest.Close)
	dir := t.TempDir()
	caCert, _, err := local.CreateCA(filepath.Join(dir, "ca"), "ecdsa", "cli test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &googleScene{emu: emu, rest: rest, dir: dir, caCert: caCert}
}

// setupScene is the Google side with a subscription of the emulator's own, and a configuration
// for a subscription that does not exist yet.
type setupScene struct {
	*googleScene
	config string
}

func newSetupScene(t *testing.T) *setupScene {
	t.Helper()
	g := newGoogleScene(t, "emulator-own")
	emu, rest, dir := g.emu, g.rest, g.dir
	cfg := writeFile(t, filepath.Join(dir, "adapter.yaml"), fmt.Sprintf(`instanceId: a1
customers: [%s]
pubsub: {project: doc, subscription: certprov-adapter, endpoint: %q, insecure: true}
google: {credentials: {type: none}, endpoint: %q}
journal: {type: memory}
ops: {listen: "127.0.0.1:0"}
profiles: {device: {subject: {commonName: "{{.Device.SerialNumber}}"}, extendedKeyUsage: [clientAuth]}}
caConnections: {builtin: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}}
`, emulator.DefaultCustomer, emu.PubSubAddr(), rest.URL+"/"))
	return &setupScene{googleScene: g, config: cfg}
}

// TestSetupPubSubCommand: the command creates the subscription and the dead-letter topic on the
// emulator, prints each setting with its reason and the hand steps; a second run changes
// nothing and says so; --check finds a setting changed behind its back (exit 1), and a run
// without it fixes the setting.
func TestSetupPubSubCommand(t *testing.T) {
	sc := newSetupScene(t)
	code, out, stderr := runCLI(t, "setup", "pubsub", "--config", sc.config, "--topic", "certprov", "--dead-letter-topic", "certprov-dead")
	if code != ExitOK {
		t.Fatalf("create: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	for _, want := range []string{
		"dead-letter topic projects/doc/topics/certprov-dead: created\n",
		"subscription projects/doc/subscriptions/certprov-adapter: created\n",
		"  ackDeadline          60s -- 2 × google.requestTimeout (30s)",
		"  messageRetention     168h -- ",
		"  retryPolicy          exponential backoff 10s to 10m -- ",
		"  deadLetterPolicy     projects/doc/topics/certprov-dead after 20 delivery attempts -- ",
		"  expirationPolicy     never -- ",
		"  exactlyOnceDelivery  off -- ",
		"dead-letter subscription projects/doc/subscriptions/certprov-dead: created",
		"Still to do by hand:\n1. Let the adapter pull from the subscription (roles/pubsub.subscriber)\n" +
			"     gcloud pubsub subscriptions add-iam-policy-binding certprov-adapter --project doc --member serviceAccount:SERVICE_ACCOUNT_EMAIL --role roles/pubsub.subscriber\n",
		"     PROJECT_NUMBER=$(gcloud projects describe doc --format 'value(projectNumber)')\n" +
			"     gcloud pubsub topics add-iam-policy-binding certprov-dead --project doc --member serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com --role roles/pubsub.publisher\n" +
			"     gcloud pubsub subscriptions add-iam-policy-binding certprov-adapter --project doc --member serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com --role roles/pubsub.subscriber\n",
		"gcloud services enable chromemanagement.googleapis.com --project doc",
		"OAuth scope https://www.googleapis.com/auth/chrome.management.certprov.provisioningprocess",
		"Google publishes one message to projects/doc/topics/certprov for every new process",
		"one of the configured profiles: device; ",
		"one of the configured caConnections: builtin.",
		"certprov-adapter doctor --config " + sc.config,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}

	code, out, _ = runCLI(t, "setup", "pubsub", "--config", sc.config, "--topic", "certprov", "--dead-letter-topic", "certprov-dead")
	if code != ExitOK || !strings.Contains(out, "subscription projects/doc/subscriptions/certprov-adapter: up to date\n") ||
		!strings.Contains(out, "nothing changed: the Pub/Sub set-up was already as the adapter needs it") {
		t.Errorf("second run: exit %d\n%s", code, out)
	}
	if code, out, _ = runCLI(t, "setup", "pubsub", "--check", "--config", sc.config); code != ExitOK || !strings.Contains(out, "check: the Pub/Sub set-up is as the adapter needs it") || strings.Contains(out, "Still to do") {
		t.Errorf("--check: exit %d\n%s", code, out)
	}

	code, out, _ = runCLI(t, "setup", "pubsub", "--json", "--config", sc.config)
	var js struct {
		Report pubsubsetup.Report `json:"report"`
		Steps  []pubsubsetup.Step `json:"steps"`
	}
	if code != ExitOK || json.Unmarshal([]byte(out), &js) != nil || js.Report.Changed || js.Report.Problems ||
		js.Report.Topic != "projects/doc/topics/certprov" || len(js.Report.Resources) != 1 || len(js.Steps) < 5 {
		t.Errorf("--json: exit %d\n%s", code, out)
	}

	// Someone lowers the ack deadline, as a plain gcloud create would have it.
	admin := adminClient(t, sc)
	if _, err := admin.UpdateSubscription(context.Background(), &pubsubpb.UpdateSubscriptionRequest{
		Subscription: &pubsubpb.Subscription{Name: "projects/doc/subscriptions/certprov-adapter", AckDeadlineSeconds: 10},
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"ack_deadline_seconds"}},
	}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(t, "setup", "pubsub", "--check", "--config", sc.config)
	if code != ExitFailure || !strings.Contains(out, "subscription projects/doc/subscriptions/certprov-adapter: differs\n  ackDeadline: 10s, want 60s -- ") {
		t.Errorf("--check of a changed deadline: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "setup", "pubsub", "--dry-run", "--config", sc.config)
	if code != ExitOK || !strings.Contains(out, "ackDeadline: 10s, want 60s (would be updated)") || !strings.Contains(out, "dry run: nothing was changed") {
		t.Errorf("--dry-run: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "setup", "pubsub", "--config", sc.config)
	if code != ExitOK || !strings.Contains(out, "subscription projects/doc/subscriptions/certprov-adapter: updated\n  ackDeadline: 10s, want 60s (updated)") {
		t.Errorf("update: exit %d\n%s", code, out)
	}
	sub, err := admin.GetSubscription(context.Background(), &pubsubpb.GetSubscriptionRequest{Subscription: "projects/doc/subscriptions/certprov-adapter"})
	if err != nil || sub.GetAckDeadlineSeconds() != 60 {
		t.Errorf("read back after the update: %v, %v", sub, err)
	}
}

// adminClient is a Pub/Sub admin client of the scene's emulator, standing for someone else.
func adminClient(t *testing.T, sc *setupScene) *vkit.SubscriptionAdminClient {
	t.Helper()
	cfg, err := config.LoadWith(sc.config, config.Options{Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := adapter.PubSubClient(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	return ps.SubscriptionAdminClient
}

// TestSetupPubSubErrors: a topic that does not exist fails (exit 1) with what to do; a
// subscription to create without --topic, contradictory flags and a bad topic name are usage
// errors (exit 2).
func TestSetupPubSubErrors(t *testing.T) {
	sc := newSetupScene(t)
	code, out, stderr := runCLI(t, "setup", "pubsub", "--config", sc.config, "--topic", "certprov-typo")
	if code != ExitFailure || !strings.Contains(stderr, "projects/doc/topics/certprov-typo does not exist: create it (gcloud pubsub topics create certprov-typo --project doc)") {
		t.Errorf("missing topic: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"setup", "pubsub", "--config", sc.config}, "name the topic Google publishes to"},
		{[]string{"setup", "pubsub", "--config", sc.config, "--check", "--dry-run"}, "--check and --dry-run exclude each other"},
		{[]string{"setup", "pubsub", "--config", sc.config, "--topic", "a/b"}, `topic: "a/b" is not a topic`},
		{[]string{"setup", "pubsub", "--config", sc.config, "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"setup"}, "a subcommand is required"},
		{[]string{"setup", "pubsb"}, `did you mean "pubsub"?`},
	} {
		code, out, stderr := runCLI(t, tt.args...)
		if code != ExitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, want 2 with %q\nstdout %s\nstderr %s", tt.args, code, tt.want, out, stderr)
		}
	}
}

// TestAdapterReceivesFromSetUpSubscription: the daemon, configured with the subscription setup
// created and nothing else, receives the notification Google's side publishes on the topic and
// provisions the device: the certificate chains to the CA and carries the device's key.
func TestAdapterReceivesFromSetUpSubscription(t *testing.T) {
	sc := newSetupScene(t)
	code, out, stderr := runCLI(t, "setup", "pubsub", "--config", sc.config, "--topic", "certprov")
	if code != ExitOK {
		t.Fatalf("setup: exit %d\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(out, "  note: no dead-letter policy: ") {
		t.Errorf("no note on the missing dead-letter policy:\n%s", out)
	}
	cfg, err := config.Load(sc.config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := adapter.New(ctx, cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = a.Close()
	})

	name, err := sc.emu.StartProcess(ctx, emulator.ProcessSpec{ProfileRef: "device", CARef: "builtin", KeyType: emulator.KeyECDSA})
	if err != nil {
		t.Fatal(err)
	}
	var snap emulator.Snapshot
	deadline := time.Now().Add(30 * time.Second)
	for {
		snap, _ = sc.emu.Process(name)
		if snap.Finished() || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if snap.State != emulator.StateIssued {
		t.Fatalf("process %s: state %s, failure %q", name, snap.State, snap.FailureMessage)
	}
	certs, err := pemutil.ParseCertificates([]byte(snap.CertificatePEM))
	if err != nil || len(certs) != 1 {
		t.Fatalf("uploaded %q: %v", snap.CertificatePEM, err)
	}
	leaf := certs[0]
	roots, err := pemutil.ReadCertificates(sc.caCert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not chain to the CA: %v", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	if err != nil || string(spki) != string(snap.SPKI) {
		t.Errorf("certificate is not for the device's key")
	}
}

// TestSetupPubSubTenant: with tenants, --tenant is required and names whose subscription is set
// up, with that tenant's pubsub section: acme's subscription is created on the topic, globex's
// is left alone until its own run.
func TestSetupPubSubTenant(t *testing.T) {
	sc := newSetupScene(t)
	cfg := writeFile(t, filepath.Join(sc.dir, "tenants.yaml"), fmt.Sprintf(`instanceId: a1
journal: {type: memory}
ops: {listen: "127.0.0.1:0"}
tenants:
  - name: acme
    customers: [C0acme]
    pubsub: {project: doc, subscription: acme-certprov, endpoint: %[1]q, insecure: true}
    google: {credentials: {type: none}, endpoint: %[2]q}
    profiles: {device: {subject: {commonName: "{{.Device.SerialNumber}}"}}}
    caConnections: {builtin: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}}
  - name: globex
    customers: [C0globex]
    pubsub: {project: doc, subscription: globex-certprov, endpoint: %[1]q, insecure: true}
    google: {credentials: {type: none}, endpoint: %[2]q}
    profiles: {device: {subject: {commonName: "{{.Device.SerialNumber}}"}}}
    caConnections: {builtin: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}}
`, sc.emu.PubSubAddr(), sc.rest.URL+"/"))

	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "--tenant is required: the configuration has tenants (acme, globex)"},
		{[]string{"--tenant", "initech"}, "--tenant initech: the configuration's tenants are acme, globex"},
	} {
		args := append([]string{"setup", "pubsub", "--config", cfg, "--topic", "certprov"}, tt.args...)
		if code, out, stderr := runCLI(t, args...); code != ExitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, want 2 with %q\nstdout %s\nstderr %s", tt.args, code, tt.want, out, stderr)
		}
	}

	code, out, stderr := runCLI(t, "setup", "pubsub", "--config", cfg, "--tenant", "acme", "--topic", "certprov")
	if code != ExitOK || !strings.Contains(out, "subscription projects/doc/subscriptions/acme-certprov: created\n") {
		t.Fatalf("--tenant acme: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	admin := adminClient(t, sc)
	sub, err := admin.GetSubscription(context.Background(), &pubsubpb.GetSubscriptionRequest{Subscription: "projects/doc/subscriptions/acme-certprov"})
	if err != nil || sub.GetTopic() != "projects/doc/topics/certprov" || sub.GetAckDeadlineSeconds() != 60 {
		t.Errorf("acme's subscription: %v, %v", sub, err)
	}
	if _, err := admin.GetSubscription(context.Background(), &pubsubpb.GetSubscriptionRequest{Subscription: "projects/doc/subscriptions/globex-certprov"}); err == nil {
		t.Error("globex's subscription exists after acme's set-up")
	}
	code, out, _ = runCLI(t, "setup", "pubsub", "--check", "--config", cfg, "--tenant", "globex", "--topic", "certprov")
	if code != ExitFailure || !strings.Contains(out, "subscription projects/doc/subscriptions/globex-certprov: missing") {
		t.Errorf("--check --tenant globex before its set-up: exit %d, want 1\n%s", code, out)
	}
	// Without a topic to create it on, the missing subscription is a usage error, and no
	// summary says all is well.
	code, out, stderr = runCLI(t, "setup", "pubsub", "--check", "--config", cfg, "--tenant", "globex")
	if code != ExitUsage || strings.Contains(out, "as the adapter needs it") || !strings.Contains(stderr, "globex-certprov") {
		t.Errorf("--check --tenant globex without --topic: exit %d, want 2\nstdout %s\nstderr %s", code, out, stderr)
	}
}
