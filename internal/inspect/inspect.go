// Package inspect renders journal records for operators: tables of unfinished and finished
// processes, and one process with its history and certificate, as text or JSON.
package inspect

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Summary is one row of the unfinished list; its JSON form is stable for scripts.
type Summary struct {
	Name      string        `json:"name"`
	ProcessID string        `json:"processId"`
	State     journal.State `json:"state"`
	NextStep  string        `json:"nextStep"`
	Age       string        `json:"age"`
	DueIn     string        `json:"dueIn"`
	Attempts  int           `json:"attempts"`
	Profile   string        `json:"profile,omitempty"`
	CA        string        `json:"caConnection,omitempty"`
	LastError string        `json:"lastError,omitempty"`
	Created   time.Time     `json:"created"`
	NextDue   time.Time     `json:"nextDue"`
	// Set once the process ended.
	Outcome    string    `json:"outcome,omitempty"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	Serial     string    `json:"serial,omitempty"` // of the certificate, when one was issued
}

// Summarise turns a record into a row, with ages relative to now.
func Summarise(r *journal.Record, now time.Time) Summary {
	s := Summary{
		Name: r.Name, State: r.State, NextStep: NextStep(r), Attempts: r.Attempts,
		Profile: r.ProfileName, CA: r.CAName, LastError: r.LastError, Created: r.Created, NextDue: r.NextDue,
		Age: RoundDuration(now.Sub(r.Created)), Outcome: r.Outcome, FinishedAt: r.FinishedAt,
	}
	if c := certificateOf(r); c != nil {
		s.Serial = c.Serial
	}
	if r.Process != nil {
		s.ProcessID = r.Process.ID
	} else if i := strings.LastIndexByte(r.Name, '/'); i >= 0 {
		s.ProcessID = r.Name[i+1:]
	}
	if d := r.NextDue.Sub(now); d > 0 {
		s.DueIn = RoundDuration(d)
	} else {
		s.DueIn = "now"
	}
	return s
}

// RoundDuration formats d as the operator views show ages and delays: to the minute past an
// hour, to the second past a second.
func RoundDuration(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	case d >= time.Second:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Millisecond).String()
	}
}

// List writes the unfinished records as a table or, with asJSON, a JSON array.
func List(w io.Writer, recs []*journal.Record, now time.Time, asJSON bool) error {
	rows := make([]Summary, 0, len(recs))
	for _, r := range recs {
		rows = append(rows, Summarise(r, now))
	}
	if asJSON {
		return writeJSON(w, rows)
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "no unfinished processes")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tSTATE\tAGE\tNEXT STEP\tDUE IN\tATTEMPTS\tLAST ERROR")
	for _, s := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.ProcessID, s.State, s.Age, s.NextStep, s.DueIn, s.Attempts, truncate(s.LastError, 80))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d unfinished\n", len(rows))
	return err
}

// ListFinished writes finished records (newest first, as Store.Finished lists them) as a table
// or, with asJSON, a JSON array.
func ListFinished(w io.Writer, recs []*journal.Record, now time.Time, asJSON bool) error {
	rows := make([]Summary, 0, len(recs))
	for _, r := range recs {
		rows = append(rows, Summarise(r, now))
	}
	if asJSON {
		return writeJSON(w, rows)
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "no finished processes")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tSTATE\tOUTCOME\tFINISHED\tPROFILE\tCA CONNECTION\tSERIAL\tFAILURE")
	for i, s := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ProcessID, s.State, s.Outcome, s.FinishedAt.UTC().Format(time.RFC3339),
			s.Profile, s.CA, s.Serial, truncate(recs[i].FailureMessage, 80))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d finished (most recent first)\n", len(rows))
	return err
}

// Filter says which records Run lists.
type Filter struct {
	// All lists finished records after the unfinished ones.
	All bool
	// State, when set, lists only records in that state (finished ones for a final state).
	State journal.State
	// Limit bounds the finished records listed (default DefaultLimit).
	Limit int
}

// DefaultLimit is how many finished records Run lists unless Filter.Limit says otherwise.
const DefaultLimit = 100

// ParseState checks the name of a state, as --state gives it.
func ParseState(name string) (journal.State, error) {
	var names []string
	for _, st := range journal.States() {
		if string(st) == name {
			return st, nil
		}
		names = append(names, string(st))
	}
	return "", fmt.Errorf("unknown state %q; want one of %s", name, strings.Join(names, ", "))
}

// Run lists what f selects from store: the unfinished records (the default), finished ones
// (All, or a final State), or those in one state. With All and asJSON, the unfinished and the
// finished rows form one array.
func Run(ctx context.Context, w io.Writer, store journal.Store, f Filter, now time.Time, asJSON bool) error {
	if f.State != "" && f.All {
		return errors.New("--all and --state do not go together: --state uploaded or failed lists finished records")
	}
	if f.Limit <= 0 {
		f.Limit = DefaultLimit
	}
	var unfinished, finished []*journal.Record
	wantUnfinished := f.State == "" || !f.State.Final()
	wantFinished := f.All || f.State.Final()
	all, err := store.Unfinished(ctx)
	if err != nil {
		return err
	}
	// Processes that ended but owe a revocation are listed with the finished ones when those
	// are listed, and with the unfinished ones otherwise (next step: the revocation).
	provisioning, settled := Settled(all)
	if !wantFinished {
		provisioning = all
	}
	for _, r := range provisioning {
		if f.State == "" || r.State == f.State {
			unfinished = append(unfinished, r)
		}
	}
	if wantFinished {
		done, err := store.Finished(ctx, f.State, f.Limit)
		if err != nil {
			return err
		}
		finished = MergeFinished(settled, done, f.State, f.Limit)
	}
	switch {
	case asJSON && wantUnfinished && wantFinished:
		return writeJSON(w, append(summaries(unfinished, now), summaries(finished, now)...))
	case wantFinished && !wantUnfinished:
		return ListFinished(w, finished, now, asJSON)
	case !wantFinished:
		return List(w, unfinished, now, asJSON)
	}
	if err := List(w, unfinished, now, false); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return ListFinished(w, finished, now, false)
}

// Settled splits unfinished records into those whose process is still being provisioned and
// those whose process has ended and that owe only the revocation of certificates it superseded
// (renewal hygiene, docs/renewal.md): to an operator, the latter are finished processes.
func Settled(recs []*journal.Record) (provisioning, settled []*journal.Record) {
	for _, r := range recs {
		if r.State.Final() && !r.AuditPending && !r.SupersedePending && r.RevocationsOpen() {
			settled = append(settled, r)
		} else {
			provisioning = append(provisioning, r)
		}
	}
	return provisioning, settled
}

// MergeFinished merges settled records (Settled) in state (any when empty) into finished ones,
// as Store.Finished lists them: most recently finished first, then by name, at most limit.
func MergeFinished(settled, finished []*journal.Record, state journal.State, limit int) []*journal.Record {
	out := slices.Clone(finished)
	for _, r := range settled {
		if state == "" || r.State == state {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b *journal.Record) int {
		return cmp.Or(-cmp.Compare(journal.UnixNanos(a.FinishedAt), journal.UnixNanos(b.FinishedAt)), cmp.Compare(a.Name, b.Name))
	})
	return out[:min(len(out), max(limit, 0))]
}

func summaries(recs []*journal.Record, now time.Time) []Summary {
	out := make([]Summary, 0, len(recs))
	for _, r := range recs {
		out = append(out, Summarise(r, now))
	}
	return out
}

// Detail is one process with its history; its JSON form is stable for scripts.
type Detail struct {
	Summary
	FailureMessage string    `json:"failureMessage,omitempty"`
	Operation      string    `json:"operation,omitempty"`
	SignDeadline   time.Time `json:"signDeadline,omitzero"`
	CAInFlight     bool      `json:"caInFlight,omitempty"`
	AuditPending   bool      `json:"auditPending,omitempty"`
	HasCertificate bool      `json:"hasCertificate"`
	// Certificate describes the certificate the CA issued, in the audit trail's terms;
	// CertificatePEM is the certificate itself, with WithPEM.
	Certificate    *audit.Certificate `json:"certificate,omitempty"`
	CertificatePEM string             `json:"certificatePem,omitempty"`
	// SupersedePending: the certificates this one supersedes are still to be looked for.
	SupersedePending bool `json:"supersedePending,omitempty"`
	// Revocations are the certificates this process's certificate superseded and their
	// revocation; RevokedBy, with WithRevokedBy, the revocation of this process's own
	// certificate that a newer process decided.
	Revocations []Revocation    `json:"revocations,omitempty"`
	RevokedBy   []Revocation    `json:"revokedBy,omitempty"`
	History     []journal.Event `json:"history"`
}

// Revocation is one revocation of a superseded certificate (journal.Revocation without the
// certificate itself); its JSON form is stable for scripts.
type Revocation struct {
	// Process is the process whose certificate is revoked; SupersededBy the one whose newer
	// certificate superseded it.
	Process      string                  `json:"process"`
	SupersededBy string                  `json:"supersededBy"`
	Serial       string                  `json:"serial"`
	CA           string                  `json:"caConnection"`
	Reason       string                  `json:"reason"`
	State        journal.RevocationState `json:"state"`
	Due          time.Time               `json:"due"`
	NextAttempt  time.Time               `json:"nextAttempt,omitzero"` // while pending
	Attempts     int                     `json:"attempts,omitempty"`
	LastError    string                  `json:"lastError,omitempty"`
	At           time.Time               `json:"at,omitzero"` // when it was revoked, or failed for good
	AuditPending bool                    `json:"auditPending,omitempty"`
}

func revocationOf(by string, v journal.Revocation) Revocation {
	out := Revocation{Process: v.Process, SupersededBy: by, Serial: v.Serial, CA: v.CAName, Reason: v.Reason, State: v.State,
		Due: v.Due, Attempts: v.Attempts, LastError: v.LastError, At: v.At, AuditPending: v.AuditPending}
	if v.State == journal.RevocationPending {
		out.NextAttempt = v.NextDue
	}
	return out
}

// RevokedBy finds the revocations of r's certificate that newer processes of its identity
// decided (more than one only when two renewals decided at once), from the journal.
func RevokedBy(ctx context.Context, store journal.Store, r *journal.Record) ([]Revocation, error) {
	id := r.IssuedIdentity()
	if id == "" {
		return nil, nil
	}
	recs, err := store.IssuedTo(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("look up the processes that superseded %s: %w", r.Name, err)
	}
	var out []Revocation
	for _, other := range recs {
		for _, v := range other.Revocations {
			if v.Process == r.Name {
				out = append(out, revocationOf(other.Name, v))
			}
		}
	}
	return out, nil
}

// ShowOption adjusts Show.
type ShowOption func(*showOptions)

type showOptions struct {
	pem       bool
	revokedBy []Revocation
}

// WithPEM adds the certificate's PEM (certificatePem in JSON).
func WithPEM() ShowOption { return func(o *showOptions) { o.pem = true } }

// WithRevokedBy adds the revocations of the record's certificate that newer processes decided
// (RevokedBy).
func WithRevokedBy(rs []Revocation) ShowOption { return func(o *showOptions) { o.revokedBy = rs } }

// certificateOf parses the certificate of r, if it has one.
func certificateOf(r *journal.Record) *audit.Certificate {
	if r.CertificatePEM == "" {
		return nil
	}
	certs, err := pemutil.ParseCertificates([]byte(r.CertificatePEM))
	if err != nil || len(certs) == 0 {
		return nil
	}
	return audit.CertificateOf(certs[0])
}

// Show writes one record, its certificate and its history.
func Show(w io.Writer, r *journal.Record, now time.Time, asJSON bool, opts ...ShowOption) error {
	var o showOptions
	for _, opt := range opts {
		opt(&o)
	}
	d := Detail{
		Summary: Summarise(r, now), FailureMessage: r.FailureMessage, Operation: r.Operation,
		SignDeadline: r.SignDeadline, CAInFlight: r.CAInFlight, AuditPending: r.AuditPending,
		HasCertificate: r.CertificatePEM != "", Certificate: certificateOf(r), History: r.History,
		SupersedePending: r.SupersedePending, RevokedBy: o.revokedBy,
	}
	for _, v := range r.Revocations {
		d.Revocations = append(d.Revocations, revocationOf(r.Name, v))
	}
	if o.pem {
		d.CertificatePEM = r.CertificatePEM
	}
	if asJSON {
		return writeJSON(w, d)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	field("process", r.Name)
	field("state", string(r.State))
	field("next step", d.NextStep)
	field("profile", r.ProfileName)
	field("CA connection", r.CAName)
	field("age", d.Age)
	if !r.Done() {
		field("due in", d.DueIn)
	}
	field("operation", r.Operation)
	if !r.SignDeadline.IsZero() {
		field("sign deadline", r.SignDeadline.UTC().Format(time.RFC3339))
	}
	if r.CAInFlight {
		field("CA request", "in flight (will be recovered on resume)")
	}
	field("failure message", r.FailureMessage)
	field("last error", r.LastError)
	if !r.FinishedAt.IsZero() {
		field("finished", r.FinishedAt.UTC().Format(time.RFC3339))
	}
	field("outcome", r.Outcome)
	if r.AuditPending {
		field("audit event", "pending (written on the next step)")
	}
	if c := d.Certificate; c != nil {
		field("certificate subject", c.Subject)
		field("issuer", c.Issuer)
		field("serial", c.Serial)
		if c.SANs != nil {
			field("SANs", describeSANs(c.SANs))
		}
		field("not before", c.NotBefore.Format(time.RFC3339))
		field("not after", c.NotAfter.Format(time.RFC3339))
		field("SPKI SHA-256", c.SPKISHA256)
	} else if r.CertificatePEM != "" {
		field("certificate", "stored, but it does not parse")
	}
	if r.SupersedePending {
		field("superseded certificates", "to be looked for (on the next step)")
	}
	for _, v := range d.Revocations {
		field("supersedes", describeRevocation(v, v.Process, now))
	}
	for _, v := range d.RevokedBy {
		field("superseded by", describeRevocation(v, v.SupersededBy, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nhistory:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range r.History {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.At.UTC().Format("2006-01-02T15:04:05.000Z"), e.State, truncate(e.Note, 120))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if o.pem && r.CertificatePEM != "" {
		_, err := fmt.Fprintf(w, "\n%s", r.CertificatePEM)
		return err
	}
	return nil
}

// describeRevocation is one line about v, naming the other process of it.
func describeRevocation(v Revocation, other string, now time.Time) string {
	head := fmt.Sprintf("%s, serial %s at %s: ", other, v.Serial, v.CA)
	switch {
	case v.State == journal.RevocationPending && v.NextAttempt.After(now):
		head += fmt.Sprintf("revocation (%s) pending, due in %s", v.Reason, RoundDuration(v.NextAttempt.Sub(now)))
	case v.State == journal.RevocationPending:
		head += fmt.Sprintf("revocation (%s) pending, due now", v.Reason)
	default:
		head += fmt.Sprintf("%s (%s) at %s", v.State, v.Reason, v.At.UTC().Format(time.RFC3339))
	}
	if v.Attempts > 0 && v.LastError != "" {
		head += fmt.Sprintf("; %d failed attempts, last: %s", v.Attempts, truncate(v.LastError, 100))
	}
	return head
}

func describeSANs(s *audit.SANs) string {
	var parts []string
	for _, kind := range []struct {
		name  string
		names []string
	}{{"dns", s.DNS}, {"email", s.Email}, {"uri", s.URI}, {"ip", s.IP}} {
		if len(kind.names) > 0 {
			parts = append(parts, kind.name+": "+strings.Join(kind.names, ", "))
		}
	}
	return strings.Join(parts, "; ")
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// truncate is s on one line in at most n bytes, cut on a character boundary.
func truncate(s string, n int) string {
	return ca.Truncate(strings.ReplaceAll(s, "\n", " "), n, "...")
}

// NextStep says in words what the adapter will do next for r.
func NextStep(r *journal.Record) string {
	if r.State.Final() {
		switch {
		case r.SupersedePending:
			return "look for the certificates it supersedes"
		case r.AuditPending:
			return "write the audit event"
		}
		for _, v := range r.Revocations {
			switch {
			case v.AuditPending:
				return "write the audit event of revoking serial " + v.Serial
			case v.State == journal.RevocationPending:
				return "revoke superseded serial " + v.Serial
			}
		}
	}
	return StateNextStep(r.State)
}

// StateNextStep says in words what the adapter will do next for a record in state s.
func StateNextStep(s journal.State) string {
	switch s {
	case journal.StateClaimed:
		return "ask the device to sign"
	case journal.StateSignRequested:
		return "wait for the device signature"
	case journal.StateSigned:
		return "ask the CA"
	case journal.StateCAPending:
		return "ask the CA again (pending)"
	case journal.StateIssued:
		return "upload the certificate"
	case journal.StateFailing:
		return "report the failure"
	case journal.StateUploaded, journal.StateFailed:
		return "none (finished)"
	}
	return "unknown"
}

// Find reads the record an operator named: a full process name, or a bare id, which is looked up
// under each of customers in turn.
func Find(ctx context.Context, store journal.Store, customers []string, arg string) (*journal.Record, error) {
	if strings.HasPrefix(arg, "customers/") {
		return store.Get(ctx, arg)
	}
	for _, c := range customers {
		rec, err := store.Get(ctx, process.Name(c, arg))
		if err == nil {
			return rec, nil
		}
		if !errors.Is(err, journal.ErrNotFound) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no process %q in the journal (customers %v)", arg, customers)
}
