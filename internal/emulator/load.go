package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/certprov/certprov-adapter/internal/emulator/devicekey"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
)

// Load-test support (certprov-emulator load, internal/loadtest): what the emulator counted over
// every process, the timeline of API requests against which a client's rate limit is checked in
// any window, notifications published in bulk, and device keys drawn from a pool.

// requestLog is the arrival time of every Certificate Provisioning API call, for Stats. It has
// its own lock so that recording a call does not wait behind the process table. It holds 8
// bytes per call: a million calls are 8 MB.
type requestLog struct {
	mu       sync.Mutex
	start    time.Time       // offsets are measured from here, on the monotonic clock
	offsets  []time.Duration // since start, in the order the calls were recorded
	byMethod map[string]int
}

func (l *requestLog) record(method string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.start.IsZero() {
		l.start = at
	}
	if l.byMethod == nil {
		l.byMethod = map[string]int{}
	}
	l.offsets = append(l.offsets, at.Sub(l.start))
	l.byMethod[method]++
}

// Stats is what the emulator counted since it started, over every process.
type Stats struct {
	// Processes counts processes by state (StatePending, …, StateIssued, StateFailed).
	Processes map[string]int `json:"processes"`
	// Calls counts Certificate Provisioning API calls by method, including those naming no
	// known process and those an injected fault answered: every call a quota would count.
	Calls map[string]int `json:"calls"`
	// Requests is the sum of Calls.
	Requests int `json:"requests"`
	// FirstRequest and LastRequest bound the calls in time (zero before the first).
	FirstRequest time.Time `json:"firstRequest,omitzero"`
	LastRequest  time.Time `json:"lastRequest,omitzero"`
	// PerSecond[i] counts the calls that arrived in second i after FirstRequest.
	PerSecond []int `json:"perSecond"`
	// MaxInWindow is the most calls that arrived within any Window (a half-open interval of
	// that length, anywhere in time, not only on whole seconds).
	Window      time.Duration `json:"window"`
	MaxInWindow int           `json:"maxInWindow"`
}

// Stats returns the counts so far; window (at least a millisecond) is the length of the window
// MaxInWindow looks at.
func (e *Emulator) Stats(window time.Duration) (Stats, error) {
	if window < time.Millisecond {
		return Stats{}, fmt.Errorf("stats: window %s: want at least 1ms", window)
	}
	st := Stats{Processes: map[string]int{}, Window: window, PerSecond: []int{}}
	e.mu.Lock()
	for _, p := range e.procs {
		st.Processes[p.state()]++
	}
	e.mu.Unlock()

	l := &e.requests
	l.mu.Lock()
	offsets := slices.Clone(l.offsets)
	st.Calls = maps.Clone(l.byMethod)
	start := l.start
	l.mu.Unlock()
	if st.Calls == nil {
		st.Calls = map[string]int{}
	}
	st.Requests = len(offsets)
	if len(offsets) == 0 {
		return st, nil
	}
	// Calls are recorded as they arrive, concurrently, so a few may be out of order.
	slices.Sort(offsets)
	first, last := offsets[0], offsets[len(offsets)-1]
	st.FirstRequest, st.LastRequest = start.Add(first), start.Add(last)
	st.PerSecond = make([]int, int((last-first)/time.Second)+1)
	for _, o := range offsets {
		st.PerSecond[(o-first)/time.Second]++
	}
	st.MaxInWindow = maxInWindow(offsets, window)
	return st, nil
}

// maxInWindow is the largest number of sorted offsets within any half-open interval of length
// w. The busiest interval can always be moved to start at one of the offsets, so trying those
// is enough.
func maxInWindow(sorted []time.Duration, w time.Duration) int {
	best, j := 0, 0
	for i := range sorted {
		for j < len(sorted) && sorted[j] < sorted[i]+w {
			j++
		}
		best = max(best, j-i)
	}
	return best
}

// NotifyAll publishes the notifications of existing processes, in the encoding of each spec,
// all at once rather than one after the other: a burst of notifications, as a mass
// assignment causes. It returns once Pub/Sub accepted every one; on an error some may have
// been published. A process's NotifiedAt is set when its first notification goes out.
func (e *Emulator) NotifyAll(ctx context.Context, names []string) error {
	type pending struct {
		name string
		data []byte
		pub  *pubsub.Publisher // the customer's topic (CustomerTopic) or the default one
	}
	msgs := make([]pending, 0, len(names))
	e.mu.Lock()
	closed := e.closed
	for _, name := range names {
		p := e.procs[name]
		if p == nil {
			e.mu.Unlock()
			return fmt.Errorf("notify %s: no such process", name)
		}
		data, err := encodeNotification(p.spec.Encoding, p.id, p.customer)
		if err != nil {
			e.mu.Unlock()
			return fmt.Errorf("notify %s: %w", name, err)
		}
		msgs = append(msgs, pending{name, data, e.publisherLocked(p.customer)})
	}
	e.mu.Unlock()
	if closed {
		return errors.New("notify: emulator closed")
	}
	results := make([]*pubsub.PublishResult, len(msgs))
	for i, m := range msgs {
		e.markNotified(m.name)
		results[i] = m.pub.Publish(ctx, &pubsub.Message{Data: m.data})
	}
	var errs []error
	for i, r := range results {
		if _, err := r.Get(ctx); err != nil {
			errs = append(errs, fmt.Errorf("notify %s: publish to %s: %w", msgs[i].name, e.TopicName(), err))
		}
	}
	return errors.Join(errs...)
}

