package verifiedaccess

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// readEvents reads an audit file: every event, in order.
func readEvents(t testing.TB, path string) []audit.Event {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var ev audit.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("audit line is not an event: %v\n%s", err, line)
		}
		out = append(out, ev)
	}
	return out
}

// The audit trail names the device key by its hash and the certificate by its public fields;
// the challenge response, the key itself and the certificate itself stay out.
func TestAuditEventCarriesNoSecret(t *testing.T) {
	testKeys(t)
	h := newHarness(t, harnessOptions{})
	resp := h.respond("wifi", &fakeDevice{key: ecKey, identity: "example.com"})
	leaf := h.issued(ecKey)(h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, "")))
	raw, err := os.ReadFile(h.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	for what, secret := range map[string]string{
		"challenge response": resp,
		"certificate":        base64.StdEncoding.EncodeToString(leaf.Raw)[:64],
		"device key DER":     base64.StdEncoding.EncodeToString(leaf.RawSubjectPublicKeyInfo)[:48],
	} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the audit event carries the %s", what)
		}
	}
	if evs := h.events(); len(evs) != 1 || evs[0].Certificate == nil || evs[0].Certificate.Serial != leaf.SerialNumber.Text(16) {
		t.Fatalf("events %+v", evs)
	}
}

// failingRecorder is an audit sink that refuses every event (a full disk).
type failingRecorder struct{}

func (failingRecorder) Write(*audit.Event) error {
	return errors.New("injected: no space left on device")
}

// A certificate is never handed out without its audit event: when the event cannot be written
// the client is told to try again, and gets no certificate.
func TestEnrollRefusedWhenTheAuditFails(t *testing.T) {
	testKeys(t)
	h := newHarness(t, harnessOptions{recorder: func(*audit.Log) Recorder { return failingRecorder{} }})
	resp := h.respond("wifi", &fakeDevice{key: ecKey, identity: "example.com"})
	status, out := h.post(wire.EnrollPath, enrollBody("wifi", "machine", resp, ""))
	e, _ := out["error"].(map[string]any)
	if status != CodeUnavailable.Status() || e == nil || e["code"] != string(CodeUnavailable) || out["certificate"] != nil {
		t.Fatalf("got %d %v; want %s without a certificate", status, out, CodeUnavailable)
	}
	if msg, _ := e["message"].(string); !strings.Contains(msg, "could not be recorded") || strings.Contains(msg, "no space") {
		t.Errorf("message %q", msg)
	}
	if got := count(metrics.NewAudit(h.reg).WriteErrors.WithLabelValues(metrics.AuditEnrollment)); got != 1 {
		t.Errorf("audit_write_errors_total{event=enrollment} = %d", got)
	}
	lines := h.auditLines()
	if len(lines) != 1 || lines[0].ContextMap()["outcome"] != string(CodeUnavailable) || lines[0].ContextMap()["serial"] == nil {
		t.Errorf("the log line must name the undelivered certificate: %v", lines)
	}
}
