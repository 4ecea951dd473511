package detector

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"sort"
	"testing"
	"time"
)

// world is a set of recorded calls and the store they were recorded into, so that every
// query can be checked against a brute-force recomputation over the calls.
type world struct {
	calls []Call
	store *Store
	now   time.Time
}

var (
	testEndpoints = []string{"/users/{id}", "/users/{id}/orders", "/orders", "/health", "/webhooks/partner-x"}
	testStatuses  = []int{200, 200, 200, 201, 204, 301, 400, 401, 404, 405, 429, 500, 502, 503, 0}
	testUpstreams = []string{"", "10.0.0.1:9000", "mail.example.com:443"}
)

func newWorld(t testing.TB, seed uint64, n int, track ...trackKey) *world {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	w := &world{store: New(Config{}), now: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	for _, k := range track {
		w.store.Track(k.dims, time.Duration(k.horizon)*time.Second)
	}
	for i := 0; i < n; i++ {
		var at time.Time
		switch r := rng.Float64(); {
		case r < 0.5: // the last 15 minutes: 1 s buckets
			at = w.now.Add(-time.Duration(rng.Int64N(int64(15 * time.Minute))))
		case r < 0.85: // the last 2 days: 1 min buckets
			at = w.now.Add(-time.Duration(rng.Int64N(int64(48 * time.Hour))))
		default: // the last 20 days: 1 h buckets
			at = w.now.Add(-time.Duration(rng.Int64N(int64(20 * 24 * time.Hour))))
		}
		c := Call{
			Time:     at,
			Method:   []string{"GET", "POST"}[rng.IntN(2)],
			Endpoint: testEndpoints[rng.IntN(len(testEndpoints))],
			Status:   testStatuses[rng.IntN(len(testStatuses))],
			Latency:  time.Duration(math.Exp(rng.NormFloat64()*1.2+9.5)) * time.Nanosecond * 100,
			BytesIn:  rng.Int64N(2000),
			BytesOut: rng.Int64N(20000),
			Upstream: testUpstreams[rng.IntN(len(testUpstreams))],
			Blocked:  rng.IntN(20) == 0,
			Limited:  rng.IntN(20) == 0,
			IP:       netip.AddrFrom4([4]byte{10, 1, byte(rng.IntN(4)), byte(rng.IntN(200))}),
		}
		if c.Status == 502 || c.Status == 0 {
			c.Failure = []Failure{FailureConnect, FailureTimeout, FailureTLS, FailureOther}[rng.IntN(4)]
		}
		// As in the gateway: blocked calls are answered 403, limited ones 429.
		if c.Blocked {
			c.Status, c.Limited = 403, false
		} else if c.Limited {
			c.Status = 429
		}
		if u := rng.IntN(60); u < 50 {
			c.User = fmt.Sprintf("u-%d", u)
		}
		if co := rng.IntN(8); co < 5 {
			c.Company = fmt.Sprintf("c-%d", co)
		}
		if k := rng.IntN(4); k < 3 {
			c.Key = fmt.Sprintf("key:%08x", k)
		}
		w.calls = append(w.calls, c)
	}
	// Record mostly in time order, as a gateway does, with a few late arrivals.
	sort.Slice(w.calls, func(i, j int) bool { return w.calls[i].Time.Before(w.calls[j].Time) })
	for i := 0; i+1 < len(w.calls); i += 37 {
		w.calls[i], w.calls[i+1] = w.calls[i+1], w.calls[i]
	}
	for i := range w.calls {
		w.store.Record(&w.calls[i])
	}
	return w
}

// bruteResolution mirrors the documented rule: the finest resolution whose kept buckets
// reach back to the start of the window.
func bruteResolution(res []resolution, now, start int64) resolution {
	for _, r := range res {
		oldest := (floorDiv(now, r.secs) - r.slots + 1) * r.secs
		if start >= oldest {
			return r
		}
	}
	return res[len(res)-1]
}

type bruteAgg struct {
	total, ok, s4, s5, count, blocked, limited, bytesIn, bytesOut uint64
	fails                                                         [numFailKinds]uint64
	lat                                                           []float64
	callers                                                       map[string]bool
}

func callerOf(c *Call) string {
	if c.User != "" {
		return c.User
	}
	return "ip:" + c.IP.String()
}

func (w *world) brute(f *Filter, group DimSet, window time.Duration, end time.Time, res []resolution) map[Labels]*bruteAgg {
	m, err := f.Compile()
	if err != nil {
		panic(err)
	}
	now := end.Unix()
	if n := w.calls[len(w.calls)-1].Time.Unix(); n > now { // calls are nearly sorted
		now = n
	}
	for i := range w.calls {
		if t := w.calls[i].Time.Unix(); t > now {
			now = t
		}
	}
	r := bruteResolution(res, now, end.Unix()-int64(window/time.Second))
	out := map[Labels]*bruteAgg{}
	for i := range w.calls {
		c := &w.calls[i]
		// The bucket of the call must overlap the window (end-window, end).
		slot := floorDiv(c.Time.Unix(), r.secs)
		bStart, bEnd := time.Unix(slot*r.secs, 0), time.Unix((slot+1)*r.secs, 0)
		if !bStart.Before(end) || !bEnd.After(end.Add(-window)) {
			continue
		}
		if r.secs == hourSecs || r.secs == daySecs {
			// Caller history keeps at most its horizon of buckets back from the end.
			if slot < floorDiv(end.Unix()-1, r.secs)-r.slots+1 {
				continue
			}
		}
		// Expired from the ring relative to the newest call (caller history: see below).
		if r.secs != hourSecs && r.secs != daySecs && slot <= floorDiv(now, r.secs)-r.slots {
			continue
		}
		l := LabelsOf(c)
		l.User, l.Company, l.Key = identity(l.User), identity(l.Company), identity(l.Key)
		if !m.Match(&l, AllDims&^(1<<DimStatus)) {
			continue
		}
		g := l.Project(group)
		a := out[g]
		if a == nil {
			a = &bruteAgg{callers: map[string]bool{}}
			out[g] = a
		}
		a.total++
		switch {
		case c.Status >= 500 || c.Status < 100:
			a.s5++
		case c.Status >= 400:
			a.s4++
		default:
			a.ok++
		}
		if !m.Match(&l, 1<<DimStatus) {
			continue
		}
		a.count++
		if c.Blocked {
			a.blocked++
		}
		if c.Limited {
			a.limited++
		}
		if c.Failure > FailureStatus {
			a.fails[failKind(c.Failure)]++
		}
		a.bytesIn += uint64(c.BytesIn)
		a.bytesOut += uint64(c.BytesOut)
		a.lat = append(a.lat, float64(c.Latency)/1e3)
		a.callers[callerOf(c)] = true
	}
	return out
}

func nearestRank(v []float64, q float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	r := int(math.Ceil(q * float64(len(s))))
	if r < 1 {
		r = 1
	}
	return s[r-1]
}

func bptr(b bool) *bool { return &b }

func TestAggregateMatchesBruteForce(t *testing.T) {
	w := newWorld(t, 1, 12000)
	filters := []Filter{
		{},
		{Status: "401"},
		{Status: "4xx"},
		{Status: "400,404,405"},
		{Status: "5xx,429"},
		{Endpoint: "/users/*"},
		{Endpoint: "/users/*", Method: "GET", Status: "401"},
		{Upstream: "mail.example.com:443"},
		{Upstream: "mail.example.com:443", Status: "5xx"},
		{Blocked: bptr(true)},
		{Limited: bptr(false), Status: "2xx"},
		{Endpoint: "*orders"},
	}
	groups := []DimSet{0, Dims(DimEndpoint), Dims(DimStatus), Dims(DimUpstream, DimMethod), Dims(DimBlocked)}
	windows := []time.Duration{time.Second, 10 * time.Second, time.Minute, 5 * time.Minute, 10 * time.Minute,
		15 * time.Minute, time.Hour, 7 * time.Hour, 30 * time.Hour, 72 * time.Hour, 10 * 24 * time.Hour}
	ends := []time.Time{w.now, w.now.Add(-90 * time.Second), w.now.Add(-7 * 24 * time.Hour)}
	for _, f := range filters {
		for _, g := range groups {
			for _, win := range windows {
				for _, end := range ends {
					name := fmt.Sprintf("%+v/%s/%s/-%s", f, g, win, w.now.Sub(end))
					m, err := f.Compile()
					if err != nil {
						t.Fatal(err)
					}
					got, err := w.store.Aggregate(&Query{Filter: m, GroupBy: g, Window: win, End: end})
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					want := w.brute(&f, g, win, end, routeResolutions)
					compareAggregates(t, name, got, want)
				}
			}
		}
	}
}

func compareAggregates(t *testing.T, name string, got []Aggregate, want map[Labels]*bruteAgg) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d groups, want %d", name, len(got), len(want))
		return
	}
	for i := range got {
		a := &got[i]
		b := want[a.Group]
		if b == nil {
			t.Errorf("%s: unexpected group %+v", name, a.Group)
			continue
		}
		type pair struct {
			what      string
			got, want uint64
		}
		for _, p := range []pair{{"total", a.Total, b.total}, {"ok", a.OK, b.ok}, {"4xx", a.Status4xx, b.s4}, {"5xx", a.Status5xx, b.s5},
			{"count", a.Count, b.count}, {"blocked", a.Blocked, b.blocked}, {"limited", a.Limited, b.limited}} {
			if p.got != p.want {
				t.Errorf("%s group %+v: %s = %d, want %d", name, a.Group, p.what, p.got, p.want)
			}
		}
		if a.Latency == nil {
			continue // caller history keeps no latency
		}
		if a.Failures != b.fails {
			t.Errorf("%s group %+v: failures %v, want %v", name, a.Group, a.Failures, b.fails)
		}
		if a.BytesIn != b.bytesIn || a.BytesOut != b.bytesOut {
			t.Errorf("%s group %+v: bytes %d/%d, want %d/%d", name, a.Group, a.BytesIn, a.BytesOut, b.bytesIn, b.bytesOut)
		}
		if b.count == 0 {
			continue
		}
		var sum float64
		for _, v := range b.lat {
			sum += v
		}
		if avg, want := a.LatencyAvg(), sum/float64(len(b.lat))/1000; math.Abs(avg-want) > 1e-6*want {
			t.Errorf("%s group %+v: latency avg %g ms, want %g", name, a.Group, avg, want)
		}
		for _, q := range []float64{0.5, 0.9, 0.99} {
			got, want := a.LatencyQuantile(q), nearestRank(b.lat, q)/1000
			if math.Abs(got-want) > 0.02*want {
				t.Errorf("%s group %+v: latency p%v %g ms, want %g (more than 2%% off)", name, a.Group, q*100, got, want)
			}
		}
		if got, want := float64(a.UniqueCallers()), float64(len(b.callers)); math.Abs(got-want) > 0.03*want+0.5 {
			t.Errorf("%s group %+v: unique callers %v, want %v", name, a.Group, got, want)
		}
	}
}

