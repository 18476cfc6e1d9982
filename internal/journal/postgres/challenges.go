package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certprov/certprov-adapter/internal/journal"
)

// Challenges remembers the Verified Access challenges the replicas sharing this database
// handed out (a verifiedaccess.ChallengeStore): one row per challenge in the table
// <journal table>_challenges, with its issue time, its expiry and when it was answered, so that
// an answer is accepted once, by whichever replica receives it, and only within the lifetime.
// Rows are keyed by the caller's id (a hash, never the challenge) and every time is the caller's.
// It shares the journal's connection pool and is closed with it; it is safe for concurrent use.
type Challenges struct {
	store *Store
	table string
	q     challengeQueries
}

type challengeQueries struct{ issue, use, release, purge string }

// Challenges creates the challenge table next to the journal's if it is missing, as Open does
// for the journal (replicas may call it at once), and returns the store on it.
func (s *Store) Challenges(ctx context.Context) (*Challenges, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("open challenge store: %w", err)
	}
	c := &Challenges{store: s, table: s.table + "_challenges"}
	t := pgx.Identifier{c.table}.Sanitize()
	r := strings.NewReplacer("$TABLE", t)
	c.q = challengeQueries{
		// A row whose expiry passed is a challenge forgotten: the id may be issued afresh.
		issue: r.Replace(`INSERT INTO $TABLE AS c (id, issued_at, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at, used_at = NULL
			WHERE c.expires_at <= EXCLUDED.issued_at`),
		// One statement: the UPDATE marks the challenge if nobody did; a concurrent one waits for
		// the row and then finds it marked. The SELECT, on the statement's snapshot, reports the
		// issue time of a live challenge this call did not mark.
		use: r.Replace(`WITH marked AS (
				UPDATE $TABLE SET used_at = $2 WHERE id = $1 AND expires_at > $2 AND used_at IS NULL RETURNING issued_at)
			SELECT issued_at, true FROM marked
			UNION ALL
			SELECT issued_at, false FROM $TABLE WHERE id = $1 AND expires_at > $2 AND NOT EXISTS (SELECT 1 FROM marked)`),
		release: r.Replace(`UPDATE $TABLE SET used_at = NULL WHERE id = $1`),
		purge:   r.Replace(`DELETE FROM $TABLE WHERE expires_at <= $1`),
	}
	if err := c.migrate(ctx); err != nil {
		return nil, fmt.Errorf("open challenge table %s: %w", c.table, err)
	}
	return c, nil
}

// migrate creates the table and its index if they are missing, under an advisory lock.
func (c *Challenges) migrate(ctx context.Context) error {
	t := pgx.Identifier{c.table}.Sanitize()
	objects := []schemaObject{
		{c.table, `CREATE TABLE IF NOT EXISTS ` + t + ` (
			id         bytea  PRIMARY KEY,
			issued_at  bigint NOT NULL,
			expires_at bigint NOT NULL,
			used_at    bigint
		)`},
		// Purge deletes by expiry.
		{c.table + "_exp", `CREATE INDEX IF NOT EXISTS ` + pgx.Identifier{c.table + "_exp"}.Sanitize() + ` ON ` + t + ` (expires_at)`},
	}
	return createMissing(ctx, c.store.pool, "certprov-adapter challenge schema "+c.table, objects, nil)
}

// Table is the name of the challenge table.
func (c *Challenges) Table() string { return c.table }

// Issue records challenge id, handed out at issued, until until.
func (c *Challenges) Issue(ctx context.Context, id []byte, issued, until time.Time) error {
	if err := c.store.check(); err != nil {
		return fmt.Errorf("issue challenge: %w", err)
	}
	if _, err := c.store.pool.Exec(ctx, c.q.issue, id, journal.UnixNanos(issued), journal.UnixNanos(until)); err != nil {
		return fmt.Errorf("issue challenge: %w", err)
	}
	return nil
}

// Use marks challenge id used at now, unless it was, and returns when it was issued (zero for
// an unknown or expired id) and whether this call marked it.
func (c *Challenges) Use(ctx context.Context, id []byte, now time.Time) (time.Time, bool, error) {
	if err := c.store.check(); err != nil {
		return time.Time{}, false, fmt.Errorf("use challenge: %w", err)
	}
	var issued int64
	var first bool
	err := c.store.pool.QueryRow(ctx, c.q.use, id, journal.UnixNanos(now)).Scan(&issued, &first)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("use challenge: %w", err)
	}
	return time.Unix(0, issued), first, nil
}

// Release clears the use of challenge id.
func (c *Challenges) Release(ctx context.Context, id []byte) error {
	if err := c.store.check(); err != nil {
		return fmt.Errorf("release challenge: %w", err)
	}
	if _, err := c.store.pool.Exec(ctx, c.q.release, id); err != nil {
		return fmt.Errorf("release challenge: %w", err)
	}
	return nil
}

// Purge deletes the challenges whose expiry is not after now.
func (c *Challenges) Purge(ctx context.Context, now time.Time) (int, error) {
	if err := c.store.check(); err != nil {
		return 0, fmt.Errorf("purge challenges: %w", err)
	}
	tag, err := c.store.pool.Exec(ctx, c.q.purge, journal.UnixNanos(now))
	if err != nil {
		return 0, fmt.Errorf("purge challenges: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
