package postgres_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// wire is a TCP proxy between a test's stores and the PostgreSQL server that counts, from the
// messages the clients send (protocol 3), the round trips they wait for (a Sync or a simple
// Query: the server answers each with one ReadyForQuery) and the transactions that wrote (an
// implicit transaction, ended by its Sync, whose statements include an INSERT, UPDATE, DELETE
// or a WITH that holds one: one commit, so one WAL flush, each).
type wire struct {
	ln     net.Listener
	target string

	mu         sync.Mutex
	roundTrips int64
	txns       int64
}

// newWire starts a proxy to the server of dsn and returns it with the DSN that goes through it.
func newWire(t testing.TB, dsn string) (*wire, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		t.Fatalf("wire: the test DSN must be a URL with a host: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{ln: ln, target: u.Host}
	go w.accept()
	t.Cleanup(func() { _ = ln.Close() })
	u.Host = ln.Addr().String()
	return w, u.String()
}

// counts is a journaltest.Counter.
func (w *wire) counts() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return map[string]int64{"roundtrips": w.roundTrips, "txns": w.txns}
}

func (w *wire) accept() {
	for {
		c, err := w.ln.Accept()
		if err != nil {
			return
		}
		go w.serve(c)
	}
}

func (w *wire) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", w.target)
	if err != nil {
		return
	}
	defer server.Close()
	go func() {
		_, _ = io.Copy(client, server)
		_ = client.Close()
	}()
	_ = w.relay(bufio.NewReaderSize(client, 64<<10), bufio.NewWriterSize(server, 64<<10))
}

// relay forwards the client's messages, counting them, and flushes whenever the client has
// nothing more buffered, so that a pipeline stays one write.
func (w *wire) relay(r *bufio.Reader, out *bufio.Writer) error {
	var (
		header  [5]byte
		startup = true
		writes  = map[string]bool{} // prepared statement → whether it writes
		wrote   bool                // the current implicit transaction ran a write
	)
	for {
		if startup {
			// Untyped: a length, then a request code or the protocol version.
			if _, err := io.ReadFull(r, header[:4]); err != nil {
				return err
			}
			n := binary.BigEndian.Uint32(header[:4])
			body := make([]byte, n-4)
			if _, err := io.ReadFull(r, body); err != nil {
				return err
			}
			code := binary.BigEndian.Uint32(body[:4])
			startup = code == 80877103 || code == 80877104 // SSLRequest, GSSENCRequest: the startup follows
			out.Write(header[:4])
			out.Write(body)
		} else {
			if _, err := io.ReadFull(r, header[:]); err != nil {
				return err
			}
			n := binary.BigEndian.Uint32(header[1:])
			body := make([]byte, n-4)
			if _, err := io.ReadFull(r, body); err != nil {
				return err
			}
			switch header[0] {
			case 'P': // Parse: name, query
				name, rest, _ := bytes.Cut(body, []byte{0})
				query, _, _ := bytes.Cut(rest, []byte{0})
				writes[string(name)] = isWrite(string(query))
			case 'B': // Bind: portal, statement
				_, rest, _ := bytes.Cut(body, []byte{0})
				stmt, _, _ := bytes.Cut(rest, []byte{0})
				wrote = wrote || writes[string(stmt)]
			case 'S': // Sync
				w.count(wrote)
				wrote = false
			case 'Q': // simple Query
				query, _, _ := bytes.Cut(body, []byte{0})
				w.count(isWrite(string(query)))
			}
			out.Write(header[:])
			out.Write(body)
		}
		if r.Buffered() == 0 {
			if err := out.Flush(); err != nil {
				return err
			}
		}
	}
}

func (w *wire) count(wrote bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.roundTrips++
	if wrote {
		w.txns++
	}
}

func isWrite(query string) bool {
	q := strings.ToUpper(strings.TrimSpace(query))
	for _, verb := range []string{"INSERT", "UPDATE", "DELETE"} {
		if strings.HasPrefix(q, verb) || (strings.HasPrefix(q, "WITH") && strings.Contains(q, verb+" ")) {
			return true
		}
	}
	return false
}
