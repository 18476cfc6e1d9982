package verifiedaccess

import (
	"container/list"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/certprov/certprov-adapter/internal/config"
)

// The enrollment API's limits (docs/verified-access.md, "Limits"). The API answers anyone who
// can reach it, and every /challenge costs a Google call from the budget all devices share, so
// before any work a request passes, in order:
//
//  1. a token bucket per client address, over both endpoints (RATE_LIMITED, 429);
//  2. the endpoint's share per client address: the slots it holds or waits for (RATE_LIMITED);
//  3. the endpoint's slots, with a FIFO queue as long as there are slots, waited in for at most
//     queueTimeout (BUSY, 503).
//
// Refusals carry Retry-After, are counted (verifiedaccess_requests_rejected_total{endpoint,
// reason}, package metrics) and are logged in summary, at most one line per rejectionLogInterval.

const (
	// DefaultMaxClients bounds the token buckets held at once. A bucket idle for burst/rate
	// seconds is full again, as good as none, so only clients of the last few seconds need one.
	DefaultMaxClients = 10_000
	// ipv6ClientBits: an IPv6 client is its /64, the block one site or host is handed, so that
	// one machine cannot pose as 2^64 clients.
	ipv6ClientBits = 64
	// rejectionLogInterval is the most often the limits log what they turned away.
	rejectionLogInterval = 30 * time.Second
	// maxLoggedClients bounds the per-client tally of the rejection log.
	maxLoggedClients = 1024
)

// The endpoints, as counter labels.
const (
	endpointChallenge = "challenge"
	endpointEnroll    = "enroll"
)

// Reasons a request is turned away, as counter labels.
const (
	reasonRateLimit    = "rate_limit"         // the client's token bucket is empty
	reasonClientShare  = "client_concurrency" // the client holds its share of the endpoint's slots
	reasonBusy         = "server_busy"        // every slot and queue place is taken
	reasonQueueTimeout = "queue_timeout"      // no slot freed within queueTimeout
)

// limits are the verifiedAccess limit keys, parsed.
type limits struct {
	rate                               config.RateLimit
	challenges, enrollments, perClient int
	queueTimeout                       time.Duration
	trustedProxies                     []netip.Prefix
}

// limitsOf reads the limits of va, with the defaults config.Load would have applied for keys a
// server built in code leaves at zero.
func limitsOf(va config.VerifiedAccess) (limits, error) {
	orInt := func(v, def int) int {
		if v < 1 {
			return def
		}
		return v
	}
	l := limits{
		rate:         va.RateLimit,
		challenges:   orInt(va.MaxConcurrentChallenges, config.DefaultVAMaxConcurrentChallenges),
		enrollments:  orInt(va.MaxConcurrentEnrollments, config.DefaultVAMaxConcurrentEnrollments),
		perClient:    orInt(va.MaxConcurrentPerClient, config.DefaultVAMaxConcurrentPerClient),
		queueTimeout: va.QueueTimeout,
	}
	if l.rate.RequestsPerSecond <= 0 {
		l.rate.RequestsPerSecond = config.DefaultVARateLimit
	}
	l.rate.Burst = orInt(l.rate.Burst, config.DefaultVARateBurst)
	if l.queueTimeout <= 0 {
		l.queueTimeout = config.DefaultVAQueueTimeout
	}
	if l.perClient >= l.challenges || l.perClient >= l.enrollments {
		return limits{}, fmt.Errorf("verified access server: maxConcurrentPerClient (%d) must be less than maxConcurrentChallenges (%d) and maxConcurrentEnrollments (%d)",
			l.perClient, l.challenges, l.enrollments)
	}
	for i, s := range va.TrustedProxies {
		p, err := config.ParseTrustedProxy(s)
		if err != nil {
			return limits{}, fmt.Errorf("verified access server: trustedProxies[%d]: %w", i, err)
		}
		l.trustedProxies = append(l.trustedProxies, p)
	}
	return l, nil
}

// limited wraps an endpoint's handler with the limits. The body is read before a slot is taken,
// so that a slow sender ties up its connection but no slot.
func (s *Server) limited(endpoint string, g *gate, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		addr := s.clientAddr(r)
		key := clientKey(addr)
		if ok, wait := s.buckets.take(key); !ok {
			s.turnAway(w, endpoint, reasonRateLimit, key, wait)
			return
		}
		readBody(w, r)
		release, reason := g.acquire(r.Context(), key)
		if release == nil {
			if reason != "" {
				s.turnAway(w, endpoint, reason, key, g.wait)
			}
			return // the client went away while it waited
		}
		defer release()
		next(w, r.WithContext(context.WithValue(r.Context(), clientAddrKey{}, addr)))
	}
}

