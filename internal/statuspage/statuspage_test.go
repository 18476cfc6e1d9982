package statuspage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/buildinfo"
	"github.com/certprov/certprov-adapter/internal/inspect"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/ops"
	"github.com/certprov/certprov-adapter/internal/process"
	"github.com/certprov/certprov-adapter/internal/statuspage"
	"github.com/certprov/certprov-adapter/internal/statuspage/pagetest"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// serve runs a real ops listener with checks and the page at ops.PathStatus, and waits until
// every check ran once; it returns the listener's base URL.
func serve(t *testing.T, o statuspage.Options, checks ...ops.Check) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv, err := ops.New(ops.Options{Listen: "127.0.0.1:0", Gatherer: reg, Registerer: reg, Checks: checks,
		CheckInterval: time.Hour, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	o.Readiness = srv
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t)
	}
	page, err := statuspage.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Register(ops.PathStatus, page); err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for ran := false; !ran; {
		ran = true
		for _, r := range srv.Readiness() {
			ran = ran && !r.Checked.IsZero()
		}
		if !ran && time.Now().After(deadline) {
			t.Fatalf("checks did not run: %+v", srv.Readiness())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return "http://" + srv.Addr().String()
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func proc(id, profileRef, caRef string) *process.Process {
	return &process.Process{Name: "customers/C0/certificateProvisioningProcesses/" + id, Customer: "C0", ID: id,
		ProfileRef: profileRef, CAConnectionRef: caRef, CAConnectionKind: process.CAConnectionGeneric}
}

// finished is a Done record that ended at t0+at, resolved to profile and ca unless they are
// empty, in which case the process names profileRef and caRef.
func finished(id string, ok bool, profile, ca string, at time.Duration) *journal.Record {
	p := proc(id, profile, ca)
	r := &journal.Record{Name: p.Name, Process: p, ProfileName: profile, CAName: ca,
		Created: t0.Add(at - time.Minute), FinishedAt: t0.Add(at), State: journal.StateUploaded, Outcome: "issued"}
	if !ok {
		r.State, r.Outcome, r.FailureMessage = journal.StateFailed, "failed", "the CA refused "+id
	}
	return r
}

func create(t *testing.T, store journal.Store, recs ...*journal.Record) {
	t.Helper()
	for _, r := range recs {
		if created, err := store.Create(context.Background(), r); err != nil || !created {
			t.Fatalf("create %s: %v %v", r.Name, created, err)
		}
	}
}

// TestPageShowsJournalAndReadiness renders the page from a journal holding processes in flight
// and finished ones, behind a real ops listener with a passing and a failing check: the
// counts by state, the oldest processes first with their age, the latest outcomes newest
// first, the success rates over the window it names, and each check's state.
func TestPageShowsJournalAndReadiness(t *testing.T) {
	store := journal.NewMemory()
	now := t0.Add(time.Hour)
	var inFlight []*journal.Record
	for i, st := range []journal.State{journal.StateSignRequested, journal.StateClaimed, journal.StateSignRequested, journal.StateCAPending} {
		p := proc(fmt.Sprintf("F%d", i), "device", "corp")
		// Created out of order: the page sorts by age, oldest first.
		inFlight = append(inFlight, &journal.Record{Name: p.Name, Process: p, State: st, ProfileName: "device", CAName: "corp",
			Created: now.Add(-time.Duration((i*7)%4+1) * 10 * time.Minute), NextDue: now.Add(time.Minute), LastError: "try " + inspect.StateNextStep(st)})
	}
	create(t, store, inFlight...)
	// Finished, oldest first: device/corp 3 of 4, user/corp 1 of 2, unresolved 0 of 1, one
	// SCEP-profile process on corp that succeeded.
	fin := []*journal.Record{
		finished("D1", true, "device", "corp", 1*time.Minute),
		finished("D2", false, "device", "corp", 2*time.Minute),
		finished("U1", true, "user", "corp", 3*time.Minute),
		finished("D3", true, "device", "corp", 4*time.Minute),
		finished("U2", false, "user", "corp", 5*time.Minute),
		finished("X1", false, "", "", 6*time.Minute),
		finished("D4", true, "device", "corp", 7*time.Minute),
		finished("S1", true, "", "corp", 8*time.Minute),
	}
	fin[5].Process.ProfileRef, fin[5].Process.CAConnectionRef = "nosuch", "corp"
	fin[5].FailureMessage = `the certificate adapter has no profile named "nosuch"`
	fin[7].Process.ProfileRef, fin[7].Process.SCEPProfile = "", &process.SCEPProfile{CommonName: "x"}
	create(t, store, fin...)

	base := serve(t, statuspage.Options{
		Journal: store, JournalType: "sqlite", InstanceID: "adapter-7",
		Build:   buildinfo.Info{Version: "v1.2.3", Commit: "abc123", Date: "2030-01-01T00:00:00Z", GoVersion: "go1.26", Platform: "linux/amd64"},
		Started: now.Add(-90 * time.Minute), Now: func() time.Time { return now }, StepsRunning: func() int { return 2 },
		Outcomes: 5, RateWindow: 7, InFlightRows: 3,
	},
		ops.Check{Name: "journal", Run: func(context.Context) (string, error) { return "writable", nil }},
		ops.Check{Name: "ca_connection:corp", Run: func(context.Context) (string, error) {
			return "", errors.New("GetCACaps at ca.example: dial tcp 127.0.0.1:1: connect: connection refused")
		}},
	)
	resp, body := get(t, base+ops.PathStatus)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /status: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
		t.Errorf("Content-Security-Policy %q allows more than inline styles", csp)
	}
	page := pagetest.Parse(t, body)

	for id, want := range map[string]string{"instance": "adapter-7", "version": "v1.2.3", "commit": "abc123", "uptime": "1h30m0s", "ready": "not ready", "in-flight-count": "4"} {
		if got := page.Text(id); got != want {
			t.Errorf("#%s = %q, want %q", id, got, want)
		}
	}
	checks := page.Rows("readiness")
	if len(checks) != 2 {
		t.Fatalf("%d readiness rows, want 2", len(checks))
	}
	for _, c := range checks {
		wantReady := c.Attrs["data-check"] == "journal"
		if c.Attrs["data-ready"] != fmt.Sprint(wantReady) || (c.Cells[1] == "ready") != wantReady {
			t.Errorf("check %s shown as %v", c.Attrs["data-check"], c.Cells)
		}
		if !wantReady && !strings.Contains(c.Cell("detail"), "connection refused") {
			t.Errorf("failing check without its reason: %v", c.Cells)
		}
	}

	byState := map[string]string{}
	for _, r := range page.Rows("by-state") {
		byState[r.Attrs["data-state"]] = r.Cell("count")
	}
	if want := map[string]string{"claimed": "1", "sign_requested": "2", "ca_pending": "1"}; fmt.Sprint(byState) != fmt.Sprint(want) {
		t.Errorf("counts by state %v, want %v", byState, want)
	}
	rows := page.Rows("oldest")
	if len(rows) != 3 {
		t.Fatalf("%d in-flight rows, want the InFlightRows=3 oldest", len(rows))
	}
	var last time.Duration
	for i, r := range rows {
		age, err := time.ParseDuration(r.Cell("age"))
		if err != nil || (i > 0 && age > last) {
			t.Errorf("row %d age %q after %s: not oldest first", i, r.Cell("age"), last)
		}
		last = age
	}
	if rows[0].Attrs["data-process"] != inFlight[1].Name || rows[0].Cell("age") != "40m0s" {
		t.Errorf("oldest row %v, want %s aged 40m0s", rows[0].Cells, inFlight[1].Name)
	}
	if !strings.Contains(page.Text("in-flight"), "and 1 younger ones") {
		t.Errorf("the page does not say one more is in flight: %q", page.Text("in-flight"))
	}

	outcomes := page.Rows("outcomes")
	var names []string
	for _, r := range outcomes {
		names = append(names, strings.TrimPrefix(r.Attrs["data-process"], "customers/C0/certificateProvisioningProcesses/"))
	}
	if got, want := strings.Join(names, " "), "S1 D4 X1 U2 D3"; got != want {
		t.Errorf("outcomes %q, want the Outcomes=5 latest, newest first: %q", got, want)
	}
	x1 := outcomes[2]
	if x1.Attrs["data-success"] != "false" || x1.Cell("profile") != "nosuch (not resolved)" || !strings.Contains(x1.Cell("failure"), `no profile named "nosuch"`) {
		t.Errorf("unresolved outcome shown as %v", x1.Cells)
	}
	if outcomes[0].Cell("profile") != "scepProfile" || outcomes[0].Cell("failure") != "" {
		t.Errorf("SCEP-profile outcome shown as %v", outcomes[0].Cells)
	}

	// RateWindow=7: D1 is older than the window. device 2/3, user 1/2, (not resolved) 0/1, scepProfile 1/1.
	if got := page.Text("window-count"); got != "7" {
		t.Errorf("window of %q processes, want 7", got)
	}
	if !strings.Contains(page.Text("rates"), "since 2030-01-02 03:06:05Z (at most 7 are counted)") {
		t.Errorf("the rates do not say their window: %q", page.Text("rates"))
	}
	rates := func(id string) string {
		var out []string
		for _, r := range page.Rows(id) {
			out = append(out, fmt.Sprintf("%s%s=%s/%s:%s", r.Attrs["data-name"], r.Attrs["data-note"], r.Cell("succeeded"), r.Cell("failed"), r.Cell("rate")))
		}
		return strings.Join(out, " ")
	}
	if got, want := rates("rates-profile"), "device=2/1:66.7% user=1/1:50.0% (not resolved)=0/1:0.0% (scepProfile)=1/0:100.0%"; got != want {
		t.Errorf("rates by profile %q, want %q", got, want)
	}
	if got, want := rates("rates-ca"), "corp=4/2:66.7% (not resolved)=0/1:0.0%"; got != want {
		t.Errorf("rates by CA connection %q, want %q", got, want)
	}
}

// TestPageEscapesProcessValues: what a process brings (its name, the Admin console's
// references, failure messages with a CA's text, last errors) is shown as text: no element,
// attribute or script of it reaches the document.
func TestPageEscapesProcessValues(t *testing.T) {
	store := journal.NewMemory()
	const evil = `"><img src=x onerror=alert(1)><script>alert(2)</script>`
	p := proc("E1"+evil, "prof"+evil, "ca"+evil)
	create(t, store,
		&journal.Record{Name: p.Name, Process: p, State: journal.StateFailed, Outcome: "failed", Created: t0, FinishedAt: t0.Add(time.Second),
			FailureMessage: "CA said: " + evil},
		&journal.Record{Name: p.Name + "-2", Process: p, State: journal.StateSigned, ProfileName: "p" + evil, CAName: "c" + evil, Created: t0,
			LastError: "CA said: " + evil},
	)
	base := serve(t, statuspage.Options{Journal: store, InstanceID: "i" + evil, Now: func() time.Time { return t0.Add(time.Minute) }},
		ops.Check{Name: "ca_connection:x", Run: func(context.Context) (string, error) { return "", errors.New("CA said: " + evil) }})
	_, body := get(t, base+ops.PathStatus)
	page := pagetest.Parse(t, body)
	if n := len(page.Elements("img")) + len(page.Elements("script")); n != 0 {
		t.Fatalf("%d img or script elements from process values:\n%s", n, body)
	}
	for _, n := range page.All() {
		for _, a := range n.Attr {
			if strings.HasPrefix(a.Key, "on") || a.Key == "src" {
				t.Errorf("<%s> carries %s=%q", n.Data, a.Key, a.Val)
			}
		}
	}
	out := page.Rows("outcomes")
	if len(out) != 1 || out[0].Cell("failure") != "CA said: "+evil || out[0].Cell("profile") != "prof"+evil+" (not resolved)" || out[0].Attrs["data-process"] != p.Name {
		t.Errorf("outcome row %v %v: not the literal values", out, out[0].Attrs)
	}
	in := page.Rows("oldest")
	if len(in) != 1 || !strings.Contains(strings.Join(in[0].Cells, "|"), "p"+evil+"|c"+evil) || !strings.HasSuffix(in[0].Cells[8], evil) {
		t.Errorf("in-flight row %v: not the literal values", in)
	}
	if got := page.Text("instance"); got != "i"+evil {
		t.Errorf("instance %q", got)
	}
	if rows := page.Rows("readiness"); len(rows) != 1 || rows[0].Cell("detail") != "CA said: "+evil {
		t.Errorf("readiness rows %v", rows)
	}
}

// TestPageJournalUnreadable: a journal that fails (closed) costs its sections, which say why,
// while readiness and build information are still shown.
func TestPageJournalUnreadable(t *testing.T) {
	store := journal.NewMemory()
	_ = store.Close()
	base := serve(t, statuspage.Options{Journal: store, InstanceID: "a1"},
		ops.Check{Name: "journal", Run: func(ctx context.Context) (string, error) { return "", store.Ping(ctx) }})
	resp, body := get(t, base+ops.PathStatus)
	page := pagetest.Parse(t, body)
	if resp.StatusCode != http.StatusOK || page.Text("instance") != "a1" || len(page.Rows("readiness")) != 1 {
		t.Fatalf("%d, instance %q, %d readiness rows", resp.StatusCode, page.Text("instance"), len(page.Rows("readiness")))
	}
	for _, id := range []string{"in-flight", "rates"} {
		if !strings.Contains(page.Text(id), "The journal could not be read: "+journal.ErrClosed.Error()) {
			t.Errorf("#%s does not say the journal failed: %q", id, page.Text(id))
		}
	}
}

// gated holds Unfinished until release is closed, so a render stays in progress.
type gated struct {
	journal.Store
	entered chan struct{}
	release chan struct{}
}

func (g gated) Unfinished(ctx context.Context) ([]*journal.Record, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Store.Unfinished(ctx)
}

// TestPageBoundsConcurrentRenders: beyond Concurrency renders in progress a request is
// answered 503 with Retry-After at once, and served again once a render ended; other methods
// than GET and HEAD are refused.
func TestPageBoundsConcurrentRenders(t *testing.T) {
	g := gated{Store: journal.NewMemory(), entered: make(chan struct{}), release: make(chan struct{})}
	base := serve(t, statuspage.Options{Journal: g, Concurrency: 1})
	first := make(chan int, 1)
	go func() {
		resp, err := http.Get(base + ops.PathStatus)
		if err != nil {
			first <- 0
			return
		}
		_ = resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-g.entered
	resp, _ := get(t, base+ops.PathStatus)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("second render while one is in progress: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	close(g.release)
	if code := <-first; code != http.StatusOK {
		t.Errorf("first render: %d", code)
	}
	go func() { <-g.entered }()
	if resp, _ := get(t, base+ops.PathStatus); resp.StatusCode != http.StatusOK {
		t.Errorf("after the first render ended: %d", resp.StatusCode)
	}
	resp, err := http.Post(base+ops.PathStatus, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: %d", resp.StatusCode)
	}
}

// TestPageRevocationsPending: a process that ended and owes only the revocation of the
// certificate it superseded counts among the latest outcomes and the success rates, not in
// flight, and the page says how many superseded certificates await revocation.
func TestPageRevocationsPending(t *testing.T) {
	store := journal.NewMemory()
	now := t0.Add(time.Hour)
	renewed := finished("R1", true, "device", "corp", 10*time.Minute)
	renewed.Revocations = []journal.Revocation{
		{Process: "old-1", CAName: "corp", Serial: "2a", Reason: "superseded", Due: now.Add(time.Hour), NextDue: now.Add(time.Hour), State: journal.RevocationPending},
		{Process: "old-0", CAName: "corp", Serial: "1a", Reason: "superseded", State: journal.RevocationRevoked},
	}
	renewed.NextDue = now.Add(time.Hour)
	p := proc("F1", "device", "corp")
	create(t, store, finished("D1", true, "device", "corp", time.Minute), renewed,
		&journal.Record{Name: p.Name, Process: p, State: journal.StateSigned, Created: now.Add(-time.Minute), NextDue: now})
	base := serve(t, statuspage.Options{Journal: store, Now: func() time.Time { return now }},
		ops.Check{Name: "journal", Run: func(context.Context) (string, error) { return "writable", nil }})
	_, body := get(t, base+ops.PathStatus)
	page := pagetest.Parse(t, body)
	if got := page.Text("in-flight-count"); got != "1" {
		t.Errorf("in flight %q, want 1: the process owing a revocation has ended", got)
	}
	if got := page.Text("revocations-pending"); got != "1" {
		t.Errorf("revocations pending %q, want 1", got)
	}
	var names []string
	for _, r := range page.Rows("outcomes") {
		names = append(names, strings.TrimPrefix(r.Attrs["data-process"], "customers/C0/certificateProvisioningProcesses/"))
	}
	if got := strings.Join(names, " "); got != "R1 D1" {
		t.Errorf("outcomes %q, want R1 D1 (newest first)", got)
	}
}