// markNotified stamps the first notification of a process.
func (e *Emulator) markNotified(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p := e.procs[name]; p != nil && p.notified.IsZero() {
		p.notified = e.clock()
	}
}

// keyPool hands out device keys of each type from a fixed number generated on first use, so
// that starting tens of thousands of processes is not bound by RSA key generation (about 0.1 s
// of CPU per RSA-2048 key). Processes that share a key are still distinct processes; nothing
// on Google's side or in the adapter ties a process to a key being unique.
type keyPool struct {
	size int
	mu   sync.Mutex
	keys map[string][]*devicekey.Key
	next map[string]int
}

func newKeyPool(size int) *keyPool {
	if size <= 0 {
		return nil
	}
	return &keyPool{size: size, keys: map[string][]*devicekey.Key{}, next: map[string]int{}}
}

// get returns a key of keyType: a new one while the pool is not full, then the pooled ones in
// turn. A nil pool generates a fresh key every time.
func (kp *keyPool) get(keyType string) (*devicekey.Key, error) {
	if kp == nil {
		return devicekey.New(keyType)
	}
	kp.mu.Lock()
	if keys := kp.keys[keyType]; len(keys) >= kp.size {
		k := keys[kp.next[keyType]%len(keys)]
		kp.next[keyType]++
		kp.mu.Unlock()
		return k, nil
	}
	kp.mu.Unlock()
	// Generated outside the lock: concurrent callers may overfill the pool by a few keys.
	k, err := devicekey.New(keyType)
	if err != nil {
		return nil, err
	}
	kp.mu.Lock()
	kp.keys[keyType] = append(kp.keys[keyType], k)
	kp.mu.Unlock()
	return k, nil
}

// Paths of the load-test control endpoints.
const (
	// StatsPath answers GET with Stats as JSON; ?window=10s sets its window (default
	// DefaultStatsWindow).
	StatsPath = "/emulator/v1/stats"
	// NotifyPath takes POST NotifyRequest and publishes the named processes' notifications at
	// once (NotifyAll).
	NotifyPath = "/emulator/v1/notify"
)

// DefaultStatsWindow is the window of Stats.MaxInWindow when the request names none.
const DefaultStatsWindow = 10 * time.Second

// maxNotifyBytes bounds a NotifyRequest: room for 100,000 names, a burst in one request.
const maxNotifyBytes = 16 << 20

// NotifyRequest is the body of POST NotifyPath.
type NotifyRequest struct {
	Names []string `json:"names"`
}

// NotifyResponse answers POST NotifyPath.
type NotifyResponse struct {
	Published int `json:"published"`
}

func (e *Emulator) serveStats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		frontend.WriteError(w, frontend.MethodNotAllowed("GET", StatsPath))
		return
	}
	window := DefaultStatsWindow
	if v := r.URL.Query().Get("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			frontend.WriteError(w, frontend.InvalidArgument("window: %v", err))
			return
		}
		window = d
	}
	st, err := e.Stats(window)
	if err != nil {
		frontend.WriteError(w, frontend.InvalidArgument("%v", err))
		return
	}
	frontend.WriteJSON(w, http.StatusOK, st)
}

func (e *Emulator) serveNotify(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		frontend.WriteError(w, frontend.MethodNotAllowed("POST", NotifyPath))
		return
	}
	var req NotifyRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxNotifyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		frontend.WriteError(w, frontend.InvalidArgument("notify: %v", err))
		return
	}
	if len(req.Names) == 0 {
		frontend.WriteError(w, frontend.InvalidArgument("notify: no names"))
		return
	}
	e.mu.Lock()
	for _, name := range req.Names {
		if e.procs[name] == nil {
			e.mu.Unlock()
			frontend.WriteError(w, frontend.NotFound("notify: no such process: %s", name))
			return
		}
	}
	e.mu.Unlock()
	if err := e.NotifyAll(r.Context(), req.Names); err != nil {
		frontend.WriteError(w, frontend.Internal(err))
		return
	}
	frontend.WriteJSON(w, http.StatusOK, NotifyResponse{Published: len(req.Names)})
}
