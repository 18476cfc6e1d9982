// Package swap holds a value that a configuration reload replaces while it is in use: users
// that took the old value keep it until they are done, new users get the new one, and whoever
// replaced it learns when the old one is no longer used (to close what it holds).
package swap

import (
	"sync"
	"sync/atomic"
)

// Value is a T that can be replaced. The zero Value is not usable; make one with New.
type Value[T any] struct {
	cur atomic.Pointer[generation[T]]
}

type generation[T any] struct {
	v       T
	mu      sync.Mutex
	users   int
	retired bool
	idle    chan struct{} // closed once retired and unused
}

// New returns a Value holding v.
func New[T any](v T) *Value[T] {
	s := &Value[T]{}
	s.cur.Store(&generation[T]{v: v, idle: make(chan struct{})})
	return s
}

// Acquire returns the current value and the function that says its caller is done with it,
// which must be called exactly once. The value is not retired in between.
func (s *Value[T]) Acquire() (T, func()) {
	for {
		g := s.cur.Load()
		g.mu.Lock()
		if !g.retired {
			g.users++
			g.mu.Unlock()
			return g.v, sync.OnceFunc(g.release)
		}
		// Replaced between the load and the lock: the new generation is stored already.
		g.mu.Unlock()
	}
}

// Load returns the current value, for a caller that holds nothing across a replacement (a
// count, a log line).
func (s *Value[T]) Load() T { return s.cur.Load().v }

func (g *generation[T]) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.users--
	if g.retired && g.users == 0 {
		close(g.idle)
	}
}

// Replace makes v the current value. The returned channel is closed once no caller holds the
// previous value any more (at once if none does).
func (s *Value[T]) Replace(v T) (oldIdle <-chan struct{}) {
	old := s.cur.Swap(&generation[T]{v: v, idle: make(chan struct{})})
	old.mu.Lock()
	defer old.mu.Unlock()
	old.retired = true
	if old.users == 0 {
		close(old.idle)
	}
	return old.idle
}
