package verifiedaccess

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/extension"
	"github.com/certprov/certprov-adapter/internal/googleauth"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// googleProbe sits in front of the emulator's REST API and watches the challenge calls (v1
// challenge, v2 challenge:generate): how many are in flight at once, and the most ever. It can
// hold the next n of them until released, so that a test decides how long they occupy their
// slots instead of guessing with sleeps.
type googleProbe struct {
	next http.Handler

	mu                    sync.Mutex
	inFlight, maxInFlight int
	total                 int
	hold                  int           // calls still to hold
	held                  chan struct{} // one value per call being held
	release               chan struct{} // closed to let the held calls on
}

func isChallengeCall(r *http.Request) bool {
	return r.URL.Path == "/v1/challenge" || r.URL.Path == "/v2/challenge:generate"
}

func (p *googleProbe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !isChallengeCall(r) {
		p.next.ServeHTTP(w, r)
		return
	}
	p.mu.Lock()
	p.inFlight++
	p.total++
	p.maxInFlight = max(p.maxInFlight, p.inFlight)
	hold := p.hold > 0
	if hold {
		p.hold--
	}
	held, release := p.held, p.release
	p.mu.Unlock()
	if hold {
		held <- struct{}{}
		<-release
	}
	p.next.ServeHTTP(w, r)
	p.mu.Lock()
	p.inFlight--
	p.mu.Unlock()
}

// holdNext holds the next n challenge calls; held receives once per call as it is held, and
// release lets them all go on (the test's cleanup releases them too).
func (p *googleProbe) holdNext(t testing.TB, n int) (held <-chan struct{}, release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = n
	p.held = make(chan struct{}, n)
	p.release = make(chan struct{})
	var once sync.Once
	ch := p.release
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	return p.held, release
}

// calls returns the challenge calls in flight now, the most at once so far, and the total.
func (p *googleProbe) calls() (inFlight, maxInFlight, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inFlight, p.maxInFlight, p.total
}

// googleClient is a Verified Access client for the emulator with the budget rl, and a request
// timeout long enough for calls a test holds.
func (x *e2e) googleClient(rl config.RateLimit) *Client {
	x.t.Helper()
	c, err := NewClient(context.Background(), ClientOptions{
		Endpoint: x.emuURL + "/", Credentials: googleauth.Credentials{Type: googleauth.None},
		RequestTimeout: 2 * time.Minute, RateLimit: rl,
	})
	if err != nil {
		x.t.Fatal(err)
	}
	return c
}

// loopbackClient is an HTTP client whose connections come from ip (any 127/8 address is this
// machine), so that the server sees it as a client of its own.
func loopbackClient(t testing.TB, ip string) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext,
		MaxIdleConnsPerHost: 64,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// answer is what the enrollment API answered one request.
type answer struct {
	status     int
	code       string
	retryAfter string
	err        error
}

// postFrom posts body to url; xff, when set, is sent as X-Forwarded-For.
func postFrom(hc *http.Client, url, xff string, body any) answer {
	b, err := json.Marshal(body)
	if err != nil {
		return answer{err: err}
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	var env wire.ErrorBody
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		a.err = err
		return a
	}
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(raw, &env); err != nil || resp.Header.Get("Content-Type") != "application/json" {
			a.err = fmt.Errorf("HTTP %d without the error envelope: %q", resp.StatusCode, raw)
		}
		a.code = string(env.Error.Code)
	}
	return a
}

// receive waits for n values from c, failing the test if they do not come (the limits are
// broken and the test would hang).
func receive[T any](t testing.TB, c <-chan T, n int, what string) []T {
	t.Helper()
	out := make([]T, 0, n)
	deadline := time.After(2 * time.Minute)
	for len(out) < n {
		select {
		case v := <-c:
			out = append(out, v)
		case <-deadline:
			t.Fatalf("%s: got %d of %d", what, len(out), n)
		}
	}
	return out
}

// waitFor polls cond until it holds, failing the test if it never does.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	clocktest.WaitFor(t, what, 2*time.Minute, cond)
}

const floodSize = 600

