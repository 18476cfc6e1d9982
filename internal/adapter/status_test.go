package adapter

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/buildinfo"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/ops"
	"github.com/certprov/certprov-adapter/internal/statuspage/pagetest"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// statusRun is one process of TestStatusPageInChromium and what the adapter resolves it to.
type statusRun struct {
	spec emulator.ProcessSpec
	// configured: its profile and CA connection are in the configuration, so the adapter
	// counts it under their names; otherwise under "(not resolved)".
	configured bool
	inFlight   bool // the device never signs
	name       string
}

// TestStatusPageInChromium runs the daemon against the emulator, the built-in CA and a real
// SCEP server, provisions processes that are issued, fail (a device signing with another key,
// a profile and a CA connection the configuration lacks) or wait on devices that never sign,
// stops the SCEP server, and loads /status in headless Chromium: the DOM the browser built
// shows the processes in flight oldest first, one outcome row per finished process with the
// emulator's own outcome and failure message, success rates that match what happened, the SCEP
// connection's check failing, and the build and instance. A reference with markup in it is
// shown as text. With CERTPROV_STATUS_SCREENSHOT=path it also writes a 1280×900 screenshot.
func TestStatusPageInChromium(t *testing.T) {
	chromium := testservers.FindChromium(t)
	scep := testservers.StartSCEP(t, "")
	d := startDaemon(t, fmt.Sprintf(`
  corp-scep: {type: scep, url: %q, signerKeyFile: scep-signer.key, signerCertFile: scep-signer.crt, timeout: 10s}
`, scep.URL))
	d.waitReadyz(200, "", false)

	device := func(ca, key, behaviour string) emulator.ProcessSpec {
		return emulator.ProcessSpec{ProfileRef: "device", CARef: ca, KeyType: key, Behaviour: behaviour}
	}
	user := func(ca, key, behaviour string) emulator.ProcessSpec {
		return emulator.ProcessSpec{Scope: emulator.ScopeUser, ProfileRef: "user", CARef: ca, KeyType: key, Behaviour: behaviour}
	}
	const markup = "wifi <legacy>"
	runs := []*statusRun{
		{spec: device("builtin", emulator.KeyRSA, ""), configured: true},
		{spec: device("builtin", emulator.KeyECDSA, ""), configured: true},
		{spec: device("corp-scep", emulator.KeyRSA, ""), configured: true},
		{spec: user("builtin", emulator.KeyECDSA, ""), configured: true},
		{spec: user("corp-scep", emulator.KeyRSA, ""), configured: true},
		{spec: device("builtin", emulator.KeyRSA, emulator.BehaviourWrongKey), configured: true},
		{spec: emulator.ProcessSpec{ProfileRef: markup, CARef: "builtin"}},
		{spec: device("retired-ca", emulator.KeyRSA, "")},
		{spec: device("builtin", emulator.KeyRSA, emulator.BehaviourNeverSign), configured: true, inFlight: true},
		{spec: user("corp-scep", emulator.KeyRSA, emulator.BehaviourNeverSign), configured: true, inFlight: true},
		{spec: device("builtin", emulator.KeyECDSA, emulator.BehaviourNeverSign), configured: true, inFlight: true},
	}
	ctx := context.Background()
	for _, r := range runs {
		var err error
		if r.name, err = d.emu.StartProcess(ctx, r.spec); err != nil {
			t.Fatal(err)
		}
	}
	finished, inFlight := 0, 0
	for _, r := range runs {
		if r.inFlight {
			inFlight++
		} else {
			finished++
			waitFinished(t, d.emu, r.name)
		}
	}
	// The journal is where the page reads: wait until it holds every outcome (audit event
	// written) and the devices that never sign are waited on.
	deadline := time.Now().Add(30 * time.Second)
	var unfinished []*journal.Record
	for {
		done, err := d.a.Store.Finished(ctx, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		unfinished, err = d.a.Store.Unfinished(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waiting := 0
		for _, r := range unfinished {
			if r.State == journal.StateSignRequested {
				waiting++
			}
		}
		if len(done) == finished && len(unfinished) == inFlight && waiting == inFlight {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journal: %d finished, %d unfinished (%d waiting on the device); want %d and %d", len(done), len(unfinished), waiting, finished, inFlight)
		}
		time.Sleep(20 * time.Millisecond)
	}
	scep.Stop()
	d.waitReadyz(503, "ca_connection:corp-scep", false)

	url := d.base + ops.PathStatus
	page := pagetest.Parse(t, chromium.DumpDOM(url))
	if path := os.Getenv("CERTPROV_STATUS_SCREENSHOT"); path != "" {
		chromium.Screenshot(url, path, 1280, 900)
		t.Logf("screenshot of %s written to %s", url, path)
	}

	if got, want := page.Text("instance"), "a1"; got != want {
		t.Errorf("instance %q, want %q", got, want)
	}
	if got, want := page.Text("version"), buildinfo.Get().Version; got != want {
		t.Errorf("version %q, want %q", got, want)
	}
	if got := page.Text("ready"); got != "not ready" {
		t.Errorf("shown as %q while the SCEP server is down", got)
	}
	checks := map[string]pagetest.Row{}
	for _, r := range page.Rows("readiness") {
		checks[r.Attrs["data-check"]] = r
	}
	for _, name := range []string{"config", "journal", "pubsub", "google_token", "ca_connection:builtin", "ca_connection:corp-scep"} {
		c, ok := checks[name]
		want := name != "ca_connection:corp-scep"
		if !ok || c.Attrs["data-ready"] != fmt.Sprint(want) {
			t.Errorf("check %s shown as %v, want ready=%v", name, c.Cells, want)
		}
	}
	if detail := checks["ca_connection:corp-scep"].Cell("detail"); !strings.Contains(detail, "connection refused") {
		t.Errorf("the failing SCEP check does not say why: %q", detail)
	}

	// In flight: the devices that never sign, oldest first, as the journal orders them.
	slices.SortFunc(unfinished, func(a, b *journal.Record) int { return a.Created.Compare(b.Created) })
	rows := page.Rows("oldest")
	if len(rows) != inFlight {
		t.Fatalf("%d in-flight rows, want %d", len(rows), inFlight)
	}
	for i, r := range rows {
		if r.Attrs["data-process"] != unfinished[i].Name || r.Attrs["data-state"] != string(journal.StateSignRequested) || r.Cell("age") == "" {
			t.Errorf("in-flight row %d: %v %v, want %s in sign_requested", i, r.Attrs, r.Cells, unfinished[i].Name)
		}
	}
	if got := page.Text("in-flight-count"); got != fmt.Sprint(inFlight) {
		t.Errorf("in-flight count %q, want %d", got, inFlight)
	}
	if st := page.Rows("by-state"); len(st) != 1 || st[0].Attrs["data-state"] != "sign_requested" || st[0].Cell("count") != fmt.Sprint(inFlight) {
		t.Errorf("counts by state %v", st)
	}

	// Outcomes: one row per finished process, with what the emulator (the device) saw.
	outcomes := map[string]pagetest.Row{}
	for _, r := range page.Rows("outcomes") {
		outcomes[r.Attrs["data-process"]] = r
	}
	if len(outcomes) != finished {
		t.Errorf("%d outcome rows, want %d", len(outcomes), finished)
	}
	type tally struct{ ok, failed int }
	byProfile, byCA := map[string]*tally{}, map[string]*tally{}
	add := func(m map[string]*tally, key string, ok bool) {
		if m[key] == nil {
			m[key] = &tally{}
		}
		if ok {
			m[key].ok++
		} else {
			m[key].failed++
		}
	}
	for _, r := range runs {
		if r.inFlight {
			continue
		}
		snap, _ := d.emu.Process(r.name)
		ok := snap.State == emulator.StateIssued
		row, shown := outcomes[r.name]
		switch {
		case !shown:
			t.Errorf("no outcome row for %s", r.name)
		case row.Attrs["data-success"] != fmt.Sprint(ok):
			t.Errorf("%s shown as success=%s, the emulator has %s %q", r.name, row.Attrs["data-success"], snap.State, snap.FailureMessage)
		case row.Cell("failure") != snap.FailureMessage:
			t.Errorf("%s failure shown as %q, the device got %q", r.name, row.Cell("failure"), snap.FailureMessage)
		case r.configured && (row.Cell("profile") != r.spec.ProfileRef || row.Cell("ca") != r.spec.CARef):
			t.Errorf("%s shown with %q / %q, want %s / %s", r.name, row.Cell("profile"), row.Cell("ca"), r.spec.ProfileRef, r.spec.CARef)
		}
		profile, ca := "(not resolved)", "(not resolved)"
		if r.configured {
			profile, ca = r.spec.ProfileRef, r.spec.CARef
		}
		add(byProfile, profile, ok)
		add(byCA, ca, ok)
	}
	// The reference with markup is text in its cell, not an element.
	for _, r := range outcomes {
		if strings.HasPrefix(r.Cell("profile"), "wifi") && r.Cell("profile") != markup+" (not resolved)" {
			t.Errorf("profile reference shown as %q, want %q", r.Cell("profile"), markup+" (not resolved)")
		}
	}
	if n := len(page.Elements("legacy")); n != 0 {
		t.Errorf("the reference %q became %d elements", markup, n)
	}

	// Success rates: what happened, per resolved profile and CA connection.
	if got := page.Text("window-count"); got != fmt.Sprint(finished) {
		t.Errorf("rate window of %q processes, want %d", got, finished)
	}
	for id, want := range map[string]map[string]*tally{"rates-profile": byProfile, "rates-ca": byCA} {
		shown := page.Rows(id)
		if len(shown) != len(want) {
			t.Errorf("%s: %d rows, want %d", id, len(shown), len(want))
		}
		for _, r := range shown {
			key := r.Attrs["data-name"] + r.Attrs["data-note"]
			w := want[key]
			if w == nil {
				t.Errorf("%s: unexpected row %v", id, r.Cells)
				continue
			}
			rate := fmt.Sprintf("%.1f%%", 100*float64(w.ok)/float64(w.ok+w.failed))
			if r.Cell("succeeded") != fmt.Sprint(w.ok) || r.Cell("failed") != fmt.Sprint(w.failed) || r.Cell("rate") != rate {
				t.Errorf("%s %s: shown %v, want %d succeeded, %d failed, %s", id, key, r.Cells, w.ok, w.failed, rate)
			}
		}
	}
}
