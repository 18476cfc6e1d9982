package telemetry

import (
	"sync"
	"testing"
)

func TestCounters(t *testing.T) {
	var c Counters
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.Inc("steps_total", "claim")
				c.Inc("plain")
			}
		}()
	}
	wg.Wait()
	if got := c.Get("steps_total", "claim"); got != 8000 {
		t.Fatalf("steps_total{claim} = %d", got)
	}
	if got := c.Get("steps_total", "upload"); got != 0 {
		t.Fatalf("unknown label set = %d", got)
	}
	snap := c.Snapshot()
	if snap["plain"] != 8000 || snap["steps_total{claim}"] != 8000 || len(snap) != 2 {
		t.Fatalf("snapshot %v", snap)
	}
	if keys := Keys(snap); len(keys) != 2 || keys[0] != "plain" {
		t.Fatalf("keys %v", keys)
	}
	var none *Counters // components work without counters
	none.Inc("x")
	if none.Get("x") != 0 || len(none.Snapshot()) != 0 {
		t.Fatal("a nil *Counters must count nothing")
	}
}