const AllDims = DimSet(1<<numDims - 1)

func TestDetailViewMatchesBruteForce(t *testing.T) {
	dims := Dims(DimUser, DimStatus, DimEndpoint)
	k := trackKey{dims: dims, horizon: 3 * 3600}
	w := newWorld(t, 2, 20000, k)
	res := detailResolutions(k.horizon)
	cases := []struct {
		f     Filter
		group DimSet
	}{
		{Filter{Status: "401"}, Dims(DimUser)},
		{Filter{Status: "400,404,405", Endpoint: "/users/*"}, Dims(DimUser)},
		{Filter{User: "u-7"}, Dims(DimEndpoint)},
		{Filter{User: "u-7", Status: "5xx"}, 0},
		{Filter{}, Dims(DimUser, DimStatus)},
	}
	for _, c := range cases {
		for _, win := range []time.Duration{time.Second, 30 * time.Second, 5 * time.Minute, 15 * time.Minute, time.Hour, 2 * time.Hour} {
			name := fmt.Sprintf("%+v/%s/%s", c.f, c.group, win)
			m, err := c.f.Compile()
			if err != nil {
				t.Fatal(err)
			}
			got, err := w.store.Aggregate(&Query{Filter: m, GroupBy: c.group, Window: win, End: w.now})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			compareAggregates(t, name, got, w.brute(&c.f, c.group, win, w.now, res))
		}
	}
	// Dimensions no view keeps are refused with ErrNotTracked.
	m, _ := (&Filter{Status: "401"}).Compile()
	if _, err := w.store.Aggregate(&Query{Filter: m, GroupBy: Dims(DimCompany), Window: time.Minute, End: w.now}); err == nil {
		t.Error("group by company with status 401 and no tracked view: want ErrNotTracked")
	}
}

