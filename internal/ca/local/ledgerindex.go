package local

import (
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/privatefile"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// ledger is the ledger file together with its index, an SQLite file beside it (IndexSuffix)
// that maps each request key to the offsets of its lines. Opening the connector and Recover read
// only the lines the index does not cover yet, and nothing per certificate stays in memory.
//
// The file is the record: a certificate is in it, synced, before Issue returns. The index is
// derived from the file and may lag behind it (a crash between the two writes, another process
// appending): every complete line before progress.indexed_to is indexed, and the lines after it
// are indexed on open and when a lookup misses. Deleting the index is safe; it is rebuilt from
// the file on the next open.
type ledger struct {
	path      string
	indexPath string
	log       *zap.Logger
	db        *sql.DB
	// The statements of the frequent paths, prepared once: SQLite spends more time compiling
	// these than running them.
	lookupStmt, progressStmt *sql.Stmt
	// session tells this connector's rows from those of other connectors sharing the ledger,
	// for Issued.
	session int64

	mu     sync.Mutex   // one append at a time in this process; flock orders processes
	parsed atomic.Int64 // lines read from the file to index them
}

// IndexSuffix is appended to ledgerFile to name its index.
const IndexSuffix = ".index"

const (
	indexSchemaVersion = 1
	// catchUpBytes is how much of the file one indexing transaction covers, so that a large
	// migration does not hold the index's write lock for long. It is above maxLineBytes, so
	// every chunk holds at least one complete line.
	catchUpBytes = 8 << 20
	// headBytes of the file's first line are kept in the index, to notice a file replaced
	// under it; they include the first serial number, which is random.
	headBytes = 256
	// indexBusyTimeout is how long a statement waits for another process's lock on the index.
	indexBusyTimeout = 10 * time.Second
)

var indexSchema = []string{
	`CREATE TABLE IF NOT EXISTS entries (
		pos     INTEGER NOT NULL PRIMARY KEY, -- byte offset of the line in the ledger file
		length  INTEGER NOT NULL,             -- of the line, newline included
		key     TEXT    NOT NULL,
		serial  TEXT    NOT NULL,
		session INTEGER                       -- the connector that wrote it; NULL when read from the file
	) STRICT`,
	`CREATE INDEX IF NOT EXISTS entries_key ON entries (key, pos)`,
	`CREATE TABLE IF NOT EXISTS progress (
		id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
		indexed_to INTEGER NOT NULL, -- every complete line before this offset is indexed
		head       BLOB              -- the first headBytes of the file's first line
	) STRICT`,
	`INSERT INTO progress (id, indexed_to) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`,
	fmt.Sprintf(`PRAGMA user_version = %d`, indexSchemaVersion),
}

// errStaleIndex means an index row does not describe the line at its offset: the file was
// replaced or edited under the index.
var errStaleIndex = errors.New("ledger index does not match the ledger file")

// openLedger opens the ledger file at path (creating it) and its index, and indexes what the
// file holds beyond the index: everything, the first time an existing ledger is opened with an
// index (a ledger written before the index existed is migrated so, and stays as it is).
func openLedger(ctx context.Context, path string, log *zap.Logger) (*ledger, error) {
	// Created now, so that a wrong path fails at startup and not after signing.
	if err := privatefile.Create(path); err != nil {
		return nil, err
	}
	l := &ledger{path: path, indexPath: path + IndexSuffix, log: log, session: rand.Int64()}
	db, err := openIndex(ctx, l.indexPath)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w (delete it to rebuild it from the ledger)", l.indexPath, err)
	}
	l.db = db
	warnIfShared(path, log)
	if l.lookupStmt, err = db.PrepareContext(ctx, `SELECT pos, length, key, serial FROM entries WHERE key = ? ORDER BY pos DESC LIMIT 1`); err == nil {
		l.progressStmt, err = db.PrepareContext(ctx, `SELECT indexed_to FROM progress`)
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("index %s: %w", l.indexPath, err)
	}
	start := time.Now()
	n, err := l.catchUp(ctx)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	if n > 0 {
		log.Info("ledger indexed", zap.String("path", path), zap.Int("lines", n), zap.Duration("took", time.Since(start)))
	}
	return l, nil
}