// TestFloodLeavesEnrollmentsFlowing is the flood that stalled enrollment: floodSize parallel
// /challenge calls from one address. The flooder gets its token bucket's burst and, of that,
// its share of the challenge slots, which the fake Google holds; everything else is turned away
// at once with 429. A device on another address enrolls while the flooder still holds its slots,
// Google never sees more challenge calls at once than the cap, and the flood spent two calls of
// Google's budget, not six hundred.
func TestFloodLeavesEnrollmentsFlowing(t *testing.T) {
	x := newE2E(t)
	core, logs := observer.New(zapcore.InfoLevel)
	reg := prometheus.NewRegistry()
	m := metrics.NewVerifiedAccess(reg)
	const slots, share, burst = 4, 2, config.DefaultVARateBurst
	url, srv := x.startServer(serverSetup{
		limits: config.VerifiedAccess{
			RateLimit:               config.RateLimit{RequestsPerSecond: config.DefaultVARateLimit, Burst: burst},
			MaxConcurrentChallenges: slots, MaxConcurrentEnrollments: slots, MaxConcurrentPerClient: share,
			QueueTimeout: time.Minute,
		},
		// Google's budget as in production: without the limits, this is what the flood queues on.
		google: x.googleClient(config.RateLimit{RequestsPerSecond: config.DefaultRateLimit, Burst: config.DefaultRateBurst}),
		log:    zap.New(core), registerer: reg,
	})
	held, release := x.google.holdNext(t, share)

	flooder := loopbackClient(t, "127.0.0.1")
	flood := make(chan answer, floodSize)
	for range floodSize {
		go func() {
			flood <- postFrom(flooder, url+wire.ChallengePath, "", wire.ChallengeRequest{Profile: "wifi-v2"})
		}()
	}
	receive(t, held, share, "flood calls held at Google")
	// The adapter's clock stands still: the flooder has exactly `burst` tokens, and of the
	// requests they admit, `share` hold slots; every other request is answered at once.
	for i, a := range receive(t, flood, floodSize-share, "refusals of the flood") {
		if a.err != nil || a.status != http.StatusTooManyRequests || a.code != string(CodeRateLimited) || a.retryAfter == "" {
			t.Fatalf("flood answer %d: %+v; want 429 RATE_LIMITED with Retry-After", i, a)
		}
	}
	if n := count(m.Rejected.WithLabelValues(endpointChallenge, reasonRateLimit)); n != floodSize-burst {
		t.Errorf("refused by the token bucket: %d, want %d", n, floodSize-burst)
	}
	if n := count(m.Rejected.WithLabelValues(endpointChallenge, reasonClientShare)); n != burst-share {
		t.Errorf("refused for the client's share: %d, want %d", n, burst-share)
	}

	// A device on another address enrolls while the flooder's calls are still held.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := extension.Enroll(ctx, extension.EnrollOptions{
		AdapterURL: url, AdapterClient: loopbackClient(t, "127.0.0.2"), EmulatorURL: x.emuURL, Roots: x.ca.roots,
		Profile: "wifi-v2", KeyType: emulator.KeyECDSA,
	})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("the legitimate enrollment failed under the flood: %v", err)
	}
	if len(res.Verified) < 2 || !bytes.Equal(res.Certificate.RawSubjectPublicKeyInfo, res.SPKI) {
		t.Fatalf("certificate does not chain to the CA or lacks the device key: %v", res.Verified)
	}
	inFlight, _, _ := x.google.calls()
	if inFlight != share {
		t.Errorf("when the enrollment finished, %d challenge calls were at Google; want the flooder's %d still held", inFlight, share)
	}
	t.Logf("legitimate enrollment during a flood of %d /challenge calls from one address: %s", floodSize, took)

	release()
	for i, a := range receive(t, flood, share, "the flood's admitted calls") {
		if a.err != nil || a.status != http.StatusOK {
			t.Errorf("admitted flood call %d: %+v", i, a)
		}
	}
	_, maxInFlight, total := x.google.calls()
	if maxInFlight > slots || maxInFlight != share+1 {
		t.Errorf("at most %d challenge calls at Google at once; want %d (the flooder's share and the device), never above %d", maxInFlight, share+1, slots)
	}
	if total != share+1 {
		t.Errorf("Google saw %d challenge calls; want %d", total, share+1)
	}
	if n := x.ca.conn.IssuedTotal(); n != 1 {
		t.Errorf("CA issued %d certificates", n)
	}
	waitFor(t, "the slots to be given back", func() bool {
		c, _, _ := srv.challengeSlots.state()
		e, _, _ := srv.enrollSlots.state()
		return c == 0 && e == 0
	})

	// floodSize-share refusals, one log line: the first, at once. The rest is tallied.
	const msg = "verified access requests turned away by the rate and concurrency limits"
	lines := logs.FilterMessage(msg).AllUntimed()
	if len(lines) != 1 || lines[0].ContextMap()["rejected"] != int64(1) || lines[0].ContextMap()["top_client"] != "127.0.0.1" {
		t.Fatalf("log lines for %d refusals: %v", floodSize-share, lines)
	}
	x.adapterNow.Advance(rejectionLogInterval)
	srv.rejections.flush(false)
	lines = logs.FilterMessage(msg).AllUntimed()
	if len(lines) != 2 {
		t.Fatalf("after the interval: %d lines", len(lines))
	}
	if f := lines[1].ContextMap(); f["rejected"] != int64(floodSize-share-1) || f["top_client"] != "127.0.0.1" {
		t.Errorf("tally: %v", f)
	}
	for _, reason := range []string{reasonRateLimit, reasonClientShare} {
		var logged int64
		for _, l := range lines {
			n, _ := l.ContextMap()[endpointChallenge+"_"+reason].(int64)
			logged += n
		}
		if want := int64(count(m.Rejected.WithLabelValues(endpointChallenge, reason))); logged != want {
			t.Errorf("%s: %d logged, %d counted", reason, logged, want)
		}
	}
}

