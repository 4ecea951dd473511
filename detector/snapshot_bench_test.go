package detector

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vigilgw/vigil/detector/sketch"
)

// BenchmarkWriteSnapshot writes the snapshot of a busy gateway's store (see
// snapshotBenchStore) and reports its size.
func BenchmarkWriteSnapshot(b *testing.B) {
	s, snap := snapshotBenchStore(b)
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		var n countingWriter
		if err := s.WriteSnapshot(&n); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(snap)), "snapshot-bytes")
}

// BenchmarkWriteSnapshotDelta writes what a gateway writes every minute: the delta of
// that store at a cut 10 minutes back (the worst case, just before the next segment;
// caddyplugin's segmentEvery), against the full snapshot it used to write.
func BenchmarkWriteSnapshotDelta(b *testing.B) {
	s, snap := snapshotBenchStore(b)
	cut := time.Date(2026, 11, 24, 11, 50, 0, 0, time.UTC) // the store's clock is at 12:00
	var n countingWriter
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n = 0
		if err := s.WriteSnapshotPart(&n, SnapshotDelta, cut); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n), "delta-bytes")
	b.ReportMetric(float64(len(snap)), "full-bytes")
}

// BenchmarkWriteSnapshotSegment writes what a gateway writes every 10 minutes between two
// daily bases (caddyplugin's segmentEvery): the segment of that store's last 10 minutes
// before a cut, against the base of that cut, which it used to write every hour.
func BenchmarkWriteSnapshotSegment(b *testing.B) {
	s, _ := snapshotBenchStore(b)
	to := time.Date(2026, 11, 24, 11, 50, 0, 0, time.UTC) // the store's clock is at 12:00
	var n, base countingWriter
	if err := s.WriteSnapshotPart(&base, SnapshotBase, to); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n = 0
		if err := s.WriteSnapshotSegment(&n, to.Add(-10*time.Minute), to); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n), "segment-bytes")
	b.ReportMetric(float64(base), "base-bytes")
}

// BenchmarkReadSnapshot restores that snapshot into an empty store.
func BenchmarkReadSnapshot(b *testing.B) {
	_, snap := snapshotBenchStore(b)
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		s := New(Config{})
		if _, err := s.ReadSnapshot(bytes.NewReader(snap)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(snap)), "snapshot-bytes")
}

type countingWriter int64

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}

var snapshotBench struct {
	once sync.Once
	s    *Store
	snap []byte
}

// snapshotBenchStore returns, built once, the store of a gateway that has run for 48 hours
// at 1,000 calls a second, and its snapshot:
//
//   - 1,000 route series sharing the calls by Zipf's law (the busiest takes 134 calls a
//     second, the quietest 0.13), so that every 1 min ring holds 48 hours (2,880 buckets)
//     and the 1 s rings of the busy series their 10 minutes; 1 h rings hold 48 buckets;
//   - 100,000 users (calls among them by Zipf's law too), 2,000 companies and 30,000 keys,
//     each active from 1 to 48 of the hours, with their hourly and daily counts;
//   - 10,000 recent calls.
//
// A bucket's sketches are those of as many calls, latencies log-normal around 20 ms and
// callers drawn from the users; buckets with alike numbers of calls share sketch memory
// (writing only reads it), so that the store takes seconds to build rather than minutes.
func snapshotBenchStore(b *testing.B) (*Store, []byte) {
	snapshotBench.once.Do(func() {
		t0 := time.Now()
		s := buildBenchStore()
		var buf bytes.Buffer
		if err := s.WriteSnapshot(&buf); err != nil {
			panic(err)
		}
		st := s.Stats()
		b.Logf("built in %v: %d series, %d users, %d companies, %d keys; snapshot of %d bytes",
			time.Since(t0).Round(time.Millisecond), st.Series, st.Users, st.Companies, st.Keys, buf.Len())
		snapshotBench.s, snapshotBench.snap = s, buf.Bytes()
	})
	return snapshotBench.s, snapshotBench.snap
}

