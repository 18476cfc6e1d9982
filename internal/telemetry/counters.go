// Package telemetry holds the adapter's counters. They are kept in memory, keyed by a metric
// name and label values, so that tests and the status output can read outcomes; an exporter can
// publish the same set later without touching the code that counts.
package telemetry

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Counters is a set of monotonically increasing counters. The zero value is ready; it is safe
// for concurrent use. A nil *Counters counts nothing, so components work without one.
type Counters struct {
	m sync.Map // key → *atomic.Int64
}

func key(name string, labels []string) string {
	if len(labels) == 0 {
		return name
	}
	return name + "{" + strings.Join(labels, ",") + "}"
}

// Inc adds one to the counter name with the given label values (e.g. "step", "claim").
func (c *Counters) Inc(name string, labels ...string) {
	if c == nil {
		return
	}
	k := key(name, labels)
	v, ok := c.m.Load(k)
	if !ok {
		v, _ = c.m.LoadOrStore(k, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// Get returns the counter's value.
func (c *Counters) Get(name string, labels ...string) int64 {
	if c == nil {
		return 0
	}
	if v, ok := c.m.Load(key(name, labels)); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// Snapshot returns every counter as "name{labels}" → value, sorted by key when listed.
func (c *Counters) Snapshot() map[string]int64 {
	out := map[string]int64{}
	if c == nil {
		return out
	}
	c.m.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// Keys returns the snapshot's keys in order, for stable printing.
func Keys(snap map[string]int64) []string {
	keys := make([]string, 0, len(snap))
	for k := range snap {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
