package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// op is the tests' call: a number in, its square out.
type op struct{ in, out int }

// recorder is a Commit that records its batches and may hold one until released.
type recorder struct {
	mu      sync.Mutex
	batches [][]int
	hold    chan struct{} // while not nil, the next batch waits for it to close
	held    chan struct{} // closed once a held batch is waiting
	over    bool          // the last batch's Commit returned
}

func (r *recorder) commit(batch []*Call[*op]) {
	r.mu.Lock()
	hold, held := r.hold, r.held
	r.hold, r.over = nil, false
	r.mu.Unlock()
	if hold != nil {
		close(held)
		<-hold
	}
	var ins []int
	for _, c := range batch {
		ins = append(ins, c.Op.in)
		c.Op.out = c.Op.in * c.Op.in
		if c.Op.in < 0 {
			c.Err = fmt.Errorf("negative %d", c.Op.in)
		}
	}
	r.mu.Lock()
	r.batches = append(r.batches, ins)
	r.over = true
	r.mu.Unlock()
}

// holdNext makes the next batch wait until the returned release is called, and returns a
// channel closed once it waits.
func (r *recorder) holdNext() (held <-chan struct{}, release func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hold, waiting := make(chan struct{}), make(chan struct{})
	r.hold, r.held = hold, waiting
	return waiting, func() { close(hold) }
}

// waitQueued spins until n calls wait in l's queue.
func waitQueued[O any](l *Loop[O], n int) {
	for len(l.calls) < n {
		runtime.Gosched()
	}
}

// The calls that arrive while a batch commits go together in the next one, each answered with
// its own result, and only once the batch's Commit returned.
func TestCallsWaitingMeanwhileShareTheNextBatch(t *testing.T) {
	r := &recorder{}
	l := Start(Options[*op]{Commit: r.commit})
	defer l.Close()
	held, release := r.holdNext()
	first := make(chan error, 1)
	go func() { first <- l.Do(context.Background(), &op{in: 1}) }()
	<-held

	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	ops := make([]*op, n)
	for i := range n {
		ops[i] = &op{in: i + 2}
		if i == 3 {
			ops[i].in = -5
		}
		wg.Go(func() {
			errs[i] = l.Do(context.Background(), ops[i])
			r.mu.Lock()
			defer r.mu.Unlock()
			if !r.over {
				t.Errorf("call %d answered before its batch was committed", i)
			}
		})
	}
	waitQueued(l, n)
	release()
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("first call: %v", err)
	}
	if len(r.batches) != 2 || len(r.batches[0]) != 1 || len(r.batches[1]) != n {
		t.Fatalf("batches %v, want [1] then all %d calls that waited", r.batches, n)
	}
	for i, o := range ops {
		if o.out != o.in*o.in {
			t.Errorf("call %d: out %d, want %d", i, o.out, o.in*o.in)
		}
		if (errs[i] != nil) != (o.in < 0) {
			t.Errorf("call %d (in %d): error %v", i, o.in, errs[i])
		}
	}
}

func TestMaxBatch(t *testing.T) {
	r := &recorder{}
	l := Start(Options[*op]{Commit: r.commit, MaxBatch: 4})
	defer l.Close()
	held, release := r.holdNext()
	go func() { _ = l.Do(context.Background(), &op{in: 0}) }()
	<-held
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() { _ = l.Do(context.Background(), &op{in: i + 1}) })
	}
	waitQueued(l, 10)
	release()
	wg.Wait()
	total := 0
	for _, b := range r.batches {
		if len(b) > 4 {
			t.Errorf("batch of %d calls, want at most 4", len(b))
		}
		total += len(b)
	}
	if total != 11 {
		t.Errorf("%d calls committed, want 11", total)
	}
}

// A caller that gives up while its call waits in the queue is answered at once, and its call
// never runs; one that gives up while its batch runs is answered at once too, and the call is
// handed to Abandoned afterwards.
func TestAbandonedCalls(t *testing.T) {
	r := &recorder{}
	var abandoned []int
	l := Start(Options[*op]{Commit: r.commit, Abandoned: func(c *Call[*op]) { abandoned = append(abandoned, c.Op.in) }})
	held, release := r.holdNext()
	running, cancelRunning := context.WithCancel(context.Background())
	errRunning := make(chan error, 1)
	go func() { errRunning <- l.Do(running, &op{in: 7}) }()
	<-held

	queued, cancelQueued := context.WithCancel(context.Background())
	errQueued := make(chan error, 1)
	go func() { errQueued <- l.Do(queued, &op{in: 8}) }()
	waitQueued(l, 1)
	cancelQueued()
	if err := <-errQueued; !errors.Is(err, context.Canceled) {
		t.Fatalf("queued call: error %v, want context.Canceled", err)
	}
	cancelRunning()
	if err := <-errRunning; !errors.Is(err, context.Canceled) {
		t.Fatalf("running call: error %v, want context.Canceled", err)
	}
	release()
	l.Close()
	if len(r.batches) != 1 || len(r.batches[0]) != 1 || r.batches[0][0] != 7 {
		t.Errorf("batches %v, want only the call that was running", r.batches)
	}
	if len(abandoned) != 1 || abandoned[0] != 7 {
		t.Errorf("abandoned %v, want [7]", abandoned)
	}
}

// Close lets the batch in progress finish, answers the calls still queued with ErrClosed, and
// every later call too.
func TestClose(t *testing.T) {
	r := &recorder{}
	l := Start(Options[*op]{Commit: r.commit})
	held, release := r.holdNext()
	errFirst := make(chan error, 1)
	first := &op{in: 3}
	go func() { errFirst <- l.Do(context.Background(), first) }()
	<-held
	errQueued := make(chan error, 1)
	go func() { errQueued <- l.Do(context.Background(), &op{in: 4}) }()
	waitQueued(l, 1)
	l.once.Do(func() { close(l.quit) }) // what Close does first, without waiting for the loop
	release()
	l.Close()
	if err := <-errFirst; err != nil || first.out != 9 {
		t.Errorf("call in progress at Close: out %d, error %v; want 9, nil", first.out, err)
	}
	if err := <-errQueued; !errors.Is(err, ErrClosed) {
		t.Errorf("call queued at Close: error %v, want ErrClosed", err)
	}
	if err := l.Do(context.Background(), &op{in: 5}); !errors.Is(err, ErrClosed) {
		t.Errorf("call after Close: error %v, want ErrClosed", err)
	}
	l.Close() // again: nothing
}
