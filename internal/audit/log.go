package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/privatefile"
)

// Stdout is the audit.path that selects standard output, as an empty one does.
const Stdout = "-"

// ErrClosed is returned by the methods of a closed Log.
var ErrClosed = errors.New("audit log is closed")

// maxLine bounds the lines Written reads: an event is a few kilobytes, so a longer line is not
// one of ours and is skipped.
const maxLine = 1 << 20

// Log is an audit sink: JSON lines appended to a file, or written to a stream (standard
// output). It is safe for concurrent use.
//
// On a file, Write returns only once the line is on disk (an fsync begun after the line was
// written), so that an event reported written survives a crash or a power loss; concurrent
// writers share one fsync (group commit: the engine's workers finish processes at once). The
// file is opened append-only and created 0600. Written tells whether an event is already in the
// file, which is what makes a write retried after a crash exactly-once. A stream is neither synced nor searchable: events
// written again after a crash appear twice there, identical, with the same id.
type Log struct {
	// swap is held for reading while the sink is in use and for writing to reopen or close it,
	// so that a search of the file may run beside writes but not beside a reopen.
	swap   sync.RWMutex
	mu     sync.Mutex // serializes writes
	path   string     // "" for a stream
	f      *os.File   // the file; nil for a stream
	out    io.Writer
	opened *os.File // what open opened (the file, a FIFO or a device), closed with the log
	torn   bool     // the sink may end in a partial line, so the next event starts a new one
	closed bool
	log    *zap.Logger

	// Group commit. written counts the lines written to f (under mu); synced is the count an
	// fsync has made durable, and lines up to failedThrough were written before an fsync that
	// failed: their pages may be gone even if a later fsync succeeds, so their writers are told
	// (under syncMu, which one fsync holds at a time). All three restart with a new file.
	syncMu        sync.Mutex
	written       uint64
	synced        uint64
	failedThrough uint64
	failErr       error
	// syncFile, when set, stands in for (*os.File).Sync: tests' disk.
	syncFile func(*os.File) error
}

// Open opens the audit sink at path: standard output when path is "" or "-", else the file,
// created (with its directory, 0700) if missing. log (nil for none) hears about a file that
// others may read.
func Open(path string, log *zap.Logger) (*Log, error) {
	if log == nil {
		log = zap.NewNop()
	}
	l := &Log{log: log}
	if err := l.open(path); err != nil {
		return nil, err
	}
	return l, nil
}

// NewStream is a Log that writes to w, as to standard output (tests, pipes).
func NewStream(w io.Writer) *Log { return &Log{out: w, log: zap.NewNop()} }

// open points l at path; l.swap must be held for writing, or l not shared yet.
func (l *Log) open(path string) error {
	if path == "" || path == Stdout {
		l.path, l.f, l.out, l.torn, l.opened = "", nil, os.Stdout, false, nil
		return nil
	}
	dir := filepath.Dir(path)
	if err := privatefile.MkdirAll(dir); err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	if err := privatefile.Create(path); err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open audit log %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("open audit log %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		// A FIFO or a device (/dev/stdout): a stream, which cannot be synced or searched.
		l.path, l.f, l.out, l.torn, l.opened = "", nil, f, false, f
		return nil
	}
	privatefile.WarnIfShared(l.log, "audit log", "the names of the users, devices and certificates served", dir, path)
	torn, err := endsTorn(f, st.Size())
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("open audit log %s: %w", path, err)
	}
	l.path, l.f, l.out, l.torn, l.opened = path, f, f, torn, f
	return nil
}

// endsTorn reports whether a file of size bytes ends in a partial line (a write cut short by a
// crash), which the next event must not be glued to.
func endsTorn(f *os.File, size int64) (bool, error) {
	if size == 0 {
		return false, nil
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return false, err
	}
	return last[0] != '\n', nil
}

// Path is the file events go to, or "" for a stream.
func (l *Log) Path() string {
	l.swap.RLock()
	defer l.swap.RUnlock()
	return l.path
}

// Write appends ev as one line. On a file it returns nil only once the line is synced to disk.
func (l *Log) Write(ev *Event) error {
	line, err := encode(ev)
	if err != nil {
		return fmt.Errorf("audit event %s: %w", ev.ID, err)
	}
	line = append(line, '\n')
	l.swap.RLock()
	defer l.swap.RUnlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if l.torn {
		line = append([]byte{'\n'}, line...)
	}
	n, err := l.out.Write(line)
	if err != nil || n < len(line) {
		// Part of the line may be out: whatever follows starts on a line of its own.
		l.torn = l.torn || n > 0
		l.mu.Unlock()
		return fmt.Errorf("write audit event %s to %s: %w", ev.ID, l.name(), cmpErr(err, io.ErrShortWrite))
	}
	l.torn = false
	if l.f == nil {
		l.mu.Unlock()
		return nil
	}
	l.written++
	seq := l.written
	l.mu.Unlock()
	// swap is still held for reading: the file cannot be swapped or closed under the sync.
	if err := l.syncThrough(seq); err != nil {
		return fmt.Errorf("sync audit log %s after event %s: %w", l.path, ev.ID, err)
	}
	return nil
}