// TestBusy fills a challenge endpoint from many addresses, behind a trusted proxy: the slots,
// then the queue; the next request is BUSY (503, Retry-After), the queued ones are served in
// turn once the slots free, and a request that waits its queueTimeout out is BUSY too.
func TestBusy(t *testing.T) {
	for _, tt := range []struct {
		name    string
		timeout time.Duration
	}{{"queue full", time.Minute}, {"queue timeout", 20 * time.Millisecond}} {
		t.Run(tt.name, func(t *testing.T) {
			x := newE2E(t)
			reg := prometheus.NewRegistry()
			m := metrics.NewVerifiedAccess(reg)
			const slots = 2
			url, srv := x.startServer(serverSetup{
				limits: config.VerifiedAccess{
					RateLimit:               unlimitedRate,
					MaxConcurrentChallenges: slots, MaxConcurrentEnrollments: slots, MaxConcurrentPerClient: 1,
					QueueTimeout: tt.timeout, TrustedProxies: []string{"127.0.0.0/8"},
				},
				google:     x.googleClient(config.RateLimit{}),
				registerer: reg,
			})
			held, release := x.google.holdNext(t, slots)
			client := func(i int) string { return fmt.Sprintf("198.51.100.%d", i) }
			answers := make(chan answer, 2*slots)
			for i := range slots {
				go func() {
					answers <- postFrom(http.DefaultClient, url+wire.ChallengePath, client(i), wire.ChallengeRequest{Profile: "wifi-v2"})
				}()
			}
			receive(t, held, slots, "calls held at Google")
			if tt.timeout < time.Second {
				// Slots stay held for as long as the test says: the wait must run out.
				a := postFrom(http.DefaultClient, url+wire.ChallengePath, client(slots), wire.ChallengeRequest{Profile: "wifi-v2"})
				if a.status != http.StatusServiceUnavailable || a.code != string(CodeBusy) || a.retryAfter != "1" {
					t.Fatalf("after the queue timeout: %+v; want 503 BUSY, Retry-After 1", a)
				}
				if n := count(m.Rejected.WithLabelValues(endpointChallenge, reasonQueueTimeout)); n != 1 {
					t.Errorf("queue timeouts counted: %d", n)
				}
				release()
				receive(t, answers, slots, "the held calls")
				return
			}
			for i := slots; i < 2*slots; i++ {
				go func() {
					answers <- postFrom(http.DefaultClient, url+wire.ChallengePath, client(i), wire.ChallengeRequest{Profile: "wifi-v2"})
				}()
			}
			waitFor(t, "the queue to fill", func() bool { _, q, _ := srv.challengeSlots.state(); return q == slots })
			a := postFrom(http.DefaultClient, url+wire.ChallengePath, client(2*slots), wire.ChallengeRequest{Profile: "wifi-v2"})
			if a.status != http.StatusServiceUnavailable || a.code != string(CodeBusy) || a.retryAfter != "60" {
				t.Fatalf("with slots and queue full: %+v; want 503 BUSY, Retry-After 60", a)
			}
			if n := count(m.Rejected.WithLabelValues(endpointChallenge, reasonBusy)); n != 1 {
				t.Errorf("busy refusals counted: %d", n)
			}
			release()
			for i, a := range receive(t, answers, 2*slots, "the held and queued calls") {
				if a.status != http.StatusOK {
					t.Errorf("call %d: %+v", i, a)
				}
			}
			if _, maxInFlight, total := x.google.calls(); maxInFlight > slots || total != 2*slots {
				t.Errorf("Google: %d calls at once (cap %d), %d in all", maxInFlight, slots, total)
			}
		})
	}
}

