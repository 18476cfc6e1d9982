package directory

import (
	"container/list"
	"sync"
	"time"

	"github.com/certprov/certprov-adapter/internal/metrics"
)

// cacheKey names one record: a device or a user, of a customer.
type cacheKey struct {
	kind, customer, key string
}

type cacheEntry struct {
	key     cacheKey
	value   any   // *csr.DeviceDirectory or *csr.UserDirectory; nil for a not-found answer
	err     error // the not-found answer
	expires time.Time
}

// cache is a bounded LRU of records with a time to live: records for ttl, not-found answers for
// negTTL. It is safe for concurrent use.
type cache struct {
	mu      sync.Mutex
	size    int
	ttl     time.Duration
	negTTL  time.Duration
	now     func() time.Time
	order   *list.List // front: the most recently used
	entries map[cacheKey]*list.Element
	m       *metrics.Directory
}

func newCache(size int, ttl, negTTL time.Duration, now func() time.Time, m *metrics.Directory) *cache {
	return &cache{size: size, ttl: ttl, negTTL: negTTL, now: now, order: list.New(), entries: map[cacheKey]*list.Element{}, m: m}
}

// get returns the live entry for k; an expired one is dropped.
func (c *cache) get(k cacheKey) (any, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return nil, nil, false
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.removeLocked(el)
		return nil, nil, false
	}
	c.order.MoveToFront(el)
	return e.value, e.err, true
}

// put stores a record (err nil) or a not-found answer, dropping the least recently used entry
// when the cache is full.
func (c *cache) put(k cacheKey, v any, err error) {
	ttl := c.ttl
	if err != nil {
		ttl = c.negTTL
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := &cacheEntry{key: k, value: v, err: err, expires: c.now().Add(ttl)}
	if el, ok := c.entries[k]; ok {
		el.Value = e
		c.order.MoveToFront(el)
		return
	}
	c.entries[k] = c.order.PushFront(e)
	for c.order.Len() > c.size {
		c.removeLocked(c.order.Back())
		c.m.CacheEvictions.Inc()
	}
	c.m.CacheEntries.Set(float64(c.order.Len()))
}

func (c *cache) removeLocked(el *list.Element) {
	delete(c.entries, el.Value.(*cacheEntry).key)
	c.order.Remove(el)
	c.m.CacheEntries.Set(float64(c.order.Len()))
}