// syncThrough returns once line seq of the file is on disk: at once if an fsync begun after it
// was written succeeded, else after an fsync of its own, which makes every line written so far
// durable for their writers too (they wait on syncMu meanwhile and then find theirs synced).
func (l *Log) syncThrough(seq uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	switch {
	case seq <= l.synced:
		return nil
	case seq <= l.failedThrough:
		return l.failErr
	}
	l.mu.Lock()
	through := l.written
	l.mu.Unlock()
	sync := (*os.File).Sync
	if l.syncFile != nil {
		sync = l.syncFile
	}
	if err := sync(l.f); err != nil {
		l.failedThrough, l.failErr = through, err
		return err
	}
	l.synced = through
	return nil
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

func (l *Log) name() string {
	if l.path == "" {
		return "the audit stream"
	}
	return l.path
}

// Written reports whether the file holds a complete event with id, synced to disk. A stream
// cannot tell and says false. It reads the whole file, so it is for the rare write that may
// have happened before a crash, not for every event.
func (l *Log) Written(id string) (bool, error) {
	l.swap.RLock()
	defer l.swap.RUnlock()
	l.mu.Lock()
	f, closed := l.f, l.closed
	var size int64
	var err error
	if f != nil && !closed {
		var st fs.FileInfo
		if st, err = f.Stat(); err == nil {
			size = st.Size()
		}
	}
	l.mu.Unlock()
	switch {
	case closed:
		return false, ErrClosed
	case f == nil:
		return false, nil
	case err != nil:
		return false, fmt.Errorf("search audit log %s: %w", l.path, err)
	}
	found, err := contains(io.NewSectionReader(f, 0, size), id)
	if err != nil {
		return false, fmt.Errorf("search audit log %s for %s: %w", l.path, id, err)
	}
	if found {
		// The line may be in the page cache only, if the sync that followed it failed.
		if err := f.Sync(); err != nil {
			return false, fmt.Errorf("sync audit log %s: %w", l.path, err)
		}
	}
	return found, nil
}

// contains scans r's lines for a complete event with id.
func contains(r io.Reader, id string) (bool, error) {
	needle, err := encode(map[string]string{"id": id})
	if err != nil {
		return false, err
	}
	needle = bytes.TrimSuffix(bytes.TrimPrefix(needle, []byte("{")), []byte("}"))
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte // a line longer than the buffer, while it is read
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(long) <= maxLine {
				long = append(long, chunk...)
			}
			continue
		}
		line := chunk
		if long != nil {
			line, long = append(long, chunk...), nil
		}
		if len(line) <= maxLine && bytes.Contains(line, needle) {
			var ev struct {
				ID string `json:"id"`
			}
			// A line cut short by a crash does not parse: that event was not written.
			if json.Unmarshal(line, &ev) == nil && ev.ID == id {
				return true, nil
			}
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// encode is JSON without HTML escaping, so that names read as they are.
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Reopen points the log at path ("" or "-" for standard output), which may be the one it has:
// after logrotate moved the file, or a reload changed audit.path. The new sink is opened first;
// if that fails the log keeps the old one and says why.
func (l *Log) Reopen(path string) error {
	p, err := l.Prepare(path)
	if err != nil {
		return err
	}
	return p.Apply()
}

// Prepared is a sink opened for a Log, not in use yet: a reload opens it before it applies
// anything, so that a path that cannot be opened refuses the whole reload.
type Prepared struct {
	l    *Log
	next *Log
}

// Prepare opens the sink at path for l, without switching to it.
func (l *Log) Prepare(path string) (*Prepared, error) {
	next := &Log{log: l.log}
	if err := next.open(path); err != nil {
		return nil, err
	}
	return &Prepared{l: l, next: next}, nil
}

// Apply switches the log to the prepared sink and closes the old one.
func (p *Prepared) Apply() error {
	l, next := p.l, p.next
	l.swap.Lock()
	defer l.swap.Unlock()
	if l.closed {
		p.Discard()
		return ErrClosed
	}
	old := l.opened
	l.path, l.f, l.out, l.torn, l.opened = next.path, next.f, next.out, next.torn, next.opened
	// No write is under way (swap is held): the counts start again with the new file.
	l.written, l.synced, l.failedThrough, l.failErr = 0, 0, 0, nil
	if old != nil {
		if err := old.Close(); err != nil {
			l.log.Warn("closing the previous audit log file", zap.Error(err))
		}
	}
	return nil
}

// Discard closes the prepared sink unused.
func (p *Prepared) Discard() {
	if p.next.opened != nil {
		_ = p.next.opened.Close()
	}
}

// Close closes the file; later calls to Write fail with ErrClosed.
func (l *Log) Close() error {
	l.swap.Lock()
	defer l.swap.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.opened != nil {
		return l.opened.Close()
	}
	return nil
}
