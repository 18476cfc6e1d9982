package directory

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admin "google.golang.org/api/admin/directory/v1"
	"google.golang.org/api/googleapi"

	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/errclass"
	"github.com/certprov/certprov-adapter/internal/googleauth"
	"github.com/certprov/certprov-adapter/internal/metrics/metricstest"
)

const customer = "C0test"

// clock is a test clock the cache reads.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type world struct {
	emu   *emulator.Emulator
	c     *Client
	clock *clock
	reg   *prometheus.Registry
}

// newWorld is a client against the emulator's Directory over HTTP, with cache settings o.
func newWorld(t *testing.T, size int, ttl, negTTL time.Duration) *world {
	t.Helper()
	emu, err := emulator.New(context.Background(), emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(func() { srv.Close(); _ = emu.Close() })
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	c, err := New(context.Background(), Options{
		Endpoint: srv.URL + "/", Credentials: googleauth.Credentials{Type: googleauth.None},
		RateLimit: RateLimit{RequestsPerSecond: 1000, Burst: 100}, RequestTimeout: 5 * time.Second,
		CacheTTL: ttl, NegativeTTL: negTTL, CacheSize: size, Registerer: reg, Now: clk.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &world{emu: emu, c: c, clock: clk, reg: reg}
}

func (w *world) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return metricstest.Sum(metricstest.Gather(t, w.reg), name, labels...)
}

func device(id, asset string) admin.ChromeOsDevice {
	return admin.ChromeOsDevice{DeviceId: id, SerialNumber: "SN-" + id, Model: "Pixelbook", AnnotatedAssetId: asset,
		AnnotatedLocation: "Paris, 3rd floor", AnnotatedUser: "alice@example.com", Notes: "loaner",
		OrgUnitPath: "/Sales/EMEA", OrgUnitId: "id:03ph8a2z", MacAddress: "a1b2c3d4e5f6", EthernetMacAddress: "a1b2c3d4e5f7"}
}

// TestDeviceAndUser: the records come back as templates see them, through the generated client
// and the emulator's wire format (JSON, externalIds and customSchemas as the Directory writes them).
func TestDeviceAndUser(t *testing.T) {
	w := newWorld(t, 10, time.Hour, time.Minute)
	w.emu.SetDirectoryDevice(customer, device("dev-1", "ASSET-1"))
	w.emu.SetDirectoryUser(admin.User{Id: "1001", PrimaryEmail: "alice@example.com", OrgUnitPath: "/Staff",
		Name: &admin.UserName{GivenName: "Alice", FamilyName: "Liddell", FullName: "Alice Liddell"},
		ExternalIds: []map[string]string{{"type": "organization", "value": "E1234"}, {"type": "custom", "customType": "badge", "value": "B-9"},
			{"type": "organization", "value": "second"}},
		CustomSchemas: map[string]googleapi.RawMessage{"HR": googleapi.RawMessage(`{"costCenter":"CC7","level":3,"manager":true,"sites":[{"type":"work","value":"PAR"},{"type":"work","value":"LYS"}]}`)},
	})

	d, err := w.c.Device(context.Background(), customer, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if d.AssetID != "ASSET-1" || d.Location != "Paris, 3rd floor" || d.User != "alice@example.com" || d.Notes != "loaner" ||
		d.OrgUnitPath != "/Sales/EMEA" || d.OrgUnitID != "id:03ph8a2z" || d.MACAddress != "a1b2c3d4e5f6" ||
		d.EthernetMACAddress != "a1b2c3d4e5f7" || d.SerialNumber != "SN-dev-1" || d.Model != "Pixelbook" || d.DeviceID != "dev-1" {
		t.Fatalf("device %+v", d)
	}
	for _, key := range []string{"1001", "alice@example.com"} {
		u, err := w.c.User(context.Background(), customer, key)
		if err != nil {
			t.Fatal(err)
		}
		if u.ID != "1001" || u.OrgUnitPath != "/Staff" || u.GivenName != "Alice" || u.FamilyName != "Liddell" || u.FullName != "Alice Liddell" {
			t.Fatalf("user %+v", u)
		}
		if u.ExternalIDs["organization"] != "E1234" || u.ExternalIDs["badge"] != "B-9" {
			t.Fatalf("external ids %v: want the first organization id and the custom one by its type", u.ExternalIDs)
		}
		if hr := u.CustomSchemas["HR"]; hr["costCenter"] != "CC7" || hr["level"] != "3" || hr["manager"] != "true" || hr["sites"] != "PAR,LYS" {
			t.Fatalf("custom schema HR %v", hr)
		}
	}
	if got := w.metric(t, "certprov_directory_lookups_total", "kind", "device", "result", "found"); got != 1 {
		t.Fatalf("device lookups found = %v, want 1", got)
	}
	if got := w.metric(t, "certprov_google_api_requests_total", "api", "admin_directory", "method", "users.get", "code", "200"); got != 2 {
		t.Fatalf("users.get requests = %v, want 2 (one per key)", got)
	}
}

// TestCache: a record is read once within its time to live, again after it; not-found answers
// are remembered for the shorter negative time to live; the cache holds at most its size,
// dropping the least recently used.
func TestCache(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, 2, 10*time.Minute, time.Minute)
	for _, id := range []string{"a", "b", "c"} {
		w.emu.SetDirectoryDevice(customer, device(id, "ASSET-"+id))
	}
	get := func(id string) string {
		t.Helper()
		d, err := w.c.Device(ctx, customer, id)
		if err != nil {
			t.Fatal(err)
		}
		return d.AssetID
	}
	calls := func() int { return w.emu.DirectoryCalls(emulator.MethodDirectoryDevicesGet) }

	get("a")
	get("a")
	if calls() != 1 || w.metric(t, "certprov_directory_cache_hits_total", "kind", "device") != 1 {
		t.Fatalf("after two lookups of a: %d calls, %v hits; want 1 call and 1 hit", calls(), w.metric(t, "certprov_directory_cache_hits_total"))
	}

	// The admin edits the asset id: the cached one is used until the TTL passes.
	w.emu.SetDirectoryDevice(customer, device("a", "ASSET-a2"))
	w.clock.advance(10*time.Minute - time.Second)
	if got := get("a"); got != "ASSET-a" || calls() != 1 {
		t.Fatalf("within the TTL: %q after %d calls; want the cached ASSET-a", got, calls())
	}
	w.clock.advance(time.Second)
	if got := get("a"); got != "ASSET-a2" || calls() != 2 {
		t.Fatalf("after the TTL: %q after %d calls; want ASSET-a2 read again", got, calls())
	}

	// Bound: a (used), b, then a again and c: b is the least recently used and goes.
	get("b")
	get("a")
	get("c")
	if got := w.metric(t, "certprov_directory_cache_entries"); got != 2 {
		t.Fatalf("cache entries %v, want 2 (its size)", got)
	}
	if got := w.metric(t, "certprov_directory_cache_evictions_total"); got != 1 {
		t.Fatalf("evictions %v, want 1", got)
	}
	before := calls()
	get("a")
	get("c")
	if calls() != before {
		t.Fatalf("a and c were read again (%d calls): they should be cached", calls()-before)
	}
	get("b")
	if calls() != before+1 {
		t.Fatalf("b was not read again: it should have been evicted")
	}

	// Not found: remembered for the negative TTL, then asked again.
	for range 2 {
		_, err := w.c.Device(ctx, customer, "new")
		var e *Error
		if !errors.As(err, &e) || !e.NotFound() {
			t.Fatalf("unknown device: %v, want a not-found *Error", err)
		}
		if c, _ := errclass.Of(err); c != errclass.Permanent {
			t.Fatalf("not found is %s, want permanent", c)
		}
	}
	if got := w.metric(t, "certprov_directory_lookups_total", "kind", "device", "result", "not_found"); got != 2 {
		t.Fatalf("not_found lookups %v, want 2", got)
	}
	n := calls()
	w.emu.SetDirectoryDevice(customer, device("new", "ASSET-new"))
	w.clock.advance(time.Minute)
	if got := get("new"); got != "ASSET-new" || calls() != n+1 {
		t.Fatalf("after the negative TTL: %q, %d calls; want the new device read", got, calls()-n)
	}
}

// TestErrors: what each refusal of the Directory becomes.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, 10, time.Hour, time.Minute)
	tests := []struct {
		status     int
		retryAfter time.Duration
		class      errclass.Class
		forbidden  bool
		result     string
	}{
		{403, 0, errclass.Permanent, true, "forbidden"},
		{429, 7 * time.Second, errclass.Retryable, false, "retryable"},
		{503, 0, errclass.Retryable, false, "retryable"},
		{401, 0, errclass.Permanent, false, "error"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			id := fmt.Sprint("d", tc.status)
			w.emu.SetDirectoryDevice(customer, device(id, "A"))
			if err := w.emu.Inject(frontend.Fault{Method: emulator.MethodDirectoryDevicesGet, Times: 1, Status: tc.status, RetryAfter: tc.retryAfter}); err != nil {
				t.Fatal(err)
			}
			before := w.metric(t, "certprov_directory_lookups_total", "result", tc.result)
			_, err := w.c.Device(ctx, customer, id)
			var e *Error
			if !errors.As(err, &e) || e.Code != tc.status || e.Forbidden() != tc.forbidden || e.NotFound() {
				t.Fatalf("error %v (%#v)", err, e)
			}
			if c, hint := errclass.Of(err); c != tc.class || hint != tc.retryAfter {
				t.Fatalf("class %s, hint %s; want %s, %s", c, hint, tc.class, tc.retryAfter)
			}
			if got := w.metric(t, "certprov_directory_lookups_total", "result", tc.result); got != before+1 {
				t.Fatalf("lookups with result %s: %v, want %v", tc.result, got, before+1)
			}
			// Failures are not cached: the next lookup reaches the Directory and succeeds.
			if d, err := w.c.Device(ctx, customer, id); err != nil || d.AssetID != "A" {
				t.Fatalf("after the fault: %+v, %v", d, err)
			}
		})
	}
	// A Directory quota refusal with 403 (its older rate-limit reasons) is retryable.
	e := classify("device", "d", &googleapi.Error{Code: 403, Message: "Rate Limit Exceeded", Errors: []googleapi.ErrorItem{{Reason: "userRateLimitExceeded"}}})
	if e.Class != errclass.Retryable || e.Forbidden() {
		t.Fatalf("403 userRateLimitExceeded: %s, forbidden %v; want retryable", e.Class, e.Forbidden())
	}
	if _, err := w.c.User(ctx, customer, ""); err == nil {
		t.Fatal("a lookup without a key succeeded")
	}
}

