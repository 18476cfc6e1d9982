package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/emulator/frontend/frontendtest"
	"github.com/certprov/certprov-adapter/internal/process"
)

func TestMaxInWindow(t *testing.T) {
	t.Parallel()
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name    string
		offsets []time.Duration
		window  time.Duration
		want    int
	}{
		{"none", nil, time.Second, 0},
		{"one", ms(5), time.Second, 1},
		{"evenly spread", ms(0, 500, 1000, 1500, 2000), time.Second, 2},
		// The window is half-open: calls exactly one window apart are never in the same one.
		{"edge excluded", ms(0, 1000), time.Second, 1},
		// The busiest second straddles two whole seconds: 4 calls from 900 ms to 1.8 s.
		{"not on whole seconds", ms(100, 900, 1100, 1300, 1800, 3000), time.Second, 4},
		{"everything at once", ms(7, 7, 7, 7), 10 * time.Millisecond, 4},
	}
	for _, tc := range tests {
		if got := maxInWindow(tc.offsets, tc.window); got != tc.want {
			t.Errorf("%s: maxInWindow = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestStatsCountEveryCall: calls are counted by method on arrival, including calls for unknown
// processes and calls an injected fault answered, which a quota counts just the same.
func TestStatsCountEveryCall(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	empty, err := v.emu.Stats(time.Second)
	if err != nil || empty.Requests != 0 || empty.MaxInWindow != 0 || len(empty.PerSecond) != 0 {
		t.Fatalf("stats before any call = %+v, %v", empty, err)
	}
	name := v.start(t, ProcessSpec{})
	v.claim(t, name, "adapter-1")
	for range 3 {
		if _, err := v.api.Get(name).Do(); err != nil {
			t.Fatal(err)
		}
	}
	v.emu.FailNext(MethodGet, 1, 429, 0)
	if _, err := v.api.Get(name).Do(); err == nil {
		t.Fatal("injected 429 did not arrive")
	}
	if _, err := v.api.Get(process.Name(DefaultCustomer, "UNKNOWN")).Do(); err == nil {
		t.Fatal("get of an unknown process succeeded")
	}

	st, err := v.emu.Stats(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st.Calls[MethodGet] != 5 || st.Calls[MethodClaim] != 1 || st.Requests != 6 {
		t.Errorf("calls = %v, requests %d; want 5 get, 1 claim, 6 in all", st.Calls, st.Requests)
	}
	if st.MaxInWindow != 6 || st.Window != time.Hour {
		t.Errorf("max in an hour = %d (window %s), want all 6", st.MaxInWindow, st.Window)
	}
	sum := 0
	for _, n := range st.PerSecond {
		sum += n
	}
	if sum != 6 {
		t.Errorf("per-second counts %v add up to %d, want 6", st.PerSecond, sum)
	}
	if st.FirstRequest.IsZero() || st.LastRequest.Before(st.FirstRequest) {
		t.Errorf("first %s, last %s", st.FirstRequest, st.LastRequest)
	}
	if st.Processes[StateClaimed] != 1 || len(st.Processes) != 1 {
		t.Errorf("processes by state = %v, want one claimed", st.Processes)
	}
	if _, err := v.emu.Stats(0); err == nil {
		t.Error("a zero window was accepted")
	}

	// The control endpoint serves the same.
	code, body := rawCall(t, v, http.MethodGet, StatsPath+"?window=1h", "")
	var served Stats
	if code != 200 || json.Unmarshal([]byte(body), &served) != nil {
		t.Fatalf("GET %s = %d %s", StatsPath, code, body)
	}
	if served.Requests != 6 || served.Calls[MethodGet] != 5 || served.MaxInWindow != 6 {
		t.Errorf("served stats = %+v", served)
	}
	for _, bad := range []string{"?window=soon", "?window=0s"} {
		if code, body := rawCall(t, v, http.MethodGet, StatsPath+bad, ""); code != 400 || frontendtest.Status(body) != "INVALID_ARGUMENT" {
			t.Errorf("GET %s%s = %d %s, want 400", StatsPath, bad, code, body)
		}
	}
	if code, _ := rawCall(t, v, http.MethodPost, StatsPath, "{}"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST %s = %d, want 405", StatsPath, code)
	}
}

// TestNotifyAll: a burst publishes every named process's notification once, in its spec's
// encoding, and stamps NotifiedAt; nothing is published for a request naming an unknown
// process.
func TestNotifyAll(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	var names []string
	for i := range 5 {
		enc := []string{EncodingCamel, EncodingSnake, EncodingProto}[i%3]
		names = append(names, v.start(t, ProcessSpec{Encoding: enc, NoPublish: true}))
	}
	if s := v.snap(t, names[0]); !s.NotifiedAt.IsZero() {
		t.Fatalf("NotifiedAt %s before any notification", s.NotifiedAt)
	}
	code, body := rawCall(t, v, http.MethodPost, NotifyPath, `{"names":["`+names[0]+`","customers/C0demo/certificateProvisioningProcesses/NONE"]}`)
	if code != 404 {
		t.Fatalf("notify naming an unknown process = %d %s, want 404", code, body)
	}
	payload, _ := json.Marshal(NotifyRequest{Names: names})
	code, body = rawCall(t, v, http.MethodPost, NotifyPath, string(payload))
	if code != 200 || !strings.Contains(body, `"published":5`) {
		t.Fatalf("notify = %d %s", code, body)
	}
	got := map[string]int{}
	for _, data := range receive(t, v.emu, len(names)) {
		var id, customer string
		if len(data) > 0 && data[0] == '{' {
			var m map[string]string
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			id, customer = m["certificateProvisioningProcessId"]+m["certificate_provisioning_process_id"], m["customerId"]+m["customer_id"]
		} else {
			id, customer = decodeProto(t, data)
		}
		got[process.Name(customer, id)]++
	}
	for _, name := range names {
		if got[name] != 1 {
			t.Errorf("%s notified %d times, want once (got %v)", name, got[name], got)
		}
		if s := v.snap(t, name); s.NotifiedAt.IsZero() || s.NotifiedAt.Before(s.Created) {
			t.Errorf("%s: NotifiedAt %s, created %s", name, s.NotifiedAt, s.Created)
		}
	}
	// The control API's list carries the stamp too.
	_, list := rawCall(t, v, http.MethodGet, ControlPath, "")
	var listed ListProcessesResponse
	if err := json.Unmarshal([]byte(list), &listed); err != nil {
		t.Fatal(err)
	}
	for _, s := range listed.Processes {
		if direct := v.snap(t, s.Name); !s.NotifiedAt.Equal(direct.NotifiedAt) {
			t.Errorf("%s: listed NotifiedAt %s, want %s", s.Name, s.NotifiedAt, direct.NotifiedAt)
		}
	}
	// The stamp is the first notification's: a duplicate does not move it.
	first := v.snap(t, names[0]).NotifiedAt
	if err := v.emu.Notify(context.Background(), names[0]); err != nil {
		t.Fatal(err)
	}
	if again := v.snap(t, names[0]).NotifiedAt; !again.Equal(first) {
		t.Errorf("NotifiedAt moved from %s to %s", first, again)
	}
	for _, bad := range []string{`{"names":[]}`, `{"names":`, `{"colour":"red"}`} {
		if code, body := rawCall(t, v, http.MethodPost, NotifyPath, bad); code != 400 {
			t.Errorf("notify %s = %d %s, want 400", bad, code, body)
		}
	}
}

// TestKeyPool: pooled processes share keys but remain complete processes, each signing with
// the key its SPKI names and accepting only a certificate for that key.
func TestKeyPool(t *testing.T) {
	t.Parallel()
	v := newEnvWith(t, Options{Logger: zaptest.NewLogger(t), KeyPool: 2})
	emu := v.emu
	spkis := map[string]map[string]bool{KeyRSA: {}, KeyECDSA: {}}
	var names []string
	for i := range 6 {
		kt := []string{KeyRSA, KeyECDSA}[i%2]
		name, err := emu.StartProcess(context.Background(), ProcessSpec{KeyType: kt, NoPublish: true})
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		s, _ := emu.Process(name)
		spkis[kt][string(s.SPKI)] = true
	}
	for kt, set := range spkis {
		if len(set) != 2 {
			t.Errorf("%s processes used %d distinct keys, want the pool's 2", kt, len(set))
		}
	}
	if _, err := New(context.Background(), Options{KeyPool: -1}); err == nil {
		t.Error("a negative key pool was accepted")
	}

	// Two processes sharing a key: each is signed for and issued on its own.
	ca := newTestCA(t, "pool CA")
	for _, name := range []string{names[0], names[4]} {
		data := []byte("cri of " + name)
		v.signed(t, name, data)
		s := v.snap(t, name)
		if s.State != StateSigned {
			t.Fatalf("%s: state %s, want signed", name, s.State)
		}
		if err := v.upload(name, ca.issue(t, s.PublicKey, "pooled")); err != nil {
			t.Fatalf("upload to %s: %v", name, err)
		}
	}
	for _, name := range []string{names[0], names[4]} {
		if s := v.snap(t, name); s.State != StateIssued || !bytes.Contains([]byte(s.CertificatePEM), []byte("BEGIN CERTIFICATE")) {
			t.Errorf("%s: state %s", name, s.State)
		}
	}
	if fmt.Sprint(v.snap(t, names[0]).SPKI) != fmt.Sprint(v.snap(t, names[4]).SPKI) {
		t.Errorf("processes 0 and 4 do not share a key: the pool of 2 hands the first RSA key out again third")
	}
}
