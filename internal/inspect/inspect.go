// Package inspect renders journal records for operators: a table of unfinished processes and the
// history of one, as text or JSON.
package inspect

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
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
}

// Summarise turns a record into a row, with ages relative to now.
func Summarise(r *journal.Record, now time.Time) Summary {
	s := Summary{
		Name: r.Name, State: r.State, NextStep: r.State.NextStep(), Attempts: r.Attempts,
		Profile: r.ProfileName, CA: r.CAName, LastError: r.LastError, Created: r.Created, NextDue: r.NextDue,
		Age: roundDuration(now.Sub(r.Created)),
	}
	if r.Process != nil {
		s.ProcessID = r.Process.ID
	} else if i := strings.LastIndexByte(r.Name, '/'); i >= 0 {
		s.ProcessID = r.Name[i+1:]
	}
	if d := r.NextDue.Sub(now); d > 0 {
		s.DueIn = roundDuration(d)
	} else {
		s.DueIn = "now"
	}
	return s
}

func roundDuration(d time.Duration) string {
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

// Detail is one process with its history; its JSON form is stable for scripts.
type Detail struct {
	Summary
	FailureMessage string          `json:"failureMessage,omitempty"`
	Operation      string          `json:"operation,omitempty"`
	SignDeadline   time.Time       `json:"signDeadline,omitzero"`
	CAInFlight     bool            `json:"caInFlight,omitempty"`
	HasCertificate bool            `json:"hasCertificate"`
	FinishedAt     time.Time       `json:"finishedAt,omitzero"`
	History        []journal.Event `json:"history"`
}

// Show writes one record and its history.
func Show(w io.Writer, r *journal.Record, now time.Time, asJSON bool) error {
	d := Detail{
		Summary: Summarise(r, now), FailureMessage: r.FailureMessage, Operation: r.Operation,
		SignDeadline: r.SignDeadline, CAInFlight: r.CAInFlight, HasCertificate: r.CertificatePEM != "",
		FinishedAt: r.FinishedAt, History: r.History,
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
	if !r.State.Final() {
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
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nhistory:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range r.History {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.At.UTC().Format("2006-01-02T15:04:05.000Z"), e.State, truncate(e.Note, 120))
	}
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
