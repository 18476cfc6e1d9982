package local

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"time"
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

// appendLedger writes one line with O_APPEND, so that several processes (an adapter and the one
// it restarts into) can share the file, and syncs it, so that the line survives a crash that
// follows the return of the certificate.
func appendLedger(path string, e LedgerEntry) (err error) {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("ledger entry: %w", err)
	}
	line = append(line, '\n')
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open ledger: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close ledger: %w", cerr)
		}
	}()
	if _, err := f.Write(line); err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync ledger: %w", err)
	}
	return nil
}

// ReadLedger reads every complete line of a ledger file. A last line without its newline is a
// write the crash interrupted (its certificate was never returned) and is skipped.
func ReadLedger(path string) ([]LedgerEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	if i := bytes.LastIndexByte(data, '\n'); i < len(data)-1 {
		data = data[:i+1]
	}
	var out []LedgerEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var e LedgerEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("ledger %s line %d: %w", path, n, err)
		}
		if e.Key == "" {
			return nil, fmt.Errorf("ledger %s line %d: no key", path, n)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
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
