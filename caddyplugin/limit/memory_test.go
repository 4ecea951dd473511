package limit

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func userReq(key string) Request {
	return Request{PolicyID: "site/user", Key: key, Rate: Rate{10, time.Second}, Burst: 3}
}

// TestTakeSequence runs one bucket (10/s, burst 3: a token every 100ms) through time.
func TestTakeSequence(t *testing.T) {
	m := NewMemory(100)
	steps := []struct {
		name string
		at   time.Duration // since t0
		want Decision
	}{
		{"starts full", 0, Decision{Allowed: true, Remaining: 2, Reset: 100 * time.Millisecond}},
		{"second", 0, Decision{Allowed: true, Remaining: 1, Reset: 100 * time.Millisecond}},
		{"third empties the burst", 0, Decision{Allowed: true, Remaining: 0, Reset: 100 * time.Millisecond}},
		{"fourth is denied", 0, Decision{Reset: 100 * time.Millisecond, RetryAfter: 100 * time.Millisecond}},
		{"denied, part refilled", 40 * time.Millisecond, Decision{Reset: 60 * time.Millisecond, RetryAfter: 60 * time.Millisecond}},
		{"one token back", 100 * time.Millisecond, Decision{Allowed: true, Remaining: 0, Reset: 100 * time.Millisecond}},
		{"fractions carry", 250 * time.Millisecond, Decision{Allowed: true, Remaining: 0, Reset: 50 * time.Millisecond}},
		{"refills to the burst only", time.Hour, Decision{Allowed: true, Remaining: 2, Reset: 100 * time.Millisecond}},
		{"clock going back earns nothing", time.Hour - time.Second, Decision{Allowed: true, Remaining: 1, Reset: 100 * time.Millisecond}},
	}
	out := make([]Decision, 1)
	for _, s := range steps {
		ok, err := m.Take(context.Background(), []Request{userReq("u-1")}, t0.Add(s.at), out)
		if err != nil || ok != s.want.Allowed || out[0] != s.want {
			t.Errorf("%s: Take at +%v = %v, %+v, %v; want %v, %+v", s.name, s.at, ok, out[0], err, s.want.Allowed, s.want)
		}
	}
}

func TestTakeMultiplePolicies(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(100)
	user := Request{PolicyID: "user", Key: "u-1", Rate: Rate{100, time.Second}, Burst: 200}
	ip := Request{PolicyID: "ip", Key: "10.0.0.1", Rate: Rate{1, time.Minute}}
	out := make([]Decision, 2)
	if ok, _ := m.Take(ctx, []Request{user, ip}, t0, out); !ok {
		t.Fatalf("first call denied: %+v", out)
	}
	// The ip bucket is empty now: the call is denied and must not eat a user token.
	ok, _ := m.Take(ctx, []Request{user, ip}, t0, out)
	want := []Decision{
		{Allowed: true, Remaining: 199, Reset: 10 * time.Millisecond},
		{Reset: time.Minute, RetryAfter: time.Minute},
	}
	if ok || out[0] != want[0] || out[1] != want[1] {
		t.Errorf("denied call = %v, %+v; want false, %+v", ok, out, want)
	}
	// Denied by the first request: the second is only peeked at.
	ok, _ = m.Take(ctx, []Request{ip, user}, t0, out)
	want = []Decision{{Reset: time.Minute, RetryAfter: time.Minute}, {Allowed: true, Remaining: 199, Reset: 10 * time.Millisecond}}
	if ok || out[0] != want[0] || out[1] != want[1] {
		t.Errorf("denied first = %v, %+v; want false, %+v", ok, out, want)
	}
	if err := m.Peek(ctx, []Request{user, ip}, t0, out); err != nil || out[0].Remaining != 199 || out[1].Allowed {
		t.Errorf("Peek = %+v, %v; want 199 user tokens left and ip denied", out, err)
	}
	if _, err := m.Take(ctx, []Request{user, ip}, t0, out[:1]); err == nil {
		t.Errorf("Take with a short out: no error")
	}
}

