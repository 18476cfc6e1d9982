package faulttest

import (
	"context"
	"sync"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
)

// aimedStore makes the journal fail the writes that follow a side effect, the moment a
// certificate, an operation name, an upload or a setFailure is in the adapter's hands alone:
// the first times Updates of each record in a state that at selects return
// journaltest.ErrDiskFull and write nothing, as a full disk or a PostgreSQL blip does to the
// write in hand. journaltest.Faulty cannot aim at one record in one state; this can.
//
// It also follows what came of each refused write: the lease token it carried, and the token of
// the write of the same record that landed next. The same token means the outcome was retried
// and journaled under the lease it was learned under; another means the worker let it go and
// the record was worked again only once its lease had run out.
type aimedStore struct {
	journal.Store
	at    func(rec *journal.Record) bool
	times int

	mu      sync.Mutex
	refused map[string]map[journal.State]int
	waiting map[string]int64 // record → token of a refused write no landed write followed yet
	follow  []followUp
}

// followUp is a refused write and the write of the same record that landed after it.
type followUp struct {
	name                 string
	state                journal.State // of the refused write
	refusedToken, landed int64         // landed is 0 until a write of the record landed
}

func newAimedStore(s journal.Store, times int, at func(*journal.Record) bool) *aimedStore {
	return &aimedStore{Store: s, at: at, times: times,
		refused: map[string]map[journal.State]int{}, waiting: map[string]int64{}}
}

func (a *aimedStore) Update(ctx context.Context, owner string, rec *journal.Record, now time.Time, renew time.Duration) error {
	a.mu.Lock()
	if a.at(rec) {
		m := a.refused[rec.Name]
		if m == nil {
			m = map[journal.State]int{}
			a.refused[rec.Name] = m
		}
		if m[rec.State] < a.times {
			m[rec.State]++
			if _, ok := a.waiting[rec.Name]; !ok {
				a.waiting[rec.Name] = rec.LeaseToken
				a.follow = append(a.follow, followUp{name: rec.Name, state: rec.State, refusedToken: rec.LeaseToken})
			}
			a.mu.Unlock()
			return journaltest.ErrDiskFull
		}
	}
	a.mu.Unlock()
	err := a.Store.Update(ctx, owner, rec, now, renew)
	if err == nil {
		a.mu.Lock()
		if _, ok := a.waiting[rec.Name]; ok {
			delete(a.waiting, rec.Name)
			for i := len(a.follow) - 1; i >= 0; i-- {
				if f := &a.follow[i]; f.name == rec.Name {
					f.landed = rec.LeaseToken
					break
				}
			}
		}
		a.mu.Unlock()
	}
	return err
}

// followUps returns every refused write of name with what landed next (landed 0: nothing yet).
func (a *aimedStore) followUps(name string) []followUp {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []followUp
	for _, f := range a.follow {
		if f.name == name {
			out = append(out, f)
		}
	}
	return out
}

// refusedIn reports how many writes of name in state were refused.
func (a *aimedStore) refusedIn(name string, state journal.State) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.refused[name][state]
}
