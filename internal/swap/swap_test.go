package swap

import (
	"sync"
	"testing"
)

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestReplaceWaitsForUsers(t *testing.T) {
	v := New("old")
	got, release := v.Acquire()
	if got != "old" {
		t.Fatalf("Acquire = %q", got)
	}
	idle := v.Replace("new")
	if closed(idle) {
		t.Fatal("old value reported unused while a user holds it")
	}
	if now, rel := v.Acquire(); now != "new" {
		t.Fatalf("after Replace, Acquire = %q", now)
	} else {
		rel()
	}
	release()
	release() // a second call does nothing
	if !closed(idle) {
		t.Fatal("old value not reported unused once released")
	}
	if !closed(v.Replace("newer")) {
		t.Fatal("an unused value must be reported unused at once")
	}
	if v.Load() != "newer" {
		t.Fatalf("Load = %q", v.Load())
	}
}

// Under -race: users never see a value after it was reported unused.
func TestConcurrentReplace(t *testing.T) {
	type res struct{ closed bool }
	v := New(&res{})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, release := v.Acquire()
				if r.closed {
					t.Error("acquired a value that was already closed")
				}
				release()
			}
		})
	}
	for range 200 {
		old := v.Load()
		idle := v.Replace(&res{})
		<-idle
		old.closed = true // what a reload does: close the old connectors
	}
	close(stop)
	wg.Wait()
}
