package inspect

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/process"
)

func record(now time.Time) *journal.Record {
	r := &journal.Record{
		Name:    process.Name("C0x", "ABCDEF0123456789ABCDEF0123456789"),
		Process: &process.Process{ID: "ABCDEF0123456789ABCDEF0123456789"},
		State:   journal.StateClaimed, ProfileName: "device", CAName: "builtin",
		Created: now.Add(-90 * time.Second), NextDue: now.Add(30 * time.Second),
	}
	r.Log(now.Add(-90*time.Second), "claimed as a1")
	r.State, r.Operation, r.Attempts, r.LastError = journal.StateSignRequested, "op/1", 3, "HTTP 503:\nbackend unavailable"
	r.Log(now.Add(-80*time.Second), "operation op/1")
	return r
}

func TestListTableAndJSON(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	if err := List(&buf, []*journal.Record{record(now)}, now, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"ABCDEF0123456789ABCDEF0123456789", "sign_requested", "1m30s", "wait for the device signature", "30s", "HTTP 503: backend unavailable", "1 unfinished"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	buf.Reset()
	if err := List(&buf, []*journal.Record{record(now)}, now, true); err != nil {
		t.Fatal(err)
	}
	var rows []Summary
	if err := json.Unmarshal(buf.Bytes(), &rows); err != nil {
		t.Fatalf("JSON output does not parse: %v\n%s", err, buf.String())
	}
	if len(rows) != 1 || rows[0].State != journal.StateSignRequested || rows[0].Attempts != 3 || rows[0].DueIn != "30s" {
		t.Fatalf("rows %+v", rows)
	}
	buf.Reset()
	if err := List(&buf, nil, now, false); err != nil || !strings.Contains(buf.String(), "no unfinished") {
		t.Fatalf("empty list: %q, %v", buf.String(), err)
	}
}

func TestShowHistory(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	if err := Show(&buf, record(now), now, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"history:", "claimed as a1", "operation op/1", "profile:", "device", "due in:"} {
		if !strings.Contains(out, want) {
			t.Errorf("detail lacks %q:\n%s", want, out)
		}
	}
	buf.Reset()
	if err := Show(&buf, record(now), now, true); err != nil {
		t.Fatal(err)
	}
	var d Detail
	if err := json.Unmarshal(buf.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.History) != 2 || d.History[0].State != journal.StateClaimed || d.Operation != "op/1" {
		t.Fatalf("detail %+v", d)
	}
}