func TestTakePolicyChange(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(100)
	out := make([]Decision, 1)
	r := Request{PolicyID: "user", Key: "u-1", Rate: Rate{10, time.Second}, Burst: 100}
	for range 10 {
		m.Take(ctx, []Request{r}, t0, out)
	}
	if out[0].Remaining != 90 {
		t.Fatalf("Remaining = %d, want 90", out[0].Remaining)
	}
	r.Burst = 50 // reload: smaller burst, tokens clamped
	m.Take(ctx, []Request{r}, t0, out)
	if want := (Decision{Allowed: true, Remaining: 49, Reset: 100 * time.Millisecond}); out[0] != want {
		t.Errorf("after a smaller burst: %+v, want %+v", out[0], want)
	}
	r.Burst, r.Rate = 500, Rate{1, time.Second} // bigger burst, slower rate: tokens kept
	m.Take(ctx, []Request{r}, t0, out)
	if want := (Decision{Allowed: true, Remaining: 48, Reset: time.Second}); out[0] != want {
		t.Errorf("after a bigger burst: %+v, want %+v", out[0], want)
	}
}

func TestPeekUnknownAndNoLimit(t *testing.T) {
	m := NewMemory(10)
	out := make([]Decision, 2)
	reqs := []Request{userReq("nobody"), {PolicyID: "none", Key: "x"}}
	if err := m.Peek(context.Background(), reqs, t0, out); err != nil {
		t.Fatal(err)
	}
	if want := (Decision{Allowed: true, Remaining: 3}); out[0] != want {
		t.Errorf("Peek of an unknown key = %+v, want a full bucket %+v", out[0], want)
	}
	if !out[1].Allowed {
		t.Errorf("Peek with no rate = %+v, want allowed", out[1])
	}
	if ok, _ := m.Take(context.Background(), reqs[1:], t0, out); !ok || m.Len() != 0 {
		t.Errorf("Take with no rate = %v with %d entries, want allowed and nothing kept", ok, m.Len())
	}
}

