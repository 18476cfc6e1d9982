package postgres

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
)

// TestPoolSize: without pool_max_conns the pool lends DefaultMaxConns connections at once (not
// pgxpool's 4 on a small machine, which queued a burst's reads behind the workers), and the
// DSN's pool_max_conns, when given, is the bound instead.
func TestPoolSize(t *testing.T) {
	dsn := pgtest.DSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "3")
	u.RawQuery = q.Encode()
	for _, tc := range []struct {
		name string
		dsn  string
		want int
	}{{"default", dsn, DefaultMaxConns}, {"pool_max_conns=3", u.String(), 3}} {
		t.Run(tc.name, func(t *testing.T) {
			s := openInternal(t, tc.dsn)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var held []*pgxpool.Conn
			defer func() {
				for _, c := range held {
					c.Release()
				}
			}()
			for i := range tc.want {
				c, err := s.pool.Acquire(ctx)
				if err != nil {
					t.Fatalf("connection %d of %d: %v", i+1, tc.want, err)
				}
				// Each is a live session of its own.
				if err := c.Ping(ctx); err != nil {
					t.Fatalf("connection %d: %v", i+1, err)
				}
				held = append(held, c)
			}
			// One more waits for a connection to come back, which none does.
			short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
			defer stop()
			if c, err := s.pool.Acquire(short); err == nil {
				c.Release()
				t.Fatalf("a connection beyond the %d was lent", tc.want)
			} else if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("acquire beyond the pool: %v, want it to wait", err)
			}
		})
	}
}