func buildBenchStore() *Store {
	const (
		nSeries = 1000
		rps     = 1000.0
		hours   = 48
		users   = 100000
	)
	rng := rand.New(rand.NewPCG(3, 4))
	s := New(Config{})
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC).Unix()
	harmonic := 0.0
	for i := 1; i <= nSeries; i++ {
		harmonic += 1 / float64(i)
	}
	zipfUser := rand.NewZipf(rng, 1.1, 10, users-1)
	tpl := newBucketTemplates(rng, zipfUser)
	statuses := []uint16{200, 201, 204, 400, 404, 500}
	var total uint64
	for i := range nSeries {
		l := Labels{
			Method:   []string{"GET", "POST", "PUT", "DELETE"}[i%4],
			Endpoint: fmt.Sprintf("/v1/resource-%d/{id}", i/(4*len(statuses))),
			Status:   statuses[(i/4)%len(statuses)],
			Upstream: fmt.Sprintf("10.0.%d.%d:8080", i%3, i%7),
		}
		rate := rps / (float64(i+1) * harmonic)
		sr := &series{labels: l, first: now - hours*3600, last: now, first2xx: now - hours*3600}
		sr.newest.Store(now)
		for ri, r := range routeResolutions {
			span := min(r.slots, hours*3600/r.secs+1)
			for slot := floorDiv(now, r.secs) - span + 1; slot <= floorDiv(now, r.secs); slot++ {
				k := poisson(rng, rate*float64(r.secs))
				if k == 0 {
					continue
				}
				bk := sr.rings[ri].bucketFor(slot, r.slots)
				tpl.fill(bk, k)
				if ri == len(routeResolutions)-1 {
					total += uint64(bk.n)
				}
			}
		}
		s.route.m[l] = sr
		s.route.n.Add(1)
		list := append(*s.route.list.Load(), sr)
		s.route.list.Store(&list)
	}
	for k, n := range []int{users, 2000, 30000} {
		x := s.callers[k]
		for j := range n {
			id := []string{"user-%06d", "company-%04d", "key:%08x"}[k]
			c := caller{id: fmt.Sprintf(id, j)}
			active := 1 + int(47*math.Pow(rng.Float64(), 3))
			newestHour := floorDiv(now, hourSecs) - int64(rng.IntN(hours-active+1))
			for h := newestHour - int64(active) + 1; h <= newestHour; h++ {
				if rng.IntN(3) == 0 && h != newestHour {
					continue
				}
				var p point
				for range 1 + rng.IntN(40) {
					p.status = []int{200, 200, 200, 404, 500}[rng.IntN(5)]
					c.hours = addCallerBucket(c.hours, h, CallerHours, &p)
					c.days = addCallerBucket(c.days, floorDiv(h*hourSecs, daySecs), CallerDays, &p)
				}
			}
			c.first = int64(c.hours[0].slot) * hourSecs
			c.last = int64(c.hours[len(c.hours)-1].slot)*hourSecs + 1800
			c.first2xx = c.first
			sh := x.shard(c.id)
			i, _ := x.place(sh)
			sh.slab[i] = c
			sh.m[c.id] = i
		}
	}
	for i := range 10000 {
		c := Call{
			Time: time.Unix(now-10+int64(i/1000), int64(i%1000)*1e6), Method: "GET", Endpoint: fmt.Sprintf("/v1/resource-%d/{id}", i%41),
			Path: fmt.Sprintf("/v1/resource-%d/%d", i%41, rng.IntN(1e6)), Status: 200, Latency: time.Duration(rng.IntN(50000)) * time.Microsecond,
			BytesIn: int64(rng.IntN(2000)), BytesOut: int64(rng.IntN(50000)), User: fmt.Sprintf("user-%06d", zipfUser.Uint64()),
			Company: fmt.Sprintf("company-%04d", rng.IntN(2000)), Key: fmt.Sprintf("key:%08x", rng.IntN(30000)),
			IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Upstream: "10.0.1.1:8080",
			RequestID: fmt.Sprintf("%016x", rng.Uint64()),
		}
		s.recent.add(&c)
	}
	s.recorded.Store(total)
	s.lastEpoch.Store(now)
	return s
}

// poisson draws from a Poisson distribution of mean m (a normal approximation above 50).
func poisson(rng *rand.Rand, m float64) int {
	if m > 50 {
		return max(0, int(math.Round(m+math.Sqrt(m)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-m), 0, rng.Float64()
	for p > l {
		k++
		p *= rng.Float64()
	}
	return k
}

// bucketTemplates hold buckets of every size class, built from real calls, to fill the
// benchmark store's buckets from.
type bucketTemplates struct {
	rng     *rand.Rand
	users   *rand.Zipf
	classes map[int][]*bucket
}

func newBucketTemplates(rng *rand.Rand, users *rand.Zipf) *bucketTemplates {
	return &bucketTemplates{rng: rng, users: users, classes: map[int][]*bucket{}}
}

// fill makes b a bucket of about k calls, sharing the sketches of a template.
func (t *bucketTemplates) fill(b *bucket, k int) {
	class := int(math.Round(math.Log(float64(k)) / math.Log(1.25)))
	ts := t.classes[class]
	if len(ts) < 4 {
		n := int(math.Round(math.Pow(1.25, float64(class))))
		tb := &bucket{}
		for range n {
			p := point{status: 200, bytesIn: uint64(t.rng.IntN(2000)), bytesOut: uint64(t.rng.IntN(50000))}
			switch r := t.rng.IntN(100); {
			case r < 3:
				p.status = 500
			case r < 10:
				p.status = 404
			}
			p.latency = math.Exp(t.rng.NormFloat64()*0.8 + math.Log(20000))
			p.bin = sketch.BinOf(p.latency)
			p.callerHash = uint64(t.users.Uint64())*0x9E3779B97F4A7C15 + 1
			tb.add(&p)
		}
		ts = append(ts, tb)
		t.classes[class] = ts
	}
	slot := b.slot
	*b = *ts[t.rng.IntN(len(ts))]
	b.slot = slot
}
