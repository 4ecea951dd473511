package detector

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// benchCalls returns calls spread over a few endpoints, statuses and callers, the way a
// gateway sees them: mostly known series and known callers.
func benchCalls(n int) []Call {
	calls := make([]Call, n)
	for i := range calls {
		calls[i] = Call{
			Method:   []string{"GET", "POST"}[i%2],
			Endpoint: testEndpoints[i%len(testEndpoints)],
			Status:   []int{200, 200, 200, 404, 500}[i%5],
			Latency:  time.Duration(1000+i%5000) * time.Microsecond,
			BytesIn:  100,
			BytesOut: 1000,
			User:     fmt.Sprintf("u-%d", i%1000),
			Company:  fmt.Sprintf("c-%d", i%50),
			Upstream: "10.0.0.1:9000",
			IP:       netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
		}
	}
	return calls
}

// BenchmarkRecord measures what recording costs a request: copying the call into the
// store's intake buffer. The buffered calls are applied outside the timed section, as
// the store's background loop does off the request path (BenchmarkApply measures that
// work per call).
func BenchmarkRecord(b *testing.B) {
	s, calls, base := benchStore()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := &calls[i%len(calls)]
		c.Time = base.Add(time.Duration(i/1000) * time.Second)
		s.Record(c)
		if i%intakeWake == intakeWake-1 {
			b.StopTimer()
			s.Flush()
			b.StartTimer()
		}
	}
}

// BenchmarkRecordParallel is BenchmarkRecord from GOMAXPROCS goroutines at once, as
// when requests are served on every core. Another goroutine takes the buffered calls
// out of the intake all along, as the background loop does, but without applying them:
// goroutines that only record offer calls many times faster than any store applies
// them (BenchmarkApply), and a full intake would apply them on the recording goroutines
// instead, so ns/op would be the apply's. What it measures is what a request pays: the
// copy into a shard, the shard's lock, and taking over cache lines that the other cores
// used.
func BenchmarkRecordParallel(b *testing.B) {
	s, calls, base := benchStore()
	stop := make(chan struct{})
	done := make(chan struct{})
	var taken atomic.Int64
	go func() {
		defer close(done)
		count := func(*Call) { taken.Add(1) }
		for {
			select {
			case <-stop:
				s.drain(count)
				return
			default:
				s.drain(count)
				runtime.Gosched()
			}
		}
	}()
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]Call, len(calls))
		copy(local, calls)
		i := int(n.Add(1)) * 7919
		for pb.Next() {
			c := &local[i%len(local)]
			c.Time = base.Add(time.Duration(n.Load()/1000) * time.Second)
			s.Record(c)
			i++
			if i%64 == 0 {
				n.Add(64)
			}
		}
	})
	b.StopTimer()
	close(stop)
	<-done
	// Calls the intake held when full went to the views instead (Record applies them
	// at once then); the rest were taken out here. Either way none was lost.
	if applied := int64(s.recorded.Load()) - int64(len(calls)); taken.Load()+applied < int64(b.N) {
		b.Fatalf("%d calls recorded, %d taken out of the intake and %d applied", b.N, taken.Load(), applied)
	}
}

// BenchmarkApply measures the store's work per call, done off the request path: the
// route view's three resolutions (counts, latency histogram, distinct callers), the
// user, company and key history, and the ring of recent calls.
func BenchmarkApply(b *testing.B) {
	s, calls, base := benchStore()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := &calls[i%len(calls)]
		c.Time = base.Add(time.Duration(i/1000) * time.Second)
		s.apply(c)
	}
}

func benchStore() (*Store, []Call, time.Time) {
	s := New(Config{})
	calls := benchCalls(4096)
	base := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for i := range calls { // warm up: every series and caller known
		calls[i].Time = base
		s.Record(&calls[i])
	}
	s.Flush()
	return s, calls, base
}

// BenchmarkMemoryCallers records one call from each of 1,000,000 distinct users and
// reports the heap the store holds afterwards.
func BenchmarkMemoryCallers(b *testing.B) {
	for i := 0; i < b.N; i++ {
		heap := memoryForUsers(1000000, Config{})
		b.ReportMetric(float64(heap)/(1<<20), "MiB-heap")
	}
}

// BenchmarkMemoryCallersOverCap records 10,000,000 distinct user ids into a store capped
// at the default 1,000,000 callers and reports the heap and the callers kept.
func BenchmarkMemoryCallersOverCap(b *testing.B) {
	for i := 0; i < b.N; i++ {
		heap := memoryForUsers(10000000, Config{MaxKeys: 1000000})
		b.ReportMetric(float64(heap)/(1<<20), "MiB-heap")
	}
}

func memoryForUsers(n int, cfg Config) uint64 {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	s := New(cfg)
	base := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	c := Call{Method: "GET", Endpoint: "/users/{id}", Status: 200, Latency: time.Millisecond, Upstream: "10.0.0.1:9000"}
	buf := make([]byte, 0, 16)
	for i := 0; i < n; i++ {
		buf = fmt.Appendf(buf[:0], "user-%d", i)
		c.User = string(buf)
		c.Time = base.Add(time.Duration(i) * time.Millisecond)
		s.Record(&c)
	}
	s.Flush()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if st := s.Stats(); st.Users > int64(s.Config().MaxKeys) {
		panic(fmt.Sprintf("%d users kept, more than the cap %d", st.Users, s.Config().MaxKeys))
	}
	runtime.KeepAlive(s)
	return after.HeapAlloc - before.HeapAlloc
}
