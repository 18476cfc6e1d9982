// Package statuspage serves the ops listener's /status page: one read-only HTML page, rendered
// on the server (html/template, inline CSS, no script), that tells an operator what the adapter
// is doing — the processes in flight by state and age, the latest outcomes, the success rate per
// profile and per CA connection — whether it is ready and why not, and which build runs as which
// instance since when.
//
// Everything on the page that comes from a process (its name, the references the Admin console
// sent, failure messages, a CA's error text) is untrusted data; the template escapes it for the
// context it lands in. The page shows no device serial, user e-mail or certificate.
package statuspage

import (
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/buildinfo"
	"github.com/certprov/certprov-adapter/internal/inspect"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/ops"
)

// Defaults of Options.
const (
	DefaultOutcomes     = 100
	DefaultRateWindow   = 1000
	DefaultInFlightRows = 100
	DefaultQueryTimeout = 5 * time.Second
	// DefaultConcurrency bounds the renders at once, so that a refresh storm cannot keep the
	// journal busy; a request beyond it is answered 503 at once.
	DefaultConcurrency = 2
	// RefreshSeconds is how often a browser reloads the page (a meta refresh, not a script).
	RefreshSeconds = 30
)

// Journal is what the page reads from the journal (journal.Store satisfies it). Both methods
// must honour ctx, which ends after Options.QueryTimeout, and return copies the page may keep.
type Journal interface {
	// Unfinished lists every record that is not Done, by name.
	Unfinished(ctx context.Context) ([]*journal.Record, error)
	// Finished lists up to limit Done records, most recently finished first; only those in
	// state when state is not empty.
	Finished(ctx context.Context, state journal.State, limit int) ([]*journal.Record, error)
}

// Readiness is what the page reads from the ops listener (*ops.Server satisfies it): answered
// from cached results, so a render never waits on a dependency.
type Readiness interface {
	// Readiness returns the latest result of every check, in a stable order.
	Readiness() []ops.CheckResult
	// Ready reports what /readyz answers: every check passed its latest run and the adapter is
	// not stopping.
	Ready() bool
}

// Options configure a Page.
type Options struct {
	Journal   Journal   // required
	Readiness Readiness // required
	// JournalType names the journal backend (sqlite, postgres, memory); a shared PostgreSQL
	// journal lists the processes of every replica, which the page says.
	JournalType string
	// InstanceID is the adapter's callerInstanceId.
	InstanceID string
	Build      buildinfo.Info
	// Started is when the adapter started; the page shows the uptime from it.
	Started time.Time
	// StepsRunning, when set, reports how many steps this replica's workers run right now.
	StepsRunning func() int
	Logger       *zap.Logger
	// Now replaces the clock (tests).
	Now func() time.Time

	// Outcomes is how many of the latest outcomes the page lists (DefaultOutcomes).
	Outcomes int
	// RateWindow is how many of the latest finished processes the success rates are over
	// (DefaultRateWindow); the page says how many it found and since when.
	RateWindow int
	// InFlightRows is how many of the oldest processes in flight the page lists
	// (DefaultInFlightRows); the counts by state cover all of them.
	InFlightRows int
	// QueryTimeout bounds the journal reads of one render (DefaultQueryTimeout).
	QueryTimeout time.Duration
	// Concurrency bounds the renders at once (DefaultConcurrency).
	Concurrency int
}

// Page is the /status handler.
type Page struct {
	o    Options
	log  *zap.Logger
	slot chan struct{}
}

//go:embed status.html
var pageSource string

var pageTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"utc": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
}).Parse(pageSource))

// New builds the page.
func New(o Options) (*Page, error) {
	if o.Journal == nil || o.Readiness == nil {
		return nil, fmt.Errorf("status page: a journal and the readiness checks are required")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Started.IsZero() {
		o.Started = o.Now()
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Outcomes, DefaultOutcomes)
	def(&o.RateWindow, DefaultRateWindow)
	def(&o.InFlightRows, DefaultInFlightRows)
	def(&o.Concurrency, DefaultConcurrency)
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = DefaultQueryTimeout
	}
	o.RateWindow = max(o.RateWindow, o.Outcomes) // the outcomes listed are part of the window
	return &Page{o: o, log: o.Logger, slot: make(chan struct{}, o.Concurrency)}, nil
}