// turnAway answers a request the limits refused, counts it and notes it for the log.
func (s *Server) turnAway(w http.ResponseWriter, endpoint, reason string, key netip.Prefix, retryAfter time.Duration) {
	s.m.Rejected.WithLabelValues(endpoint, reason).Inc()
	s.rejections.note(endpoint, reason, key)
	var e *Error
	switch reason {
	case reasonRateLimit:
		e = fail(CodeRateLimited, nil, "too many requests from this address; retry later")
	case reasonClientShare:
		// A slot frees as soon as one of the client's own requests ends.
		e = fail(CodeRateLimited, nil, "too many requests from this address at once; wait for them to finish")
		retryAfter = time.Second
	default:
		e = fail(CodeBusy, nil, "the enrollment server is busy; retry later")
	}
	e.retryAfter = retryAfter
	s.writeError(w, e)
}

// clientAddrKey carries a request's client address (clientAddr) to the audit line.
type clientAddrKey struct{}

// requestClient returns the client address the limits accounted the request to.
func requestClient(r *http.Request) netip.Addr {
	a, _ := r.Context().Value(clientAddrKey{}).(netip.Addr)
	return a
}

// clientAddr is the address a request is accounted to: the peer's; or, when the peer is a
// trusted proxy, the rightmost X-Forwarded-For entry that is not one (entries to its left were
// written by the client and prove nothing). An entry that does not parse stops the walk at the
// last trusted hop. The zero Addr stands for a peer without an IP address.
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	peer, ok := parseHop(r.RemoteAddr)
	if !ok || !s.trusted(peer) {
		return peer
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	last := peer
	for _, h := range slices.Backward(hops) {
		a, ok := parseHop(strings.TrimSpace(h))
		if !ok {
			return last
		}
		if !s.trusted(a) {
			return a
		}
		last = a
	}
	return last
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseHop parses an address as RemoteAddr and X-Forwarded-For write it: with or without a
// port, IPv6 with or without brackets. Zones and IPv4-in-IPv6 mapping are dropped.
func parseHop(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			a, err = netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
			if err != nil {
				return netip.Addr{}, false
			}
		} else {
			a = ap.Addr()
		}
	}
	return a.WithZone("").Unmap(), true
}

// clientKey is the unit the limits count by: an IPv4 address, or an IPv6 /64.
func clientKey(a netip.Addr) netip.Prefix {
	if a.Is6() {
		p, _ := a.Prefix(ipv6ClientBits)
		return p
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// keyString names a client key in logs: the address, or the IPv6 prefix.
func keyString(p netip.Prefix) string {
	switch {
	case !p.IsValid():
		return "unknown"
	case p.IsSingleIP():
		return p.Addr().String()
	default:
		return p.String()
	}
}

// buckets holds a token bucket per client key, at most max of them: when full, the least
// recently used is dropped, which at worst hands that client a fresh burst. Safe for concurrent
// use.
type buckets struct {
	mu    sync.Mutex
	limit rate.Limit
	burst int
	max   int
	now   func() time.Time
	// evicted counts buckets dropped before they were full because the table was full:
	// requests from more addresses than max within a few seconds.
	evicted prometheus.Counter
	byKey   map[netip.Prefix]*list.Element
	lru     list.List // of *bucket, most recently used first
}

type bucket struct {
	key netip.Prefix
	lim *rate.Limiter
}

func newBuckets(limit rate.Limit, burst, max int, now func() time.Time, evicted prometheus.Counter) *buckets {
	return &buckets{limit: limit, burst: burst, max: max, now: now, evicted: evicted, byKey: map[netip.Prefix]*list.Element{}}
}

// take spends one of key's tokens. With none left it spends nothing and returns how long until
// there is one.
func (b *buckets) take(key netip.Prefix) (ok bool, retryAfter time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	var bk *bucket
	if el, there := b.byKey[key]; there {
		b.lru.MoveToFront(el)
		bk = el.Value.(*bucket)
	} else {
		for b.lru.Len() >= b.max {
			old := b.lru.Remove(b.lru.Back()).(*bucket)
			delete(b.byKey, old.key)
			if old.lim.TokensAt(now) < float64(b.burst) {
				b.evicted.Inc()
			}
		}
		bk = &bucket{key: key, lim: rate.NewLimiter(b.limit, b.burst)}
		b.byKey[key] = b.lru.PushFront(bk)
	}
	r := bk.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops the buckets that are full again: they behave as no bucket at all.
func (b *buckets) sweep() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	for el := b.lru.Back(); el != nil; {
		prev := el.Prev()
		if bk := el.Value.(*bucket); bk.lim.TokensAt(now) >= float64(b.burst) {
			b.lru.Remove(el)
			delete(b.byKey, bk.key)
		}
		el = prev
	}
}

func (b *buckets) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lru.Len()
}

// gate bounds the requests of one endpoint at work: slots of them, and as many again waiting in
// FIFO order for at most wait; one client key holds or waits for at most perClient. Safe for
// concurrent use.
type gate struct {
	slots, perClient, maxQueue int
	wait                       time.Duration

	mu    sync.Mutex
	inUse int
	queue list.List // of *waiter, oldest first
	held  map[netip.Prefix]int
}

type waiter struct {
	ready   chan struct{} // closed when a slot was handed over
	granted bool          // under gate.mu
}

func newGate(slots, perClient int, wait time.Duration) *gate {
	return &gate{slots: slots, perClient: perClient, maxQueue: slots, wait: wait, held: map[netip.Prefix]int{}}
}

// acquire takes a slot for key, waiting in the queue if need be. It returns the function that
// gives the slot back (call it once), or nil and why not: reasonClientShare, reasonBusy,
// reasonQueueTimeout, or "" when ctx ended first.
func (g *gate) acquire(ctx context.Context, key netip.Prefix) (release func(), reason string) {
	g.mu.Lock()
	if g.held[key] >= g.perClient {
		g.mu.Unlock()
		return nil, reasonClientShare
	}
	if g.inUse < g.slots {
		g.inUse++
		g.held[key]++
		g.mu.Unlock()
		return g.releaser(key), ""
	}
	if g.queue.Len() >= g.maxQueue {
		g.mu.Unlock()
		return nil, reasonBusy
	}
	w := &waiter{ready: make(chan struct{})}
	el := g.queue.PushBack(w)
	g.held[key]++
	g.mu.Unlock()

	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	select {
	case <-w.ready:
		return g.releaser(key), ""
	case <-timer.C:
		reason = reasonQueueTimeout
	case <-ctx.Done():
	}
	g.mu.Lock()
	if w.granted {
		// A slot arrived as the wait ended: give it on rather than lose it.
		g.mu.Unlock()
		if reason == "" {
			g.releaser(key)()
			return nil, ""
		}
		return g.releaser(key), ""
	}
	g.queue.Remove(el)
	g.drop(key)
	g.mu.Unlock()
	return nil, reason
}

// releaser returns the function that gives key's slot back: to the oldest waiter, if any.
func (g *gate) releaser(key netip.Prefix) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.drop(key)
			if front := g.queue.Front(); front != nil {
				w := g.queue.Remove(front).(*waiter)
				w.granted = true
				close(w.ready)
				return
			}
			g.inUse--
		})
	}
}

