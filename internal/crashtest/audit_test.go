package crashtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/emulator"
)

// auditFile is the audit log of the adapter whose configuration writeConfig named name.
func (w *world) auditFile(name string) string { return filepath.Join(w.dir, name+"-audit.jsonl") }

// readAudit reads the events of one audit file by id, counting the lines of each id.
func (w *world) readAudit(path string) (map[string]audit.Event, map[string]int) {
	w.t.Helper()
	events, lines := map[string]audit.Event{}, map[string]int{}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return events, lines
	}
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev audit.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			// SIGKILL cannot cut a write(2) short, so every line must be whole.
			w.t.Errorf("%s: line is not an event: %v: %q", path, err, sc.Text())
			continue
		}
		events[ev.ID] = ev
		lines[ev.ID]++
	}
	if err := sc.Err(); err != nil {
		w.t.Fatal(err)
	}
	return events, lines
}

// waitAudited waits until the files hold an event for every process, or the timeout passes: an
// event comes after the final state, from whichever adapter takes the record next after a kill.
func (w *world) waitAudited(names []string, files []string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		seen := map[string]bool{}
		for _, f := range files {
			evs, _ := w.readAudit(f)
			for id := range evs {
				seen[id] = true
			}
		}
		missing := 0
		for _, n := range names {
			if !seen[n] {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkAudit asserts that every process has an audit event matching how it ended (the serial of
// the certificate the device holds), and that no file holds one twice. Across files (replicas
// sharing a journal, each with its own file) an event may repeat when a replica died between
// writing it and journaling that; those are counted and returned, not failed.
func (w *world) checkAudit(names []string, files ...string) (crossFileRepeats int) {
	w.t.Helper()
	all := map[string]audit.Event{}
	count := map[string]int{}
	for _, f := range files {
		evs, lines := w.readAudit(f)
		for id, n := range lines {
			if n > 1 {
				w.t.Errorf("%s: %d audit events for %s", filepath.Base(f), n, id)
			}
			count[id]++
			all[id] = evs[id]
		}
	}
	for _, n := range names {
		s, _ := w.emu.Process(n)
		ev, ok := all[n]
		if !ok {
			w.t.Errorf("%s (%s): no audit event", n, s.State)
			continue
		}
		if count[n] > 1 {
			crossFileRepeats++
		}
		switch s.State {
		case emulator.StateIssued:
			roots := w.roots
			if w.caOf[n] == "scep" {
				roots = poolOf(w.scep.CA)
			}
			leaf, err := emulator.VerifyIssued(s, roots, nil)
			if err != nil {
				w.t.Errorf("%s: %v", n, err)
				continue
			}
			if ev.Outcome != "issued" || ev.Certificate == nil || ev.Certificate.Serial != leaf.SerialNumber.Text(16) ||
				ev.SPKISHA256 != audit.SPKISHA256(s.SPKI) {
				w.t.Errorf("%s: audit event %+v does not match the uploaded certificate %s", n, ev, leaf.SerialNumber.Text(16))
			}
		case emulator.StateFailed:
			if ev.Outcome == "issued" || ev.Failure == "" {
				w.t.Errorf("%s: failed (%q) but audited as %+v", n, s.FailureMessage, ev)
			}
		}
	}
	return crossFileRepeats
}
