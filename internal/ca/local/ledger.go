package local

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"
)

// LedgerEntry is one line of the ledger file: a certificate the connector returned.
type LedgerEntry struct {
	Key      string    `json:"key"`    // ca.Request.Key, the process name
	Serial   string    `json:"serial"` // hexadecimal
	Time     time.Time `json:"time"`
	NotAfter time.Time `json:"notAfter"`
	// Certificate is the DER leaf, so that a request interrupted by a crash can be completed
	// with the certificate already issued (ca.Recoverer) instead of a second one.
	Certificate []byte `json:"certificate,omitempty"`
}

// maxLineBytes bounds one ledger line: a JSON entry with one certificate is a few KB.
const maxLineBytes = 1 << 20

// appendLedger appends one line (ending in '\n') to the ledger and syncs it, so that the line
// survives a crash that follows the return of the certificate, and returns the byte offset at
// which it landed. The file is opened with O_APPEND and locked (flock) for the write, so that
// several processes (an adapter and the one it restarts into, replicas) can share it.
//
// A last line without its newline is a write that a crash or a full disk cut short: its
// certificate was never returned. It is cut off before appending, under the lock, so that it
// cannot merge with the new line into one that no reader can parse.
func appendLedger(path string, line []byte, log *zap.Logger) (pos int64, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, fmt.Errorf("open ledger: %w", err)
	}
	// Closing releases the lock, after the sync.
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close ledger: %w", cerr)
		}
	}()
	if err := lockExclusive(f); err != nil {
		return 0, fmt.Errorf("lock ledger: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("ledger: %w", err)
	}
	end, err := lastLineEnd(f, fi.Size())
	if err != nil {
		return 0, fmt.Errorf("ledger %s: %w", path, err)
	}
	if end < fi.Size() {
		if err := f.Truncate(end); err != nil {
			return 0, fmt.Errorf("ledger: cut off torn last line: %w", err)
		}
		log.Warn("ledger ended in a line a crash cut short; removed it (its certificate was never returned)",
			zap.String("path", path), zap.Int64("offset", end), zap.Int64("bytes", fi.Size()-end))
	}
	if _, err := f.Write(line); err != nil {
		return 0, fmt.Errorf("write ledger: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sync ledger: %w", err)
	}
	return end, nil
}

// lastLineEnd returns the offset just after the last '\n' of a file of the given size. Bytes
// after it must look like the start of an entry cut short ('{', under maxLineBytes); anything
// else means the file is not a ledger, and is not touched.
func lastLineEnd(f *os.File, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	buf := make([]byte, 4096)
	end := int64(0) // no '\n' at all: the whole file is the torn line
	for to := size; to > 0 && size-to <= maxLineBytes; {
		from := max(0, to-int64(len(buf)))
		chunk := buf[:to-from]
		if _, err := f.ReadAt(chunk, from); err != nil {
			return 0, fmt.Errorf("read: %w", err)
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			end = from + int64(i) + 1
			break
		}
		to = from
	}
	if end == size {
		return end, nil
	}
	return end, checkTorn(f, end, size)
}

func checkTorn(f *os.File, from, size int64) error {
	first := make([]byte, 1)
	if _, err := f.ReadAt(first, from); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if first[0] != '{' || size-from > maxLineBytes {
		return fmt.Errorf("the %d bytes after offset %d are not a ledger entry (is ledgerFile the right file?)", size-from, from)
	}
	return nil
}

// scanLines calls fn with every complete line of r and its byte offset, r being the ledger
// from offset start on. The line includes its '\n' and is valid only during the call. A last
// line without its newline is a write a crash cut short (or one still under way in another
// process) and is not passed on. It returns the offset after the last complete line.
func scanLines(r io.Reader, start int64, fn func(pos int64, line []byte) error) (end int64, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	pos := start
	var long []byte // a line longer than the reader's buffer, assembled
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			long = append(long, chunk...)
			if len(long) > maxLineBytes {
				return pos, fmt.Errorf("entry at byte %d is longer than %d bytes", pos, maxLineBytes)
			}
			continue
		case errors.Is(err, io.EOF):
			return pos, nil
		case err != nil:
			return pos, err
		}
		line := chunk
		if len(long) > 0 {
			long = append(long, chunk...)
			line = long
		}
		if err := fn(pos, line); err != nil {
			return pos, err
		}
		pos += int64(len(line))
		long = long[:0]
	}
}

// ReadLedger reads every complete line of a ledger file. A last line without its newline is a
// write the crash interrupted (its certificate was never returned) and is skipped. It holds
// every entry in memory: it is for tests and tools, not for the connector, which uses an index.
func ReadLedger(path string) ([]LedgerEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	defer func() { _ = f.Close() }()
	var out []LedgerEntry
	n := 0
	_, err = scanLines(f, 0, func(_ int64, line []byte) error {
		n++
		if len(bytes.TrimSpace(line)) == 0 {
			return nil
		}
		var e LedgerEntry
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("ledger %s line %d: %w", path, n, err)
		}
		if e.Key == "" {
			return fmt.Errorf("ledger %s line %d: no key", path, n)
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	return out, nil
}

// LedgerCounts reads a ledger and counts certificates per request key.
func LedgerCounts(path string) (map[string]int, error) {
	entries, err := ReadLedger(path)
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, e := range entries {
		counts[e.Key]++
	}
	return counts, nil
}
