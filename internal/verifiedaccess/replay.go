package verifiedaccess

import (
	"crypto/sha256"
	"sync"
	"time"
)

// ttlSet remembers keys until an expiry time. It is bounded: when it is full of unexpired keys
// it refuses new ones rather than forgetting old ones, because forgetting a used challenge
// response would let it be replayed. Safe for concurrent use.
type ttlSet struct {
	mu      sync.Mutex
	entries map[[32]byte]ttlEntry
	max     int
	now     func() time.Time
}

type ttlEntry struct {
	at, until time.Time
}

func newTTLSet(max int, now func() time.Time) *ttlSet {
	return &ttlSet{entries: map[[32]byte]ttlEntry{}, max: max, now: now}
}

// digest is the key of a value in a ttlSet: a domain label and the value, hashed, so that
// the set holds no challenge response or key material itself.
func digest(label string, parts ...[]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(label))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// claim adds key to the set until now+ttl. It returns false, false when the key is there already
// (a replay) and false, true when the set is full.
func (s *ttlSet) claim(key [32]byte, ttl time.Duration) (ok, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if e, there := s.entries[key]; there && now.Before(e.until) {
		return false, false
	}
	if len(s.entries) >= s.max {
		s.purge(now)
		if len(s.entries) >= s.max {
			return false, true
		}
	}
	s.entries[key] = ttlEntry{at: now, until: now.Add(ttl)}
	return true, false
}

// release forgets key: a claim whose use never happened (Google could not be reached).
func (s *ttlSet) release(key [32]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.entries, key)
}

// added returns when key was added, if it is in the set and not expired.
func (s *ttlSet) added(key [32]byte) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok || !s.now().Before(e.until) {
		return time.Time{}, false
	}
	return e.at, true
}

// len reports the number of keys held, expired ones included until the next purge.
func (s *ttlSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// purge drops expired keys; the caller holds mu.
func (s *ttlSet) purge(now time.Time) {
	for k, e := range s.entries {
		if !now.Before(e.until) {
			delete(s.entries, k)
		}
	}
}

// purgeExpired drops expired keys, for the periodic sweep.
func (s *ttlSet) purgeExpired() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(s.now())
}