func TestCallerHistoryMatchesBruteForce(t *testing.T) {
	w := newWorld(t, 3, 20000)
	hours := []resolution{{secs: hourSecs, slots: CallerHours}, {secs: daySecs, slots: CallerDays}}
	cases := []struct {
		f     Filter
		group DimSet
	}{
		{Filter{}, Dims(DimUser)},
		{Filter{Status: "4xx"}, Dims(DimUser)},
		{Filter{Status: "5xx"}, Dims(DimCompany)},
		{Filter{Status: "4xx,5xx"}, Dims(DimKey)},
		{Filter{User: "u-3"}, 0},
		{Filter{Company: "c-2", Status: "2xx,3xx,1xx"}, 0},
		{Filter{Blocked: bptr(true)}, Dims(DimUser)},
		{Filter{Limited: bptr(true)}, Dims(DimCompany)},
	}
	for _, c := range cases {
		for _, win := range []time.Duration{time.Hour, 5 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 20 * 24 * time.Hour} {
			name := fmt.Sprintf("%+v/%s/%s", c.f, c.group, win)
			m, err := c.f.Compile()
			if err != nil {
				t.Fatal(err)
			}
			got, err := w.store.Aggregate(&Query{Filter: m, GroupBy: c.group, Window: win, End: w.now})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			r := hours[0]
			if win > CallerHours*time.Hour {
				r = hours[1]
			}
			want := w.brute(&c.f, c.group, win, w.now, []resolution{r})
			if c.f.Blocked != nil || c.f.Limited != nil {
				// Caller history counts blocked and limited calls among all calls: the
				// brute force's total is over the filtered calls too.
				for _, a := range want {
					a.ok, a.s4, a.s5 = 0, a.count, 0
				}
			}
			if c.group == 0 {
				merged := &bruteAgg{callers: map[string]bool{}}
				for _, a := range want {
					merged.total += a.total
					merged.ok += a.ok
					merged.s4 += a.s4
					merged.s5 += a.s5
					merged.count += a.count
					merged.blocked += a.blocked
					merged.limited += a.limited
				}
				want = map[Labels]*bruteAgg{{}: merged}
				if merged.total == 0 {
					want = map[Labels]*bruteAgg{}
				}
			}
			compareAggregates(t, name, got, want)
		}
	}
}