// ServeHTTP renders the page for GET and HEAD.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	select {
	case p.slot <- struct{}{}:
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "the status page is being rendered for others; try again in a second", http.StatusServiceUnavailable)
		return
	}
	var buf bytes.Buffer
	err := pageTemplate.Execute(&buf, p.view(r.Context()))
	<-p.slot // the journal was read and the page rendered: a slow client holds no slot
	if err != nil {
		// A template error is a bug in this package; its tests render every section.
		p.log.Error("status page not rendered", zap.Error(err))
		http.Error(w, "the status page could not be rendered; see the adapter's log", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// No script, no external asset, no framing: inline styles are all the page uses.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	_, _ = w.Write(buf.Bytes())
}

// view is what the template renders.
type view struct {
	Refresh     int
	Now         time.Time
	InstanceID  string
	Build       buildinfo.Info
	JournalType string
	Started     time.Time
	Uptime      string

	Ready       bool
	Stopping    bool // every check passes, yet not ready: the adapter is shutting down
	Checks      []checkRow
	ChecksReady int

	StepsRunning *int
	InFlightErr  string
	InFlight     int
	// RevocationsPending counts the superseded certificates still to be revoked (renewal
	// hygiene); the processes that owe them are counted as finished, not in flight.
	RevocationsPending int
	ByState            []stateRow
	Oldest             []inspect.Summary
	OldestMore         int

	FinishedErr string
	Outcomes    []outcomeRow
	Window      window
	ByProfile   rateTable
	ByCA        rateTable
}

type checkRow struct {
	ops.CheckResult
	Since   string // for how long it has been ready or not
	Checked string // how long ago it last ran
}

type stateRow struct {
	State    journal.State
	NextStep string
	Count    int
	Oldest   string
}

type outcomeRow struct {
	inspect.Summary
	Success bool
	Ago     string
	Profile reference
	CA      reference
	Failure string
}

// reference is a profile or CA connection as a process named it.
type reference struct {
	Name string
	// Unresolved: the process did not resolve to the adapter's profiles and CA connections (one
	// of the two it names is not configured; its failure message says which); Name is the
	// reference the Admin console sent.
	Unresolved bool
	// SCEP: the process carried its own scepProfile instead of naming a profile.
	SCEP bool
}

// window says which finished processes the success rates count.
type window struct {
	Limit int       // at most this many
	Count int       // found
	Since time.Time // the earliest finished among them
	Full  bool      // the limit was reached: older processes are not counted
}

type rateTable struct {
	ID, What string // the table's id and what its rows are
	Rows     []rateRow
}

type rateRow struct {
	Name      string
	Note      string // "(not resolved)", "(scepProfile)"
	Succeeded int
	Failed    int
	Total     int
	Rate      string // "75.0%"
	Low       bool   // under 90%
}

// Labels of rate rows for processes without a resolved name.
const (
	unresolvedLabel = "(not resolved)"
	scepLabel       = "(scepProfile)"
)

func (p *Page) view(ctx context.Context) *view {
	now := p.o.Now()
	v := &view{
		Refresh: RefreshSeconds, Now: now, InstanceID: p.o.InstanceID, Build: p.o.Build,
		JournalType: p.o.JournalType, Started: p.o.Started, Uptime: inspect.RoundDuration(now.Sub(p.o.Started)),
		Ready: p.o.Readiness.Ready(),
	}
	for _, c := range p.o.Readiness.Readiness() {
		row := checkRow{CheckResult: c}
		if !c.Since.IsZero() {
			row.Since = inspect.RoundDuration(now.Sub(c.Since))
		}
		if !c.Checked.IsZero() {
			row.Checked = inspect.RoundDuration(now.Sub(c.Checked))
		}
		if c.Ready {
			v.ChecksReady++
		}
		v.Checks = append(v.Checks, row)
	}
	v.Stopping = !v.Ready && v.ChecksReady == len(v.Checks)
	if p.o.StepsRunning != nil {
		n := p.o.StepsRunning()
		v.StepsRunning = &n
	}

	qctx, cancel := context.WithTimeout(ctx, p.o.QueryTimeout)
	defer cancel()
	var settled []*journal.Record
	if recs, err := p.o.Journal.Unfinished(qctx); err != nil {
		v.InFlightErr = err.Error()
		p.log.Warn("status page: journal not read", zap.String("query", "unfinished"), zap.Error(err))
	} else {
		var provisioning []*journal.Record
		provisioning, settled = inspect.Settled(recs)
		v.RevocationsPending = journal.PendingRevocations(recs)
		p.inFlight(v, provisioning, now)
	}
	if recs, err := p.o.Journal.Finished(qctx, "", p.o.RateWindow); err != nil {
		v.FinishedErr = err.Error()
		p.log.Warn("status page: journal not read", zap.String("query", "finished"), zap.Error(err))
	} else {
		p.finished(v, inspect.MergeFinished(settled, recs, "", p.o.RateWindow), now)
	}
	return v
}

// inFlight fills the processes in flight: counts by state, and the oldest first.
func (p *Page) inFlight(v *view, recs []*journal.Record, now time.Time) {
	slices.SortFunc(recs, func(a, b *journal.Record) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.Name, b.Name))
	})
	v.InFlight = len(recs)
	byState := map[journal.State]*stateRow{}
	for _, r := range recs {
		s := byState[r.State]
		if s == nil {
			// The oldest comes first, so it sets the state's age.
			s = &stateRow{State: r.State, NextStep: inspect.NextStep(r), Oldest: inspect.RoundDuration(now.Sub(r.Created))}
			byState[r.State] = s
		}
		s.Count++
	}
	for _, st := range journal.States() {
		if s := byState[st]; s != nil {
			v.ByState = append(v.ByState, *s)
		}
	}
	for _, r := range recs[:min(len(recs), p.o.InFlightRows)] {
		v.Oldest = append(v.Oldest, inspect.Summarise(r, now))
	}
	v.OldestMore = len(recs) - len(v.Oldest)
}

