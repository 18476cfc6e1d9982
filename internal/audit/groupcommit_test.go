package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/clocktest"
)

// disk stands in for fsync: each call waits for a value from its gate (nil: synced), and counts
// how many lines the file had when the call began.
type disk struct {
	mu      sync.Mutex
	calls   []int64 // file size at each call
	entered chan struct{}
	gate    chan error
}

func newDisk() *disk { return &disk{entered: make(chan struct{}, 16), gate: make(chan error)} }

func (d *disk) sync(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.calls = append(d.calls, st.Size())
	d.mu.Unlock()
	d.entered <- struct{}{}
	return <-d.gate
}

// waitSync waits for an fsync to begin.
func (d *disk) waitSync(t *testing.T) {
	t.Helper()
	select {
	case <-d.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no fsync began within 10s")
	}
}

// end ends the fsync under way with err.
func (d *disk) end(t *testing.T, err error) {
	t.Helper()
	select {
	case d.gate <- err:
	case <-time.After(10 * time.Second):
		t.Fatal("no fsync under way to end within 10s")
	}
}

func (d *disk) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.calls)
}

func openWithDisk(t *testing.T) (*Log, *disk, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	d := newDisk()
	l.syncFile = d.sync
	return l, d, path
}

func (l *Log) linesWritten() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.written
}

func ev(id string) *Event {
	return &Event{SchemaVersion: SchemaVersion, ID: id, Kind: KindEnrollment, Outcome: "issued"}
}

// TestGroupCommit: while one event's fsync is under way, fifteen others are written; they all
// return after one more fsync, begun once all fifteen lines were in the file, not fifteen.
func TestGroupCommit(t *testing.T) {
	l, d, path := openWithDisk(t)
	first := make(chan error, 1)
	go func() { first <- l.Write(ev("first")) }()
	d.waitSync(t) // the first fsync holds the disk

	const others = 15
	errs := make(chan error, others)
	for i := range others {
		go func() { errs <- l.Write(ev(fmt.Sprintf("other-%d", i))) }()
	}
	clocktest.WaitFor(t, "fifteen more lines written", 10*time.Second, func() bool { return l.linesWritten() == others+1 })
	d.end(t, nil) // the first fsync ends
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	d.waitSync(t) // one fsync for the fifteen
	d.end(t, nil)
	for range others {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := d.count(); n != 2 {
		t.Fatalf("%d fsyncs for %d events, want 2", n, others+1)
	}
	if d.calls[1] != st.Size() {
		t.Errorf("the second fsync began with %d bytes in the file, want all %d", d.calls[1], st.Size())
	}
	if lines := strings.Count(readFile(t, path), "\n"); lines != others+1 {
		t.Errorf("%d lines in the file, want %d", lines, others+1)
	}
}

// TestGroupCommitFailure: an fsync that fails fails every event written before it began, also
// those whose writers did not run it (their pages may be lost though a later fsync succeeds);
// an event written after it is synced by an fsync of its own.
func TestGroupCommitFailure(t *testing.T) {
	l, d, _ := openWithDisk(t)
	first := make(chan error, 1)
	go func() { first <- l.Write(ev("first")) }()
	d.waitSync(t)

	const batch = 3
	errs := make(chan error, batch)
	for i := range batch {
		go func() { errs <- l.Write(ev(fmt.Sprintf("batch-%d", i))) }()
	}
	clocktest.WaitFor(t, "the batch written", 10*time.Second, func() bool { return l.linesWritten() == batch+1 })
	d.end(t, nil)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	d.waitSync(t) // the batch's fsync
	lost := errors.New("EIO")
	d.end(t, lost)
	for range batch {
		if err := <-errs; !errors.Is(err, lost) {
			t.Errorf("an event written before the failed fsync: %v, want the fsync's error", err)
		}
	}
	if n := d.count(); n != 2 {
		t.Errorf("%d fsyncs, want 2: the failure answers the whole batch", n)
	}

	after := make(chan error, 1)
	go func() { after <- l.Write(ev("after")) }()
	d.waitSync(t)
	d.end(t, nil)
	if err := <-after; err != nil {
		t.Errorf("an event written after the failure: %v", err)
	}
}

// TestGroupCommitReopen: a reopened log counts its new file's lines from zero, so the first
// event there is synced, not taken for one the old file's fsync covered.
func TestGroupCommitReopen(t *testing.T) {
	l, d, path := openWithDisk(t)
	for i := range 3 {
		done := make(chan error, 1)
		go func() { done <- l.Write(ev(fmt.Sprintf("old-%d", i))) }()
		d.waitSync(t)
		d.end(t, nil)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Reopen(path + ".new"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Write(ev("new")) }()
	d.waitSync(t) // synced again
	d.end(t, nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := d.count(); n != 4 {
		t.Errorf("%d fsyncs, want 4", n)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
