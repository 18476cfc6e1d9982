package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// The durability and concurrency settings are per connection: check that every connection the
// store makes has them.
func TestConnectionSettings(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	t.Cleanup(func() { _ = ro.Close() })

	tests := []struct {
		name   string
		db     *sql.DB // nil: the writer's connection, which the commit loop holds
		pragma string
		want   string
	}{
		{"writer journal mode", nil, "journal_mode", "wal"},
		{"writer synchronous", nil, "synchronous", "2"}, // FULL
		{"writer busy timeout", nil, "busy_timeout", "10000"},
		{"reader query only", s.r, "query_only", "1"},
		{"reader busy timeout", s.r, "busy_timeout", "10000"},
		{"read-only store query only", ro.r, "query_only", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			var q interface {
				QueryRowContext(context.Context, string, ...any) *sql.Row
			} = s.c.conn
			if tt.db != nil {
				q = tt.db
			}
			if err := q.QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got); err != nil {
				t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
			}
			if got != tt.want {
				t.Errorf("PRAGMA %s = %s, want %s", tt.pragma, got, tt.want)
			}
		})
	}
	if ro.w != nil || ro.c != nil {
		t.Error("a read-only store has a writer connection")
	}
}
