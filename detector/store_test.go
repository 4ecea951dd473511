package detector

import (
	"sync"
	"testing"
	"time"
)

// TestObserve: the observer sees every recorded call exactly once, as it was recorded,
// once the store has applied it, whether from the intake (Flush) or on the recording
// goroutine when the intake is full; nil removes the observer.
func TestObserve(t *testing.T) {
	s := New(Config{})
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var (
		mu   sync.Mutex
		seen = map[int64]int{} // by BytesIn: which call
		ok   = true
	)
	s.Observe(func(c Call) {
		mu.Lock()
		defer mu.Unlock()
		seen[c.BytesIn]++
		if c.Endpoint != "/orders" || c.Status != 404 || c.Latency != 3*time.Millisecond {
			ok = false
		}
	})
	// More calls than the whole intake holds, from several goroutines, without Run: the
	// intake fills and later calls are applied as they are recorded.
	const goroutines, each = 4, intakeShards * intakeSize / 2
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				s.Record(&Call{Time: at, Method: "GET", Endpoint: "/orders", Status: 404, Latency: 3 * time.Millisecond,
					User: "u-1", BytesIn: int64(g*each + i)})
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	applied := len(seen)
	mu.Unlock()
	if applied == 0 || applied >= goroutines*each {
		t.Fatalf("%d calls observed before Flush: want the overflow of the intake only", applied)
	}
	s.Flush()
	if len(seen) != goroutines*each || !ok {
		t.Fatalf("%d distinct calls observed of %d (fields as recorded: %v)", len(seen), goroutines*each, ok)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("call %d observed %d times", id, n)
		}
	}
	// The store took them too.
	aggs, err := s.Aggregate(&Query{Window: 2 * time.Minute, End: at.Add(time.Minute)})
	if err != nil || len(aggs) != 1 || aggs[0].Count != goroutines*each {
		t.Fatalf("store: %+v (%v), want %d calls", aggs, err, goroutines*each)
	}
	s.Observe(nil)
	s.Record(&Call{Time: at, Endpoint: "/orders", Status: 404, BytesIn: -1})
	s.Flush()
	if _, again := seen[-1]; again {
		t.Fatal("a removed observer still sees calls")
	}
}