func TestTakeConcurrent(t *testing.T) {
	m := NewMemory(1000)
	r := Request{PolicyID: "user", Key: "shared", Rate: Rate{1, time.Hour}, Burst: 500}
	other := Request{PolicyID: "ip", Key: "1.2.3.4", Rate: Rate{1, time.Hour}, Burst: 1000}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]Decision, 2)
			for range 200 {
				if ok, _ := m.Take(context.Background(), []Request{r, other}, t0, out); ok {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if allowed.Load() != 500 {
		t.Errorf("allowed %d calls from a burst of 500, want 500", allowed.Load())
	}
	out := make([]Decision, 2)
	m.Peek(context.Background(), []Request{r, other}, t0, out)
	if out[1].Remaining != 500 {
		t.Errorf("other bucket has %d tokens left, want 500: denied calls must give theirs back", out[1].Remaining)
	}
}

func TestAddQuota(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(100)
	q := Quota{Limit: 3, Period: Day}
	day := func(d int) time.Time { return time.Date(2026, 11, d, 0, 0, 0, 0, time.UTC) }
	steps := []struct {
		name        string
		now         time.Time
		n           int64
		wantAllowed bool
		wantUsed    int64
	}{
		{"first", t0, 1, true, 1},
		{"check only", t0, 0, true, 1},
		{"two at once", t0, 2, true, 3},
		{"over the limit is denied", t0, 1, false, 3},
		{"denied calls are not counted", t0, 1, false, 3},
		{"check when used up", t0, 0, false, 3},
		{"give one back", t0, -1, true, 2},
		{"fits again", t0, 1, true, 3},
		{"too many at once", t0.Add(time.Hour), 5, false, 3},
		{"next day starts at zero", day(25).Add(time.Minute), 1, true, 1},
		{"give back more than used", day(25).Add(time.Hour), -5, true, 0},
	}
	for _, s := range steps {
		d, err := m.AddQuota(ctx, "user-day", "u-1", q, nil, s.now, s.n)
		if err != nil || d.Allowed != s.wantAllowed || d.Used != s.wantUsed || d.Remaining != q.Limit-s.wantUsed || d.Limit != q.Limit {
			t.Errorf("%s: AddQuota(n=%d) = %+v, %v; want allowed %v, used %d", s.name, s.n, d, err, s.wantAllowed, s.wantUsed)
		}
	}
	u, err := m.QuotaUsage(ctx, "user-day", "u-1", q, nil, day(25).Add(2*time.Hour))
	want := QuotaUsage{Used: 0, Remaining: 3, Limit: 3, Start: day(25), ResetsAt: day(26)}
	if err != nil || !usageEqual(u, want) {
		t.Errorf("QuotaUsage = %+v, %v; want %+v", u, err, want)
	}
	u, _ = m.QuotaUsage(ctx, "user-day", "stranger", Quota{Limit: 9, Period: Month}, nil, t0)
	want = QuotaUsage{Used: 0, Remaining: 9, Limit: 9, Start: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), ResetsAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	if !usageEqual(u, want) || m.Len() != 1 {
		t.Errorf("QuotaUsage of an unknown key = %+v with %d entries; want %+v and nothing added", u, m.Len(), want)
	}
	if _, err := m.AddQuota(ctx, "p", "k", Quota{}, nil, t0, 1); err == nil {
		t.Errorf("AddQuota with a zero quota: no error")
	}
}

func usageEqual(a, b QuotaUsage) bool {
	return a.Used == b.Used && a.Remaining == b.Remaining && a.Limit == b.Limit && a.Start.Equal(b.Start) && a.ResetsAt.Equal(b.ResetsAt)
}

func TestMemoryBounded(t *testing.T) {
	ctx := context.Background()
	for _, maxKeys := range []int{1, 10, 1000, 5000} {
		t.Run(strconv.Itoa(maxKeys), func(t *testing.T) {
			m := NewMemory(maxKeys)
			out := make([]Decision, 1)
			for i := range 10 * maxKeys {
				key := "k" + strconv.Itoa(i)
				if i%3 == 0 {
					m.AddQuota(ctx, "q", key, Quota{100, Day}, nil, t0, 1)
				} else {
					m.Take(ctx, []Request{userReq(key)}, t0, out)
				}
				if m.Len() > maxKeys {
					t.Fatalf("after %d keys Len = %d, want at most %d", i+1, m.Len(), maxKeys)
				}
			}
			if m.Evictions() == 0 {
				t.Errorf("Evictions = 0 after %d keys into %d", 10*maxKeys, maxKeys)
			}
		})
	}
}

// TestEvictionOrder fills a one-shard store and checks what goes first: ended quota
// periods, then token buckets, then live quota counters.
func TestEvictionOrder(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(4)
	out := make([]Decision, 1)
	m.AddQuota(ctx, "q", "yesterday", Quota{10, Day}, nil, t0.Add(-24*time.Hour), 1)
	m.AddQuota(ctx, "q", "today", Quota{10, Day}, nil, t0, 1)
	m.Take(ctx, []Request{userReq("b1")}, t0, out)
	m.Take(ctx, []Request{userReq("b2")}, t0, out)
	kinds := func() (s string) { // the kinds held, and which quota counters
		for _, e := range m.Export() {
			if e.Kind == QuotaEntry {
				s += "q:" + e.Key + " "
			} else {
				s += "b "
			}
		}
		return s
	}
	steps := []struct {
		name string
		add  func()
		want string
	}{
		{"ended period goes first", func() { m.Take(ctx, []Request{userReq("b3")}, t0, out) }, "b b b q:today "},
		{"then a bucket", func() { m.AddQuota(ctx, "q", "q2", Quota{10, Day}, nil, t0, 1) }, "b b q:q2 q:today "},
		{"then a bucket again", func() { m.AddQuota(ctx, "q", "q3", Quota{10, Day}, nil, t0, 1) }, "b q:q2 q:q3 q:today "},
		{"the last bucket", func() { m.AddQuota(ctx, "q", "q4", Quota{10, Day}, nil, t0, 1) }, "q:q2 q:q3 q:q4 q:today "},
	}
	for _, s := range steps {
		s.add()
		if got := kinds(); got != s.want {
			t.Errorf("%s: entries %q, want %q", s.name, got, s.want)
		}
	}
	// Only quota counters are left: one of them must go.
	m.Take(ctx, []Request{userReq("b4")}, t0, out)
	if got := kinds(); strings.Count(got, "q:") != 3 || !strings.HasPrefix(got, "b ") {
		t.Errorf("quota counters last: entries %q, want a bucket and three counters", got)
	}
	if m.Evictions() != 5 {
		t.Errorf("Evictions = %d, want 5", m.Evictions())
	}
}

// TestHashIdentity checks what the hashed index relies on: a token bucket and a quota
// counter of the same policy and key are two entries, and an entry whose index hash
// collides with another's (forged here; with random seeds it is one chance in 2^64)
// is not taken for it but replaces it, as an eviction would.
func TestHashIdentity(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(1000)
	var out [1]Decision
	q := Quota{5, Day}
	m.Take(ctx, []Request{userReq("a")}, t0, out[:])
	if _, err := m.AddQuota(ctx, "site/user", "a", q, nil, t0, 2); err != nil {
		t.Fatal(err)
	}
	if m.Len() != 2 {
		t.Fatalf("Len = %d after a bucket and a quota of one policy and key, want 2", m.Len())
	}
	if u, _ := m.QuotaUsage(ctx, "site/user", "a", q, nil, t0); u.Used != 2 {
		t.Fatalf("quota used = %d, want 2", u.Used)
	}

	// Forge: give a's bucket the index hash that b's bucket will have.
	ida, ia := m.hashOf(entryKey{"site/user", "a", false})
	idb, ib := m.hashOf(entryKey{"site/user", "b", false})
	sa, sb := &m.shards[ia], &m.shards[ib]
	sa.mu.Lock()
	i := sa.findBucket(ida)
	sa.buckets[i].id.h = idb.h
	sa.index.delete(ida.h)
	sa.mu.Unlock()
	if sa != sb { // move it to b's shard, where b will look
		sa.mu.Lock()
		b := sa.buckets[i]
		sa.removeBucket(i)
		sa.mu.Unlock()
		sb.mu.Lock()
		sb.index.set(idb.h, int32(len(sb.buckets)))
		sb.buckets = append(sb.buckets, b)
		sb.mu.Unlock()
	} else {
		sa.mu.Lock()
		sa.index.set(idb.h, int32(i))
		sa.mu.Unlock()
	}
	for range 2 { // a's bucket had 2 of 3 tokens left; b's own bucket starts full
		m.Take(ctx, []Request{userReq("b")}, t0, out[:])
	}
	if !out[0].Allowed || out[0].Remaining != 1 {
		t.Fatalf("b's second call: %+v, want allowed with 1 left (a bucket of its own)", out[0])
	}
	if m.Len() != 2 {
		t.Fatalf("Len = %d, want 2: b's bucket replaced the colliding one", m.Len())
	}
	if got := len(m.Export()); got != 2 {
		t.Fatalf("Export has %d entries, want 2", got)
	}
	if u, _ := m.QuotaUsage(ctx, "site/user", "a", q, nil, t0); u.Used != 2 {
		t.Fatalf("a's quota used = %d after the collision, want 2 (untouched)", u.Used)
	}
}

func TestExportImport(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(100)
	out := make([]Decision, 1)
	for range 2 {
		m.Take(ctx, []Request{userReq("u-1")}, t0, out)
	}
	m.AddQuota(ctx, "user-month", "u-1", Quota{1000, Month}, nil, t0, 7)
	b, err := json.Marshal(m.Export())
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"kind":"bucket","policy":"site/user","key":"u-1","rate":"10/s","burst":3,"tokens":1,"updated":"2026-11-24T10:00:00Z"},` +
		`{"kind":"quota","policy":"user-month","key":"u-1","used":7,"limit":1000,"period_start":"2026-11-01T00:00:00Z","period_end":"2026-12-01T00:00:00Z"}]`
	if string(b) != want {
		t.Errorf("Export as JSON =\n%s\nwant\n%s", b, want)
	}
	var entries []Entry
	if err := json.Unmarshal(b, &entries); err != nil {
		t.Fatal(err)
	}
	restored := NewMemory(100)
	if err := restored.Import(entries); err != nil {
		t.Fatal(err)
	}
	restored.Take(ctx, []Request{userReq("u-1")}, t0, out)
	if want := (Decision{Allowed: true, Remaining: 0, Reset: 100 * time.Millisecond}); out[0] != want {
		t.Errorf("restored bucket: %+v, want %+v", out[0], want)
	}
	if d, _ := restored.AddQuota(ctx, "user-month", "u-1", Quota{1000, Month}, nil, t0, 1); d.Used != 8 {
		t.Errorf("restored quota: used %d, want 8", d.Used)
	}
	bad := []Entry{{Kind: "bucket", Policy: "p", Key: "k", Rate: Rate{1, time.Second}}}
	if err := restored.Import(bad); err == nil || err.Error() != `limit: Import: entry 0 (bucket "p" "k"): burst 0: must be more than zero` {
		t.Errorf("Import of a bad entry: error %v", err)
	}
}

func TestAllocs(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(1000)
	one := []Request{userReq("u-1")}
	two := []Request{userReq("u-1"), {PolicyID: "ip", Key: "10.0.0.1", Rate: Rate{1000, time.Second}}}
	out := make([]Decision, 2)
	m.Take(ctx, two, t0, out)
	q := Quota{1 << 40, Month}
	m.AddQuota(ctx, "q", "u-1", q, nil, t0, 1)
	buf := make([]byte, 0, 256)
	tests := []struct {
		name string
		f    func()
	}{
		{"Take one policy", func() { m.Take(ctx, one, t0, out) }},
		{"Take two policies", func() { m.Take(ctx, two, t0, out) }},
		{"Peek", func() { m.Peek(ctx, two, t0, out) }},
		{"AddQuota", func() { m.AddQuota(ctx, "q", "u-1", q, nil, t0, 1) }},
		{"QuotaUsage", func() { m.QuotaUsage(ctx, "q", "u-1", q, nil, t0) }},
		{"AppendPolicy and AppendRateLimit", func() {
			buf = AppendPolicy(buf[:0], "user", 100, 1, 200)
			buf = AppendRateLimit(buf[:0], "user", 187, 1)
		}},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(200, tt.f); n != 0 {
			t.Errorf("%s allocates %v times per call, want 0", tt.name, n)
		}
	}
}

// benchSerialAndParallel runs op(i) for i = 0, 1, 2... in one goroutine, then in
// GOMAXPROCS goroutines at once, each from its own start (different callers), each
// sub-benchmark reporting allocations.
func benchSerialAndParallel(b *testing.B, op func(i int)) {
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			op(i)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var goroutines atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for i := int(goroutines.Add(1)) * 7919; pb.Next(); i++ {
				op(i)
			}
		})
	})
}

func benchKeys() []string {
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	return keys
}

func BenchmarkTake(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(1 << 20)
	keys := benchKeys()
	big := Rate{1 << 40, time.Second}
	for _, policies := range []int{1, 2} {
		all := make([][]Request, len(keys))
		out := make([]Decision, 2)
		for i := range all {
			all[i] = []Request{{PolicyID: "user", Key: keys[i], Rate: big}, {PolicyID: "ip", Key: keys[(i*7)%len(keys)], Rate: big}}[:policies]
			m.Take(ctx, all[i], t0, out)
		}
		b.Run(fmt.Sprintf("policies=%d", policies), func(b *testing.B) {
			benchSerialAndParallel(b, func(i int) {
				var out [2]Decision
				m.Take(ctx, all[i%len(all)], t0, out[:])
			})
		})
	}
}

func BenchmarkAddQuota(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(1 << 20)
	keys := benchKeys()
	q := Quota{1 << 50, Month}
	for _, k := range keys {
		m.AddQuota(ctx, "q", k, q, nil, t0, 1)
	}
	benchSerialAndParallel(b, func(i int) { m.AddQuota(ctx, "q", keys[i%len(keys)], q, nil, t0, 1) })
}

// BenchmarkCallCold is what the handler asks of the store per call (one Check of a
// quota and two token buckets) for callers spread over a million keys, visited in a
// scattered order so that, as in a busy gateway, the entries are rarely in the CPU
// cache.
func BenchmarkCallCold(b *testing.B) {
	ctx := context.Background()
	const n = 1 << 20
	m := NewMemory(4 * n)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	big := Rate{1 << 40, time.Second}
	q := Quota{1 << 50, Month}
	call := func(i int) {
		k := keys[(uint64(i)*2654435761)%n]
		var (
			qout [1]QuotaDecision
			out  [2]Decision
		)
		quotas := [1]QuotaRequest{{PolicyID: "site/user-month", Key: k, Quota: q}}
		reqs := [2]Request{{PolicyID: "site/user", Key: k, Rate: big}, {PolicyID: "site/ip", Key: keys[n-1-(uint64(i)*2654435761)%n], Rate: big}}
		if ok, err := m.Check(ctx, quotas[:], reqs[:], t0, qout[:], out[:]); !ok || err != nil {
			panic(fmt.Sprint("Check: ", ok, err))
		}
	}
	for i := range n {
		call(i)
	}
	benchSerialAndParallel(b, call)
}