// TestRateLimitPerClient runs the token bucket on the clock of the test: a client gets its
// burst, then 429 with Retry-After until a token is back; the bucket covers both endpoints;
// other addresses are unaffected; an IPv6 /64 is one client; X-Forwarded-For counts only from a
// trusted proxy.
func TestRateLimitPerClient(t *testing.T) {
	limits := func(trusted ...string) *config.VerifiedAccess {
		return &config.VerifiedAccess{RateLimit: config.RateLimit{RequestsPerSecond: 0.5, Burst: 3}, TrustedProxies: trusted}
	}
	challenge := wire.ChallengeRequest{Profile: "wifi"}

	t.Run("behind a trusted proxy", func(t *testing.T) {
		h := newHarness(t, harnessOptions{limits: limits("127.0.0.1")})
		post := func(path, client string, body any) answer {
			return postFrom(http.DefaultClient, h.http.URL+path, client, body)
		}
		for i := range 3 {
			if a := post(wire.ChallengePath, "198.51.100.7", challenge); a.status != http.StatusOK {
				t.Fatalf("request %d within the burst: %+v", i, a)
			}
		}
		a := post(wire.ChallengePath, "198.51.100.7", challenge)
		if a.status != http.StatusTooManyRequests || a.code != string(CodeRateLimited) || a.retryAfter != "2" {
			t.Fatalf("past the burst: %+v; want 429 RATE_LIMITED, Retry-After 2 (one token per 2 s)", a)
		}
		audits := h.logs.FilterMessage("verified access enrollment").Len()
		a = post(wire.EnrollPath, "203.0.113.1, 198.51.100.7", enrollBody("wifi", "machine", "AAAA", ""))
		if a.status != http.StatusTooManyRequests || a.code != string(CodeRateLimited) {
			t.Fatalf("enroll from the same client: %+v", a)
		}
		if n := h.logs.FilterMessage("verified access enrollment").Len(); n != audits {
			t.Error("a refused request was audited one by one")
		}
		if a := post(wire.ChallengePath, "198.51.100.8", challenge); a.status != http.StatusOK {
			t.Errorf("another client: %+v", a)
		}
		h.clock.Advance(2 * time.Second)
		if a := post(wire.ChallengePath, "198.51.100.7", challenge); a.status != http.StatusOK {
			t.Errorf("after a token came back: %+v", a)
		}
		if a := post(wire.ChallengePath, "198.51.100.7", challenge); a.status != http.StatusTooManyRequests {
			t.Errorf("one token only: %+v", a)
		}
		if count(h.metrics.Rejected.WithLabelValues(endpointChallenge, reasonRateLimit)) != 2 || count(h.metrics.Rejected.WithLabelValues(endpointEnroll, reasonRateLimit)) != 1 {
			t.Errorf("rejections: challenge %d, enroll %d; want 2 and 1", count(h.metrics.Rejected.WithLabelValues(endpointChallenge, reasonRateLimit)),
				count(h.metrics.Rejected.WithLabelValues(endpointEnroll, reasonRateLimit)))
		}
		h.api.mu.Lock()
		challenges := h.api.challenges["v2"]
		h.api.mu.Unlock()
		if challenges != 5 || h.api.verifyCalls() != 0 {
			t.Errorf("Google saw %d challenge and %d verify calls; want 5 and 0", challenges, h.api.verifyCalls())
		}

		// One IPv6 /64 is one client.
		for i, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "[2001:db8:1:2:ffff::9]:443"} {
			if a := post(wire.ChallengePath, ip, challenge); a.status != http.StatusOK {
				t.Fatalf("IPv6 request %d: %+v", i, a)
			}
		}
		if a := post(wire.ChallengePath, "2001:db8:1:2::3", challenge); a.status != http.StatusTooManyRequests {
			t.Errorf("another address of the same /64: %+v", a)
		}
		if a := post(wire.ChallengePath, "2001:db8:1:3::1", challenge); a.status != http.StatusOK {
			t.Errorf("the next /64: %+v", a)
		}
	})

	t.Run("X-Forwarded-For from an untrusted peer", func(t *testing.T) {
		h := newHarness(t, harnessOptions{limits: limits()})
		post := func(i int) answer {
			return postFrom(http.DefaultClient, h.http.URL+wire.ChallengePath, fmt.Sprintf("198.51.100.%d", i), challenge)
		}
		for i := range 3 {
			if a := post(i); a.status != http.StatusOK {
				t.Fatalf("request %d: %+v", i, a)
			}
		}
		if a := post(3); a.status != http.StatusTooManyRequests {
			t.Errorf("a forged X-Forwarded-For escaped the limit: %+v", a)
		}
	})
}