// drop forgets one of key's slots or queue places; the caller holds mu.
func (g *gate) drop(key netip.Prefix) {
	if g.held[key]--; g.held[key] <= 0 {
		delete(g.held, key)
	}
}

// state is a snapshot, for tests: slots in use, requests waiting, client keys
// holding or waiting.
func (g *gate) state() (inUse, queued, clients int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inUse, g.queue.Len(), len(g.held)
}

// rejectionLog logs what the limits turned away without a line per request, which a flood
// would turn into a second flood: the first refusal after a quiet interval is logged at once,
// the following ones are tallied and logged together at most once per rejectionLogInterval.
// Safe for concurrent use.
type rejectionLog struct {
	log *zap.Logger
	now func() time.Time

	mu      sync.Mutex
	last    time.Time // when a line was last written
	since   time.Time // start of the tally
	total   int64
	reasons map[string]int64 // "endpoint_reason" → count
	clients map[netip.Prefix]int64
}

func newRejectionLog(log *zap.Logger, now func() time.Time) *rejectionLog {
	return &rejectionLog{log: log, now: now, reasons: map[string]int64{}, clients: map[netip.Prefix]int64{}}
}

// note tallies one refusal and writes the tally if the interval has passed.
func (l *rejectionLog) note(endpoint, reason string, key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.total == 0 {
		l.since = now
	}
	l.total++
	l.reasons[endpoint+"_"+reason]++
	if _, there := l.clients[key]; there || len(l.clients) < maxLoggedClients {
		l.clients[key]++
	}
	if l.last.IsZero() || now.Sub(l.last) >= rejectionLogInterval {
		l.write(now)
	}
}

// flush writes a pending tally: once the interval has passed, or at once with force (shutdown).
func (l *rejectionLog) flush(force bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.total > 0 && (force || now.Sub(l.last) >= rejectionLogInterval) {
		l.write(now)
	}
}

// write logs the tally and starts a new one; the caller holds mu.
func (l *rejectionLog) write(now time.Time) {
	var top netip.Prefix
	var topN int64
	for k, n := range l.clients {
		if n > topN || (n == topN && k.String() < top.String()) {
			top, topN = k, n
		}
	}
	fields := []zap.Field{
		zap.Int64("rejected", l.total),
		zap.Duration("over", now.Sub(l.since)),
		zap.Int("clients", len(l.clients)),
		zap.String("top_client", keyString(top)),
		zap.Int64("top_client_rejected", topN),
	}
	names := slices.Sorted(maps.Keys(l.reasons))
	for _, k := range names {
		fields = append(fields, zap.Int64(k, l.reasons[k]))
	}
	l.log.Warn("verified access requests turned away by the rate and concurrency limits", fields...)
	l.last = now
	l.total = 0
	clear(l.reasons)
	clear(l.clients)
}

// setLimit changes the rate and burst of every client's bucket, present and future (a reload).
func (b *buckets) setLimit(limit rate.Limit, burst int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.limit, b.burst = limit, burst
	for el := b.lru.Front(); el != nil; el = el.Next() {
		lim := el.Value.(*bucket).lim
		lim.SetLimitAt(now, limit)
		lim.SetBurstAt(now, burst)
	}
}