// BenchmarkDeviceCached measures a lookup answered from the cache, the path of every process of
// a device whose record was read recently.
func BenchmarkDeviceCached(b *testing.B) {
	emu, err := emulator.New(context.Background(), emulator.Options{})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(emu.Handler())
	defer func() { srv.Close(); _ = emu.Close() }()
	emu.SetDirectoryDevice(customer, device("d", "A"))
	c, err := New(context.Background(), Options{
		Endpoint: srv.URL + "/", Credentials: googleauth.Credentials{Type: googleauth.None},
		RateLimit: RateLimit{RequestsPerSecond: 1000, Burst: 100}, RequestTimeout: 5 * time.Second,
		CacheTTL: time.Hour, NegativeTTL: time.Minute, CacheSize: 1000,
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Device(context.Background(), customer, "d"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Device(context.Background(), customer, "d"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeviceUncached measures a lookup that reaches the emulator over loopback HTTP (the
// cache holds one entry and the ids alternate), for comparison with BenchmarkDeviceCached.
func BenchmarkDeviceUncached(b *testing.B) {
	emu, err := emulator.New(context.Background(), emulator.Options{})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(emu.Handler())
	defer func() { srv.Close(); _ = emu.Close() }()
	emu.SetDirectoryDevice(customer, device("a", "A"))
	emu.SetDirectoryDevice(customer, device("b", "B"))
	c, err := New(context.Background(), Options{
		Endpoint: srv.URL + "/", Credentials: googleauth.Credentials{Type: googleauth.None},
		RateLimit: RateLimit{RequestsPerSecond: 1e9, Burst: 1000}, RequestTimeout: 5 * time.Second,
		CacheTTL: time.Hour, NegativeTTL: time.Minute, CacheSize: 1,
	})
	if err != nil {
		b.Fatal(err)
	}
	ids := []string{"a", "b"}
	i := 0
	for b.Loop() {
		if _, err := c.Device(context.Background(), customer, ids[i%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
