// Package pgtest gives tests a PostgreSQL database of their own: the DSN of the throwaway
// cluster (deploy/local/postgres.sh) and a fresh schema per test.
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DSN returns the test cluster's DSN from CERTPROV_TEST_POSTGRES_DSN. Without one the test is
// skipped on a developer machine and fails in CI (CI=true), where it must run.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("CERTPROV_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CERTPROV_TEST_POSTGRES_DSN is required in CI")
		}
		t.Skip(`CERTPROV_TEST_POSTGRES_DSN is not set; start a throwaway PostgreSQL with: eval "$(deploy/local/postgres.sh start)"`)
	}
	return dsn
}

// Schema creates a schema that lives as long as the test and returns a DSN whose search_path
// selects it, so that tests and runs never see each other's tables.
func Schema(t testing.TB, dsn, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	schema := fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, dsn); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			_ = c.Close(ctx)
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