func TestRangeMatchesAggregate(t *testing.T) {
	w := newWorld(t, 4, 20000)
	for _, c := range []struct {
		f          Filter
		group      DimSet
		span, step time.Duration
	}{
		{Filter{}, 0, 10 * time.Minute, time.Minute},
		{Filter{Status: "5xx"}, Dims(DimEndpoint), time.Hour, time.Minute},
		{Filter{Endpoint: "/users/*"}, Dims(DimStatus), 5 * time.Minute, 10 * time.Second},
		{Filter{}, Dims(DimUpstream), 24 * time.Hour, time.Hour},
	} {
		m, _ := c.f.Compile()
		end := w.now.Truncate(c.step)
		start, groups, err := w.store.Range(&RangeQuery{Filter: m, GroupBy: c.group, From: end.Add(-c.span), To: end, Step: c.step})
		if err != nil {
			t.Fatal(err)
		}
		if !start.Equal(end.Add(-c.span)) {
			t.Fatalf("start %v, want %v", start, end.Add(-c.span))
		}
		for _, g := range groups {
			if len(g.Points) != int(c.span/c.step) {
				t.Fatalf("%d points, want %d", len(g.Points), c.span/c.step)
			}
			for i, p := range g.Points {
				// Point i covers [start+i*step, start+(i+1)*step): the window of that length
				// ending at its end.
				pend := start.Add(time.Duration(i+1) * c.step)
				gf := c.f
				want := w.brute(&gf, c.group, c.step, pend, routeResolutions)[g.Group]
				if want == nil {
					want = &bruteAgg{}
				}
				if p.Total != want.total || p.Count != want.count {
					t.Errorf("%+v step %s point %d group %+v: total/count %d/%d, want %d/%d", c.f, c.step, i, g.Group, p.Total, p.Count, want.total, want.count)
				}
			}
		}
	}
}

// TestRangeEndsWithinASecond: a range that ends a moment into a second (as "now" does)
// has the point holding that second, with the calls of that second so far. It used to
// drop them when the second began a step: the /vigil/series answer of an admin test,
// asked in the same second as its calls at the turn of a minute, came back empty.
func TestRangeEndsWithinASecond(t *testing.T) {
	s := New(Config{})
	turn := time.Date(2026, 11, 24, 12, 1, 0, 0, time.UTC)
	s.Record(&Call{Time: turn.Add(-30 * time.Second), Method: "GET", Endpoint: "/a", Status: 503})
	s.Record(&Call{Time: turn.Add(300 * time.Millisecond), Method: "GET", Endpoint: "/a", Status: 503})
	m, _ := (&Filter{Status: "5xx"}).Compile()
	lastPoints := func(to time.Time) []uint64 {
		t.Helper()
		_, groups, err := s.Range(&RangeQuery{Filter: m, From: turn.Add(-10 * time.Minute), To: to, Step: time.Minute})
		if err != nil || len(groups) != 1 {
			t.Fatalf("to %v: %+v %v", to, groups, err)
		}
		var totals []uint64
		for _, p := range groups[0].Points {
			totals = append(totals, p.Total)
		}
		return totals
	}
	// 0.8 s after the turn: 11 points, the last the new minute with its call.
	if got := lastPoints(turn.Add(800 * time.Millisecond)); len(got) != 11 || got[9] != 1 || got[10] != 1 {
		t.Errorf("to 0.8 s after the turn: %v, want 11 points ending 1, 1", got)
	}
	// On the turn exactly: up to it, not after: 10 points, the last the minute before.
	if got := lastPoints(turn); len(got) != 10 || got[9] != 1 {
		t.Errorf("to the turn: %v, want 10 points ending 1", got)
	}
}