// finished fills the latest outcomes and the success rates over the window.
func (p *Page) finished(v *view, recs []*journal.Record, now time.Time) {
	v.Window = window{Limit: p.o.RateWindow, Count: len(recs), Full: len(recs) >= p.o.RateWindow}
	profiles, cas := map[string]*rateRow{}, map[string]*rateRow{}
	for i, r := range recs {
		ok := r.State == journal.StateUploaded
		if i < p.o.Outcomes {
			row := outcomeRow{Summary: inspect.Summarise(r, now), Success: ok, Profile: profileOf(r), CA: caOf(r)}
			if !ok {
				row.Failure = cmp.Or(r.FailureMessage, r.LastError)
			}
			if row.Outcome == "" {
				row.Outcome = string(r.State)
			}
			if !r.FinishedAt.IsZero() {
				row.Ago = inspect.RoundDuration(now.Sub(r.FinishedAt))
			}
			v.Outcomes = append(v.Outcomes, row)
		}
		if v.Window.Since.IsZero() || r.FinishedAt.Before(v.Window.Since) {
			v.Window.Since = r.FinishedAt
		}
		count(profiles, rateKey(r.ProfileName, r.Process != nil && r.Process.SCEPProfile != nil), ok)
		count(cas, rateKey(r.CAName, false), ok)
	}
	v.ByProfile = rateTable{ID: "rates-profile", What: "profile", Rows: rates(profiles)}
	v.ByCA = rateTable{ID: "rates-ca", What: "CA connection", Rows: rates(cas)}
}

// profileOf is the profile a finished process used, or the reference it named.
func profileOf(r *journal.Record) reference {
	switch {
	case r.ProfileName != "":
		return reference{Name: r.ProfileName}
	case r.Process != nil && r.Process.SCEPProfile != nil:
		return reference{SCEP: true}
	case r.Process != nil:
		return reference{Name: r.Process.ProfileRef, Unresolved: true}
	}
	return reference{Unresolved: true}
}

// caOf is the CA connection a finished process used, or the reference it named.
func caOf(r *journal.Record) reference {
	switch {
	case r.CAName != "":
		return reference{Name: r.CAName}
	case r.Process != nil:
		return reference{Name: r.Process.CAConnectionRef, Unresolved: true}
	}
	return reference{Unresolved: true}
}

// rateKey groups a process by the name it resolved to: the rates count what the adapter's own
// profiles and CA connections achieved, as certprov_processes_finished_total does, and put the
// processes that never resolved to one apart.
func rateKey(name string, scep bool) string {
	switch {
	case name != "":
		return name
	case scep:
		return scepLabel
	}
	return unresolvedLabel
}

func count(m map[string]*rateRow, key string, ok bool) {
	r := m[key]
	if r == nil {
		r = &rateRow{Name: key}
		if key == unresolvedLabel || key == scepLabel {
			r.Name, r.Note = "", key
		}
		m[key] = r
	}
	r.Total++
	if ok {
		r.Succeeded++
	} else {
		r.Failed++
	}
}

// rates orders the rows by name, those without one last.
func rates(m map[string]*rateRow) []rateRow {
	out := make([]rateRow, 0, len(m))
	for _, r := range m {
		rate := float64(r.Succeeded) / float64(r.Total)
		r.Rate = fmt.Sprintf("%.1f%%", 100*rate)
		r.Low = rate < 0.9
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b rateRow) int {
		if (a.Name == "") != (b.Name == "") {
			if a.Name == "" {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Note, b.Note))
	})
	return out
}