func openIndex(ctx context.Context, path string) (*sql.DB, error) {
	// SQLite gives the -wal and -shm files it creates the mode of the database file, so
	// creating that first keeps all three private.
	if err := privatefile.Create(path); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", indexBusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	// The file is the durable record and the index is rebuilt from it, so the index needs
	// consistency after a crash (WAL gives it) but not a sync per commit.
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	// One connection: writes are serialized in this process, and the page cache (SQLite's
	// default, about 2 MB) is the index's whole memory.
	db.SetMaxOpenConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	if err := migrateIndex(ctx, db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

func migrateIndex(ctx context.Context, db *sql.DB) error {
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	switch {
	case version == indexSchemaVersion:
		return nil
	case version > indexSchemaVersion:
		return fmt.Errorf("schema version %d is newer than this adapter's %d", version, indexSchemaVersion)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, stmt := range indexSchema {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	return nil
}

// warnIfShared logs, at warn, the ledger's directory and files that group or others may access:
// the ledger names every device and user the CA served, and whoever can write the directory can
// replace the ledger (and so make the CA issue twice).
func warnIfShared(path string, log *zap.Logger) {
	privatefile.WarnIfShared(log, "ledger", "every device and user the CA served", filepath.Dir(path),
		path, path+IndexSuffix, path+IndexSuffix+"-wal", path+IndexSuffix+"-shm")
}

func (l *ledger) close() error {
	return errors.Join(l.lookupStmt.Close(), l.progressStmt.Close(), l.db.Close())
}

// add appends the certificate to the file (synced) and indexes it. Once the line is synced the
// certificate is issued, so an index failure is logged, not returned: refusing the certificate
// would make the caller ask for a second one. The line is indexed on the next lookup that
// misses or the next open.
func (l *ledger) add(ctx context.Context, key string, leaf *x509.Certificate, now time.Time) error {
	e := LedgerEntry{Key: key, Serial: leaf.SerialNumber.Text(16), Time: now.UTC(), NotAfter: leaf.NotAfter.UTC(), Certificate: leaf.Raw}
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("ledger entry: %w", err)
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	pos, err := appendLedger(l.path, line, l.log)
	if err != nil {
		return err
	}
	if err := l.index(ctx, pos, line, e); err != nil {
		l.log.Warn("ledger index not updated; the entry is indexed when next looked for",
			zap.String("path", l.indexPath), zap.String("key", key), zap.String("serial", e.Serial), zap.Error(err))
	}
	return nil
}

// index records one line this connector appended at pos, and moves the progress mark past it
// when nothing lies between the two (no line of another process waits to be indexed).
func (l *ledger) index(ctx context.Context, pos int64, line []byte, e LedgerEntry) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	// Another process's catch-up may have indexed the line already; the row becomes ours.
	if _, err := tx.ExecContext(ctx, `INSERT INTO entries (pos, length, key, serial, session) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (pos) DO UPDATE SET session = excluded.session`, pos, len(line), e.Key, e.Serial, l.session); err != nil {
		return err
	}
	end := pos + int64(len(line))
	if pos == 0 {
		_, err = tx.ExecContext(ctx, `UPDATE progress SET indexed_to = ?, head = ? WHERE indexed_to = 0`, end, head(line))
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE progress SET indexed_to = ? WHERE indexed_to = ?`, end, pos)
	}
	if err != nil {
		return err
	}
	return tx.Commit()
}

func head(firstLine []byte) []byte { return bytes.Clone(firstLine[:min(len(firstLine), headBytes)]) }

// last returns the last certificate the ledger holds for key, or nil.
func (l *ledger) last(ctx context.Context, key string) (*x509.Certificate, error) {
	return l.find(ctx, "key", key)
}

// bySerial returns the certificate the ledger holds with serial (lower-case hex), or nil. The
// index has no index on serials: revocations are rare, and a scan of 100K rows takes
// milliseconds, which keeps the schema as it was (an older adapter can still open it).
func (l *ledger) bySerial(ctx context.Context, serial string) (*x509.Certificate, error) {
	return l.find(ctx, "serial", serial)
}

// find looks up the last entry whose column (key or serial) is value, catching the index up
// when it misses and rebuilding it when it does not match the file.
func (l *ledger) find(ctx context.Context, column, value string) (*x509.Certificate, error) {
	leaf, err := l.lookup(ctx, column, value)
	if errors.Is(err, errStaleIndex) {
		l.log.Warn("ledger index does not match the ledger file; rebuilding it", zap.String("path", l.indexPath), zap.Error(err))
		if err := l.reset(ctx); err != nil {
			return nil, err
		}
		if _, err := l.catchUp(ctx); err != nil {
			return nil, err
		}
		return l.lookup(ctx, column, value)
	}
	if err != nil || leaf != nil {
		return leaf, err
	}
	// Lines whose indexing a crash interrupted, in this process or another sharing the file.
	n, err := l.catchUp(ctx)
	if err != nil || n == 0 {
		return nil, err
	}
	return l.lookup(ctx, column, value)
}

// lookup reads the line the index names for the key or serial value and checks that it is
// that entry.
func (l *ledger) lookup(ctx context.Context, column, value string) (*x509.Certificate, error) {
	var (
		pos         int64
		length      int
		key, serial string
		row         *sql.Row
	)
	if column == "serial" {
		row = l.db.QueryRowContext(ctx, `SELECT pos, length, key, serial FROM entries WHERE serial = ? ORDER BY pos DESC LIMIT 1`, value)
	} else {
		row = l.lookupStmt.QueryRowContext(ctx, value)
	}
	err := row.Scan(&pos, &length, &key, &serial)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger index %s: %w", l.indexPath, err)
	}
	if length <= 0 || length > maxLineBytes {
		return nil, fmt.Errorf("%w: entry for %s has length %d", errStaleIndex, key, length)
	}
	f, err := os.Open(l.path)
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	defer func() { _ = f.Close() }()
	line := make([]byte, length)
	if _, err := f.ReadAt(line, pos); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: entry for %s at byte %d lies beyond the end of the file", errStaleIndex, key, pos)
		}
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	var e LedgerEntry
	if err := json.Unmarshal(line, &e); err != nil || e.Key != key || e.Serial != serial || len(e.Certificate) == 0 {
		return nil, fmt.Errorf("%w: byte %d is not the entry for %s", errStaleIndex, pos, key)
	}
	leaf, err := x509.ParseCertificate(e.Certificate)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: certificate for %s at byte %d: %w", l.path, key, pos, err)
	}
	return leaf, nil
}

// reset empties the index, so that the next catch-up reads the file from its start.
func (l *ledger) reset(ctx context.Context) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("reset ledger index: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := resetTx(ctx, tx); err != nil {
		return fmt.Errorf("reset ledger index: %w", err)
	}
	return tx.Commit()
}

func resetTx(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM entries`); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE progress SET indexed_to = 0, head = NULL`)
	return err
}

// catchUp indexes the complete lines after the progress mark, written by this process or
// another, and returns how many it read.
func (l *ledger) catchUp(ctx context.Context) (int, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return 0, fmt.Errorf("read ledger: %w", err)
	}
	defer func() { _ = f.Close() }()
	total := 0
	for {
		n, more, err := l.indexChunk(ctx, f)
		total += n
		if err != nil {
			return total, err
		}
		if !more {
			return total, nil
		}
	}
}

// indexedEntry is what the index needs from a line; the certificate is not decoded.
type indexedEntry struct {
	Key         string          `json:"key"`
	Serial      string          `json:"serial"`
	Certificate json.RawMessage `json:"certificate"`
}

// indexChunk indexes up to catchUpBytes of the file after the progress mark, in one
// transaction, and reports whether more complete lines may follow.
func (l *ledger) indexChunk(ctx context.Context, f *os.File) (lines int, more bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, false, fmt.Errorf("read ledger: %w", err)
	}
	size := fi.Size()
	var from int64
	// Looked at before taking the write lock: a lookup that misses usually finds nothing new.
	if err := l.progressStmt.QueryRowContext(ctx).Scan(&from); err != nil {
		return 0, false, fmt.Errorf("ledger index %s: %w", l.indexPath, err)
	}
	if from == size {
		return 0, false, nil
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, fmt.Errorf("ledger index %s: %w", l.indexPath, err)
	}
	defer func() { _ = tx.Rollback() }()
	var first []byte
	if err := tx.QueryRowContext(ctx, `SELECT indexed_to, head FROM progress`).Scan(&from, &first); err != nil {
		return 0, false, fmt.Errorf("ledger index %s: %w", l.indexPath, err)
	}
	if reason := staleReason(f, size, from, first); reason != "" {
		l.log.Warn("ledger index does not match the ledger file; rebuilding it", zap.String("path", l.indexPath), zap.String("reason", reason))
		if err := resetTx(ctx, tx); err != nil {
			return 0, false, fmt.Errorf("ledger index %s: %w", l.indexPath, err)
		}
		from, first = 0, nil
	}
	until := min(size, from+catchUpBytes)
	ins, err := tx.PrepareContext(ctx, `INSERT INTO entries (pos, length, key, serial) VALUES (?, ?, ?, ?) ON CONFLICT (pos) DO NOTHING`)
	if err != nil {
		return 0, false, fmt.Errorf("ledger index %s: %w", l.indexPath, err)
	}
	defer func() { _ = ins.Close() }()
	end, err := scanLines(io.NewSectionReader(f, from, until-from), from, func(pos int64, line []byte) error {
		lines++
		if pos == 0 {
			first = head(line)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			return nil
		}
		var e indexedEntry
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("ledger %s: entry at byte %d: %w", l.path, pos, err)
		}
		if e.Key == "" {
			return fmt.Errorf("ledger %s: entry at byte %d: no key", l.path, pos)
		}
		if !hasCertificate(e.Certificate) {
			return nil // written before the ledger kept certificates: nothing to recover
		}
		if _, err := ins.ExecContext(ctx, pos, len(line), e.Key, e.Serial); err != nil {
			return fmt.Errorf("ledger index %s: %w", l.indexPath, err)
		}
		return nil
	})
	l.parsed.Add(int64(lines))
	if err != nil {
		return lines, false, err
	}
	if end == from {
		if until < size {
			return lines, false, fmt.Errorf("ledger %s: no line ends in the %d bytes after byte %d", l.path, until-from, from)
		}
		return lines, false, nil // what follows is a line still being written, or cut short
	}
	if _, err := tx.ExecContext(ctx, `UPDATE progress SET indexed_to = ?, head = ?`, end, first); err != nil {
		return lines, false, fmt.Errorf("ledger index %s: %w", l.indexPath, err)
	}
	if err := tx.Commit(); err != nil {
		return lines, false, fmt.Errorf("ledger index %s: %w", l.indexPath, err)
	}
	return lines, end < size, nil
}

// staleReason says why an index whose progress mark is at from cannot describe the file, or
// returns "".
func staleReason(f *os.File, size, from int64, first []byte) string {
	switch {
	case from > size:
		return fmt.Sprintf("the file has %d bytes, the index covers %d", size, from)
	case from == 0:
		return ""
	case len(first) == 0:
		return "the index does not record the file's first entry"
	}
	got := make([]byte, len(first))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, first) {
		return "the file's first entry differs from the one indexed"
	}
	return ""
}

func hasCertificate(raw json.RawMessage) bool {
	s := string(bytes.TrimSpace(raw))
	return s != "" && s != "null" && s != `""`
}

// issued counts the certificates this connector recorded for key.
func (l *ledger) issued(ctx context.Context, key string) (int, error) {
	var n int
	if err := l.db.QueryRowContext(ctx, `SELECT count(*) FROM entries WHERE key = ? AND session = ?`, key, l.session).Scan(&n); err != nil {
		return 0, fmt.Errorf("ledger index %s: %w", l.indexPath, err)
	}
	return n, nil
}
