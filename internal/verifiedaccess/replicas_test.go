package verifiedaccess

import (
	"context"
	"encoding/base64"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/journal/postgres"
	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// TestE2EReplicasSharePostgres: two enrollment servers whose challenges live in one PostgreSQL
// journal, as two replicas of a Deployment, against the emulator. A challenge handed out by one
// is recognised by the other; an answer is accepted once, whichever replica receives it first
// or twice at the same moment; and the adapter's lifetime holds across them.
func TestE2EReplicasSharePostgres(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.DSN(t), "certprov_va_replicas")
	x := newE2E(t)
	replica := func() string {
		s, err := postgres.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		c, err := s.Challenges(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		url, _ := x.startServer(serverSetup{limits: noLimits(), challenges: c})
		return url
	}
	a, b := replica(), replica()
	answer := func(at string) wire.EnrollRequest {
		ch := x.challenge(at, "wifi-v2")
		resp := x.respond(ch, vagoogle.RespondRequest{KeyType: emulator.KeyECDSA})
		return wire.EnrollRequest{Profile: "wifi-v2", Scope: "machine", ChallengeResponse: base64.StdEncoding.EncodeToString(resp.ChallengeResponse)}
	}

	t.Run("challenge from one, answer at the other, replayed at the first", func(t *testing.T) {
		before, verifies := x.ca.conn.IssuedTotal(), x.emu.VerifiedAccess().Stats().VerifyCalls["v2"]
		req := answer(a)
		if status, out := x.postEnroll(b, req); status != http.StatusOK {
			t.Fatalf("the other replica refused the answer: %d %+v", status, out)
		}
		status, out := x.postEnroll(a, req)
		if status != http.StatusConflict || out.Error.Code != CodeChallengeReplayed {
			t.Fatalf("replay at the first replica: %d %+v", status, out)
		}
		if x.ca.conn.IssuedTotal() != before+1 || x.emu.VerifiedAccess().Stats().VerifyCalls["v2"] != verifies+1 {
			t.Errorf("issued %d, verify calls %d; want 1 and 1 (the replay never reached Google)",
				x.ca.conn.IssuedTotal()-before, x.emu.VerifiedAccess().Stats().VerifyCalls["v2"]-verifies)
		}
	})
	t.Run("the same answer at both at once", func(t *testing.T) {
		before := x.ca.conn.IssuedTotal()
		req := answer(a)
		const n = 6
		statuses := make(chan int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, _ := x.postEnroll([]string{a, b}[i%2], req)
				statuses <- status
			}()
		}
		wg.Wait()
		close(statuses)
		count := map[int]int{}
		for s := range statuses {
			count[s]++
		}
		if count[http.StatusOK] != 1 || count[http.StatusConflict] != n-1 || x.ca.conn.IssuedTotal() != before+1 {
			t.Errorf("statuses %v, issued %d; want one certificate and %d CHALLENGE_REPLAYED", count, x.ca.conn.IssuedTotal()-before, n-1)
		}
	})
	t.Run("older than the adapter's lifetime at the other replica", func(t *testing.T) {
		before := x.ca.conn.IssuedTotal()
		req := answer(a)
		x.adapterNow.Advance(61 * time.Second) // Google's clock stands still: only the adapter knows
		status, out := x.postEnroll(b, req)
		if status != http.StatusBadRequest || out.Error.Code != CodeChallengeExpired || x.ca.conn.IssuedTotal() != before {
			t.Fatalf("%d %+v, issued %d", status, out, x.ca.conn.IssuedTotal()-before)
		}
	})
}