// TestSlowBodyHoldsNoSlot: requests whose bodies trickle in wait for their body without a slot,
// so that they cannot starve the endpoint.
func TestSlowBodyHoldsNoSlot(t *testing.T) {
	h := newHarness(t, harnessOptions{limits: &config.VerifiedAccess{
		RateLimit: unlimitedRate, MaxConcurrentChallenges: 2, MaxConcurrentPerClient: 1, TrustedProxies: []string{"127.0.0.1"},
	}})
	const slow = 3
	var writers []*io.PipeWriter
	var wg sync.WaitGroup
	for i := range slow {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		req, err := http.NewRequest(http.MethodPost, h.http.URL+wire.ChallengePath, pr)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		if _, err := pw.Write([]byte(`{"profile":`)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the slow requests to arrive", func() bool { return h.srv.buckets.len() == slow })
	if inUse, queued, _ := h.srv.challengeSlots.state(); inUse != 0 || queued != 0 {
		t.Errorf("bodies still arriving hold %d slots and %d queue places", inUse, queued)
	}
	if a := postFrom(http.DefaultClient, h.http.URL+wire.ChallengePath, "198.51.100.99", wire.ChallengeRequest{Profile: "wifi"}); a.status != http.StatusOK {
		t.Errorf("a prompt request beside slow ones: %+v", a)
	}
	for _, pw := range writers {
		_, _ = pw.Write([]byte(`"wifi"}`))
		pw.Close()
	}
	wg.Wait()
}

func TestClientAddr(t *testing.T) {
	api := newFakeAPI(t)
	client, _ := NewClient(context.Background(), ClientOptions{Endpoint: api.srv.URL + "/", Credentials: googleauth.Credentials{Type: googleauth.None}})
	srv, err := NewServer(ServerOptions{Google: client, Config: config.VerifiedAccess{
		Insecure: true, TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::/48"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"untrusted peer, header ignored", "192.0.2.1:5000", []string{"198.51.100.7"}, "192.0.2.1"},
		{"trusted peer, no header", "10.0.0.5:5000", nil, "10.0.0.5"},
		{"trusted peer names the client", "10.0.0.5:5000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"spoofed entries left of the client", "10.0.0.5:5000", []string{"1.2.3.4, 198.51.100.7, 10.9.9.9"}, "198.51.100.7"},
		{"several headers", "10.0.0.5:5000", []string{"1.2.3.4", "198.51.100.7", "10.9.9.9"}, "198.51.100.7"},
		{"only proxies", "10.0.0.5:5000", []string{"10.1.1.1, 10.2.2.2"}, "10.1.1.1"},
		{"garbage stops at the last trusted hop", "10.0.0.5:5000", []string{"198.51.100.7, bogus, 10.9.9.9"}, "10.9.9.9"},
		{"with ports", "10.0.0.5:5000", []string{"198.51.100.7:4711"}, "198.51.100.7"},
		{"IPv6 with port", "[2001:db8:ffff::1]:443", []string{"[2001:db8:1::7]:4711"}, "2001:db8:1::7"},
		{"IPv6 bare in brackets", "[2001:db8:ffff::1]:443", []string{"[2001:db8:1::7]"}, "2001:db8:1::7"},
		{"IPv4-mapped peer", "[::ffff:10.0.0.5]:5000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"zone dropped", "[fe80::1%eth0]:5000", nil, "fe80::1"},
		{"no IP address", "@", nil, "invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, wire.ChallengePath, nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := srv.clientAddr(r).String(); got != tt.want {
				t.Errorf("client %s; want %s", got, tt.want)
			}
		})
	}
	same := func(a, b string) bool {
		return clientKey(netip.MustParseAddr(a)) == clientKey(netip.MustParseAddr(b))
	}
	if !same("2001:db8:1:2::1", "2001:db8:1:2:ffff::9") || same("2001:db8:1:2::1", "2001:db8:1:3::1") || same("192.0.2.1", "192.0.2.2") {
		t.Error("client keys: an IPv6 /64 or an IPv4 address is one client")
	}
	if s := keyString(clientKey(netip.MustParseAddr("2001:db8:1:2::1"))); s != "2001:db8:1:2::/64" {
		t.Errorf("IPv6 key logged as %q", s)
	}
}

func TestBuckets(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	evicted := metrics.NewVerifiedAccess(nil).BucketsEvicted
	b := newBuckets(1, 2, 2, clock, evicted)
	key := func(s string) netip.Prefix { return clientKey(netip.MustParseAddr(s)) }
	a, c, d := key("192.0.2.1"), key("192.0.2.2"), key("192.0.2.3")
	for i := range 2 {
		if ok, _ := b.take(a); !ok {
			t.Fatalf("take %d within the burst refused", i)
		}
	}
	if ok, wait := b.take(a); ok || wait != time.Second {
		t.Fatalf("past the burst: %v, wait %s; want refused, 1s", ok, wait)
	}
	// A refusal spends nothing: after one second exactly one token is back.
	now = now.Add(time.Second)
	if ok, _ := b.take(a); !ok {
		t.Fatal("the token that came back was lost to the refusal")
	}
	if ok, _ := b.take(c); !ok {
		t.Fatal("another client refused")
	}
	// The table holds two clients; a third evicts the least recently used (a, which had spent
	// its tokens: the eviction is counted, and a starts afresh).
	if ok, _ := b.take(c); !ok {
		t.Fatal("c's second token")
	}
	b.take(d)
	if b.len() != 2 || count(evicted) != 1 {
		t.Errorf("after eviction: %d buckets, %d evictions counted", b.len(), count(evicted))
	}
	if ok, _ := b.take(a); !ok {
		t.Error("an evicted client starts with a full bucket")
	}
	// Full buckets are as good as none: the sweep drops them.
	now = now.Add(time.Minute)
	b.sweep()
	if b.len() != 0 {
		t.Errorf("%d buckets left after the sweep", b.len())
	}
}

func TestGate(t *testing.T) {
	key := func(s string) netip.Prefix { return clientKey(netip.MustParseAddr(s)) }
	a, b, c, d := key("192.0.2.1"), key("192.0.2.2"), key("192.0.2.3"), key("192.0.2.4")

	t.Run("share, queue, first come first served", func(t *testing.T) {
		g := newGate(2, 2, time.Minute)
		relA1, _ := g.acquire(context.Background(), a)
		relA2, _ := g.acquire(context.Background(), a)
		if relA1 == nil || relA2 == nil {
			t.Fatal("free slots refused")
		}
		if rel, reason := g.acquire(context.Background(), a); rel != nil || reason != reasonClientShare {
			t.Fatalf("a third for one client: %q; want %q", reason, reasonClientShare)
		}
		var mu sync.Mutex
		var order []string
		got := make(chan func(), 2)
		for i, w := range []struct {
			name string
			key  netip.Prefix
		}{{"b", b}, {"c", c}} {
			go func() {
				rel, _ := g.acquire(context.Background(), w.key)
				mu.Lock()
				order = append(order, w.name)
				mu.Unlock()
				got <- rel
			}()
			waitFor(t, w.name+" to queue", func() bool { _, q, _ := g.state(); return q == i+1 })
		}
		if rel, reason := g.acquire(context.Background(), d); rel != nil || reason != reasonBusy {
			t.Fatalf("with slots and queue full: %q; want %q", reason, reasonBusy)
		}
		relA1()
		relA1() // a second call gives nothing back twice
		relB := <-got
		relA2()
		relC := <-got
		if relB == nil || relC == nil {
			t.Fatal("queued waiters got no slot")
		}
		mu.Lock()
		if strings.Join(order, ",") != "b,c" {
			t.Errorf("served %v; want first come, first served", order)
		}
		mu.Unlock()
		if inUse, q, _ := g.state(); inUse != 2 || q != 0 {
			t.Errorf("%d in use, %d queued; want the two waiters in the slots", inUse, q)
		}
		relB()
		relC()
		if inUse, q, clients := g.state(); inUse != 0 || q != 0 || clients != 0 {
			t.Errorf("all released: %d in use, %d queued, %d clients", inUse, q, clients)
		}
	})

	t.Run("a waiter that gives up leaves no trace", func(t *testing.T) {
		g := newGate(1, 1, time.Minute)
		hold, _ := g.acquire(context.Background(), a)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan string)
		go func() { _, reason := g.acquire(ctx, b); done <- reason }()
		waitFor(t, "the waiter", func() bool { _, q, _ := g.state(); return q == 1 })
		cancel()
		if reason := <-done; reason != "" {
			t.Errorf("cancelled waiter: %q", reason)
		}
		hold()
		if inUse, q, clients := g.state(); inUse != 0 || q != 0 || clients != 0 {
			t.Errorf("after cancel and release: %d in use, %d queued, %d clients", inUse, q, clients)
		}
	})

	t.Run("queue timeout", func(t *testing.T) {
		g := newGate(1, 1, time.Millisecond)
		hold, _ := g.acquire(context.Background(), a)
		defer hold()
		// The slot is never given back while b waits: the wait must run out.
		if rel, reason := g.acquire(context.Background(), b); rel != nil || reason != reasonQueueTimeout {
			t.Errorf("%q; want %q", reason, reasonQueueTimeout)
		}
		if _, q, clients := g.state(); q != 0 || clients != 1 {
			t.Errorf("after the timeout: %d queued, %d clients", q, clients)
		}
	})
}

func TestRejectionLog(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	core, logs := observer.New(zapcore.InfoLevel)
	l := newRejectionLog(zap.New(core), func() time.Time { return now })
	a, b := clientKey(netip.MustParseAddr("192.0.2.1")), clientKey(netip.MustParseAddr("2001:db8::1"))
	for range 100 {
		l.note(endpointChallenge, reasonRateLimit, a)
	}
	l.note(endpointEnroll, reasonBusy, b)
	l.flush(false)
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines for 101 refusals within the interval; want 1", n)
	}
	now = now.Add(rejectionLogInterval)
	l.flush(false)
	l.flush(true) // nothing pending: nothing written
	lines := logs.AllUntimed()
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	f := lines[1].ContextMap()
	if f["rejected"] != int64(100) || f["clients"] != int64(2) || f["top_client"] != "192.0.2.1" || f["top_client_rejected"] != int64(99) ||
		f["challenge_rate_limit"] != int64(99) || f["enroll_server_busy"] != int64(1) || f["over"] != rejectionLogInterval {
		t.Errorf("tally %v", f)
	}
	l.note(endpointChallenge, reasonClientShare, a)
	if logs.Len() != 2 {
		t.Error("a refusal right after a line was logged on its own")
	}
	l.flush(true)
	if logs.Len() != 3 {
		t.Error("the shutdown flush lost the tally")
	}
}

func TestNewServerChecksLimits(t *testing.T) {
	api := newFakeAPI(t)
	client, _ := NewClient(context.Background(), ClientOptions{Endpoint: api.srv.URL + "/", Credentials: googleauth.Credentials{Type: googleauth.None}})
	for _, va := range []config.VerifiedAccess{
		{Insecure: true, MaxConcurrentChallenges: 4, MaxConcurrentPerClient: 4},
		{Insecure: true, MaxConcurrentEnrollments: 2},
		{Insecure: true, TrustedProxies: []string{"10.0.0.1/8"}},
	} {
		if _, err := NewServer(ServerOptions{Config: va, Google: client}); err == nil {
			t.Errorf("accepted %+v", va)
		}
	}
}

// BenchmarkEnrollDuringFlood measures one device's enrollment while floodSize /challenge
// requests from another address are in the server, with the limits (defaults) and without them
// (limits too high to bite), against Google's budget as in production; and, for reference,
// without a flood. Without the limits the device's challenge queues behind the flood's in
// google.rateLimit. One iteration without the limits takes about a minute: run with
// -benchtime 1x (or Nx).
func BenchmarkEnrollDuringFlood(b *testing.B) {
	off := config.VerifiedAccess{
		RateLimit:               config.RateLimit{RequestsPerSecond: 1e9, Burst: 1e9},
		MaxConcurrentChallenges: 1e6, MaxConcurrentEnrollments: 1e6, MaxConcurrentPerClient: 1e6 - 1,
	}
	for _, bb := range []struct {
		name   string
		flood  int
		limits config.VerifiedAccess
	}{{"flood=none", 0, config.VerifiedAccess{}}, {"limits=on", floodSize, config.VerifiedAccess{}}, {"limits=off", floodSize, off}} {
		b.Run(bb.name, func(b *testing.B) {
			var refused int
			for range b.N {
				b.StopTimer()
				x := newE2E(b)
				url, srv := x.startServer(serverSetup{
					limits: bb.limits, log: zap.NewNop(),
					google: x.googleClient(config.RateLimit{RequestsPerSecond: config.DefaultRateLimit, Burst: config.DefaultRateBurst}),
				})
				var arrived atomic.Int64
				h := srv.Handler()
				counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					arrived.Add(1)
					h.ServeHTTP(w, r)
				}))
				flooder := loopbackClient(b, "127.0.0.1")
				flood := make(chan answer, bb.flood)
				for range bb.flood {
					go func() {
						flood <- postFrom(flooder, counting.URL+wire.ChallengePath, "", wire.ChallengeRequest{Profile: "wifi-v2"})
					}()
				}
				waitFor(b, "the flood to arrive", func() bool { return arrived.Load() >= int64(bb.flood) })
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				b.StartTimer()
				_, err := extension.Enroll(ctx, extension.EnrollOptions{
					AdapterURL: url, AdapterClient: loopbackClient(b, "127.0.0.2"), EmulatorURL: x.emuURL, Roots: x.ca.roots,
					Profile: "wifi-v2", KeyType: emulator.KeyECDSA,
				})
				b.StopTimer()
				cancel()
				if err != nil {
					b.Fatalf("enrollment during the flood: %v", err)
				}
				for _, a := range receive(b, flood, bb.flood, "the flood's answers") {
					if a.status == http.StatusTooManyRequests || a.status == http.StatusServiceUnavailable {
						refused++
					}
				}
				counting.Close()
			}
			b.ReportMetric(float64(refused)/float64(b.N), "refused/op")
		})
	}
}
