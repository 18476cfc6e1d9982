package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/doctor"
)

// TestDoctorCommand runs `doctor` against the emulator: one line per check, the fix on the line
// of a failure, JSON with --json, exit 1 on any failure.
func TestDoctorCommand(t *testing.T) {
	g := newGoogleScene(t, "certprov-adapter")
	emu, srv, dir := g.emu, g.rest, g.dir
	config := func(subscription string) string {
		return writeFile(t, filepath.Join(dir, subscription+".yaml"), fmt.Sprintf(`instanceId: a1
customers: [C0abc]
pubsub: {project: doc, subscription: %s, endpoint: %q, insecure: true}
google: {credentials: {type: none}, endpoint: %q}
journal: {type: memory}
profiles: {d: {subject: {commonName: x}}}
caConnections: {builtin: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}}
`, subscription, emu.PubSubAddr(), srv.URL+"/"))
	}

	code, out, stderr := runCLI(t, "doctor", "--config", config("certprov-adapter"))
	if code != ExitOK {
		t.Fatalf("healthy: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, want := range []string{
		"skip google.credentials: ",
		"ok   pubsub.subscription: projects/doc/subscriptions/certprov-adapter exists",
		"skip pubsub.permissions: ",
		"ok   provisioning API customers/C0abc: ",
		"ok   caConnections.builtin: ",
		"3 ok, 0 failed, 2 skipped",
	} {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(l, want)
		}
		if !found {
			t.Errorf("no line %q in\n%s", want, out)
		}
	}
	if len(lines) != 6 {
		t.Errorf("%d lines:\n%s", len(lines), out)
	}

	code, out, _ = runCLI(t, "doctor", "--config", config("certprov-adaptr"))
	if code != ExitFailure {
		t.Fatalf("wrong subscription: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, `FAIL pubsub.subscription: projects/doc/subscriptions/certprov-adaptr does not exist -- fix: did you mean "certprov-adapter"?`) {
		t.Errorf("output:\n%s", out)
	}

	code, out, _ = runCLI(t, "doctor", "--json", "--config", config("certprov-adaptr"))
	var r doctor.Report
	if code != ExitFailure || json.Unmarshal([]byte(out), &r) != nil || r.OK || len(r.Checks) != 5 {
		t.Fatalf("--json: exit %d\n%s", code, out)
	}
	for _, c := range r.Checks {
		if c.Name == "pubsub.subscription" && (c.Status != doctor.Fail || !strings.Contains(c.Fix, "gcloud pubsub subscriptions create")) {
			t.Errorf("--json: %+v", c)
		}
	}

	// A configuration with problems is reported as validate would.
	code, _, stderr = runCLI(t, "doctor", "--config", writeFile(t, filepath.Join(dir, "bad.yaml"), "instanceId: [x]\n"))
	if code != ExitFailure || !strings.Contains(stderr, "instanceId") {
		t.Errorf("bad config: exit %d: %s", code, stderr)
	}
}

// TestDoctorTenants: with tenants, every tenant is checked with its own subscription, customers
// and CA connections, its checks named under its path and carrying its name.
func TestDoctorTenants(t *testing.T) {
	g := newGoogleScene(t, "sub-acme")
	emu, srv, dir := g.emu, g.rest, g.dir
	tenant := func(name, customer, sub string) string {
		return fmt.Sprintf(`
  - name: %s
    customers: [%s]
    pubsub: {project: doc, subscription: %s, endpoint: %q, insecure: true}
    google: {credentials: {type: none}, endpoint: %q}
    profiles: {d: {subject: {commonName: x}}}
    caConnections: {builtin: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}}`, name, customer, sub, emu.PubSubAddr(), srv.URL+"/")
	}
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), "instanceId: a1\njournal: {type: memory}\ntenants:"+
		tenant("acme", "C0acme", "sub-acme")+tenant("beta", "C0beta", "sub-beta")+"\n")
	code, out, _ := runCLI(t, "doctor", "--config", cfg)
	for _, want := range []string{
		"ok   tenants[0].pubsub.subscription: projects/doc/subscriptions/sub-acme exists",
		"ok   tenants[0] provisioning API customers/C0acme: ",
		"ok   tenants[0].caConnections.builtin: ",
		"FAIL tenants[1].pubsub.subscription: projects/doc/subscriptions/sub-beta does not exist",
		"ok   tenants[1] provisioning API customers/C0beta: ",
	} {
		if !strings.Contains(out, "\n"+want) && !strings.HasPrefix(out, want) {
			t.Errorf("no line %q in\n%s", want, out)
		}
	}
	if code != ExitFailure {
		t.Errorf("exit %d with beta's subscription missing", code)
	}
	code, out, _ = runCLI(t, "doctor", "--json", "--config", cfg)
	var r doctor.Report
	if code != ExitFailure || json.Unmarshal([]byte(out), &r) != nil || r.OK {
		t.Fatalf("--json: exit %d\n%s", code, out)
	}
	tenants := map[string]int{}
	for _, c := range r.Checks {
		tenants[c.Tenant]++
	}
	if tenants["acme"] != 5 || tenants["beta"] != 5 || len(tenants) != 2 {
		t.Errorf("checks by tenant %v", tenants)
	}
}
