package detector

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/vigilgw/vigil/detector/sketch"
)

// Query asks for aggregates of the calls that match a filter over a window ending at End.
//
// A window is answered from whole buckets of the finest resolution that reaches back far
// enough: 1 s buckets for windows within the last 10 minutes, 1 min buckets within 48
// hours, 1 h buckets beyond. The buckets counted are those that overlap the window
// (End-Window, End), so the newest, partly filled bucket is included, and the window
// counted is at least Window and at most one bucket longer.
type Query struct {
	// Filter selects calls; nil selects all.
	Filter *Matcher
	// GroupBy splits the result into one aggregate per distinct value of these dimensions.
	GroupBy DimSet
	// Window is the length of the window; at least one bucket is always counted.
	Window time.Duration
	// End is the end of the window (usually now).
	End time.Time
	// Need says which sketches to merge: leaving out what a metric does not use makes a
	// query several times cheaper. The zero value merges both.
	Need Need
}

// Need says which sketches a query merges.
type Need uint8

// What a query needs besides counts.
const (
	NeedAll     Need = 0 // latency and callers
	NeedCounts  Need = 1 // counts only
	NeedLatency Need = 2 // counts and the latency histogram
	NeedCallers Need = 4 // counts and the distinct-caller sketch
	// NeedTotals asks for Total and its split by class (the denominators of ratios) when
	// the filter has a status part; without it, calls outside the status filter are not
	// visited at all and Total only counts matching calls.
	NeedTotals   Need = 8
	needExplicit      = NeedCounts | NeedLatency | NeedCallers
)

func (n Need) latency() bool { return n&needExplicit == 0 || n&NeedLatency != 0 }
func (n Need) callers() bool { return n&needExplicit == 0 || n&NeedCallers != 0 }
func (n Need) totals() bool  { return n&needExplicit == 0 || n&NeedTotals != 0 }

// Aggregate is what a query returns for one group. Total counts the calls that match the
// filter without its status part; everything else counts the calls that match the whole
// filter, so that ratios can put the status filter over the total ("5xx of all calls").
type Aggregate struct {
	// Group holds the values of the group-by dimensions (the others are zero).
	Group Labels
	// Total is the number of calls matching the filter apart from its status.
	Total uint64
	// OK, Status4xx and Status5xx split Total by status class (OK is 1xx-3xx; Status5xx
	// includes calls that got no status).
	OK, Status4xx, Status5xx uint64
	// Count is the number of calls matching the whole filter.
	Count uint64
	// Blocked and Limited count the matching calls refused by the block list, a rate limit
	// or a quota.
	Blocked, Limited uint64
	// Failures counts matching calls whose upstream failed without a status, by kind:
	// FailureConnect, FailureTimeout, FailureTLS, FailureOther (index Failure-FailureConnect).
	Failures [numFailKinds]uint64
	// BytesIn and BytesOut sum request and response bytes of the matching calls.
	BytesIn, BytesOut uint64
	// LatencySum sums the latency of matching calls, in microseconds.
	LatencySum float64
	// Latency is the latency histogram (microseconds) of matching calls; nil when the view
	// answering the query keeps none.
	Latency *sketch.Histogram
	// Callers counts distinct callers (users, or IPs of anonymous callers) of matching
	// calls; nil when the view answering the query keeps none.
	Callers *sketch.HLL
	// callers, for queries answered from caller history, counts callers exactly.
	distinct uint64
	// statusFiltered records whether the filter had a status part.
	statusFiltered bool
	init           bool // a range point that has been set up
}

// ErrorRate returns the percentage of Total that matched the status filter, or when
// there was none, the percentage of 5xx (and unanswered) calls. NaN when Total is 0.
func (a *Aggregate) ErrorRate() float64 {
	if a.Total == 0 {
		return math.NaN()
	}
	if a.statusFiltered {
		return 100 * float64(a.Count) / float64(a.Total)
	}
	return 100 * float64(a.Status5xx) / float64(a.Total)
}

// SuccessRate returns the percentage of Total that matched the status filter, or when
// there was none, the percentage answered with 1xx-3xx. NaN when Total is 0.
func (a *Aggregate) SuccessRate() float64 {
	if a.Total == 0 {
		return math.NaN()
	}
	if a.statusFiltered {
		return 100 * float64(a.Count) / float64(a.Total)
	}
	return 100 * float64(a.OK) / float64(a.Total)
}

// LatencyAvg returns the mean latency of matching calls in milliseconds; NaN when none.
func (a *Aggregate) LatencyAvg() float64 {
	if a.Count == 0 || a.Latency == nil {
		return math.NaN()
	}
	return a.LatencySum / float64(a.Count) / 1000
}

// LatencyQuantile returns the q-quantile (0..1) of the latency of matching calls in
// milliseconds; NaN when none.
func (a *Aggregate) LatencyQuantile(q float64) float64 {
	if a.Latency == nil {
		return math.NaN()
	}
	v, ok := a.Latency.Quantile(q)
	if !ok {
		return math.NaN()
	}
	return v / 1000
}

// UniqueCallers returns the number of distinct callers of matching calls.
func (a *Aggregate) UniqueCallers() uint64 {
	if a.Callers != nil {
		return a.Callers.Estimate()
	}
	return a.distinct
}

// FailuresOf returns how many matching calls failed at the upstream with kind f
// (FailureConnect, FailureTimeout, FailureTLS or FailureOther).
func (a *Aggregate) FailuresOf(f Failure) uint64 {
	if f < FailureConnect || f >= numFailures {
		return 0
	}
	return a.Failures[failKind(f)]
}

// HasLatency reports whether the aggregate carries latency (it does unless it was
// answered from caller history).
func (a *Aggregate) HasLatency() bool { return a.Latency != nil }

// ErrNotTracked is returned for a query the store cannot answer from what it keeps: a
// filter or grouping that combines a caller (user, company, key) with dimensions that
// only a detail view keeps, while no rule tracks such a view.
var ErrNotTracked = errors.New("not tracked")

// Aggregate answers q: one aggregate per group, in no particular order. Groups with no
// matching call in the window are left out.
func (s *Store) Aggregate(q *Query) ([]Aggregate, error) {
	return s.Select(q.Filter, q.GroupBy).Aggregate(q.Window, q.End, q.Need)
}

// now returns the reference time for horizons: the newest call seen or end, whichever is
// later, in Unix seconds.
func (s *Store) now(end time.Time) int64 {
	n := s.lastEpoch.Load()
	if e := end.Unix(); e > n {
		n = e
	}
	return n
}

// detailFor returns a tracked detail view that has every needed dimension and reaches
// back far enough (back seconds before the newest call), preferring the fewest dimensions.
func (s *Store) detailFor(need DimSet, back int64) *view {
	var best *view
	for _, v := range *s.details.Load() {
		if !v.dims.Contains(need) || v.horizon() < back {
			continue
		}
		if best == nil || popcount(v.dims) < popcount(best.dims) {
			best = v
		}
	}
	return best
}

func popcount(s DimSet) int {
	n := 0
	for ; s != 0; s &= s - 1 {
		n++
	}
	return n
}

// pickResolution returns the index of the finest resolution of res that keeps the
// buckets back to from (Unix seconds), relative to now; -1 when none does. The finest
// holds every call only from fineFrom on (view.fineFrom).
func pickResolution(res []resolution, from, now, fineFrom int64) int {
	for i, r := range res {
		if r.holds(from, now, i, fineFrom) {
			return i
		}
	}
	return -1
}

// holds says whether the ring of r, of index i, holds every call from the Unix second
// from on, relative to now; a finest ring (i 0) only does from fineFrom on.
func (r resolution) holds(from, now int64, i int, fineFrom int64) bool {
	oldest := (floorDiv(now, r.secs) - r.slots + 1) * r.secs
	if i == 0 {
		oldest = max(oldest, fineFrom)
	}
	return from >= oldest
}

// span is a run of buckets of one ring: slots from (exclusive) to (inclusive).
type span struct {
	ri       int
	from, to int64
}

// splitSpans covers the seconds [a, b) with buckets: the whole buckets of the coarsest
// ring that fit inside, and the finer rings' buckets only at the two edges. Every ring
// holds every call, so the sum is what the finest ring alone would give, at a fraction
// of the buckets: a 5-minute window reads at most 2x59 one-second buckets and 5
// one-minute buckets instead of 300.
func splitSpans(dst []span, res []resolution, ri int, a, b int64) []span {
	if a >= b {
		return dst
	}
	r := res[ri].secs
	if ri+1 < len(res) {
		R := res[ri+1].secs
		A := (floorDiv(a+R-1, R)) * R // first coarse boundary at or after a
		B := floorDiv(b, R) * R       // last coarse boundary at or before b
		if A < B {
			dst = splitSpans(dst, res, ri, a, A)
			dst = splitSpans(dst, res, ri+1, A, B)
			return splitSpans(dst, res, ri, B, b)
		}
	}
	return append(dst, span{ri: ri, from: floorDiv(a, r) - 1, to: floorDiv(b-1, r)})
}

// windowSlots returns the slots of resolution r that overlap (end-window, end): from and
// to inclusive.
func windowSlots(window time.Duration, end time.Time, r resolution) (from, to int64) {
	if window < time.Second {
		window = time.Second
	}
	width := r.secs * int64(time.Second)
	endNs := end.UnixNano()
	to = floorDiv(endNs+width-1, width) - 1 // the last slot starting before end
	from = floorDiv(endNs-int64(window), width)
	if from > to {
		from = to
	}
	return from, to
}

// Selection is a filter and grouping bound to the series they match, kept up to date as
// series come and go, so that a rule evaluated every tick looks only at the series it
// touches rather than at every series in the store. Not safe for concurrent use.
type Selection struct {
	store   *Store
	filter  *Matcher
	group   DimSet
	need    DimSet
	v       *view
	gen     uint64
	seen    int
	first   int // the place in the view's list of the first series matched; -1: none
	matched []selected
	// aggs are the aggregates of the last call, reused by the next; groups indexes
	// them by group.
	aggs   []*Aggregate
	nAggs  int
	groups map[Labels]*Aggregate
}

type selected struct {
	s   *series
	hit bool // the series also matches the filter's status part
}

// Select binds a filter (nil: all calls) and grouping to the store.
func (s *Store) Select(filter *Matcher, group DimSet) *Selection {
	need := group
	if filter != nil {
		need |= filter.Dims()
	}
	return &Selection{store: s, filter: filter, group: group, need: need, first: -1}
}

// Locality is where the selection's series start in the store's list of series (its
// first match; math.MaxInt before the first Aggregate or when none matches). Selections
// evaluated in this order read the same series one after another, while they are still
// in the CPU's cache: rules of one family of endpoints read them once from memory
// instead of once each.
func (sel *Selection) Locality() int {
	if sel.first < 0 {
		return math.MaxInt
	}
	return sel.first
}

// refresh points the selection at the view that answers a window starting back seconds
// before the newest call, and brings its series list up to date.
func (sel *Selection) refresh(back int64) *view {
	var v *view
	if RouteDims.Contains(sel.need) {
		v = sel.store.route
	} else {
		v = sel.store.detailFor(sel.need, back)
	}
	if v == nil {
		return nil
	}
	if v != sel.v || v.gen.Load() != sel.gen {
		sel.v, sel.gen, sel.seen, sel.first, sel.matched = v, v.gen.Load(), 0, -1, sel.matched[:0]
	}
	list := v.series()
	statusFiltered := sel.filter != nil && sel.filter.Dims().Has(DimStatus)
	for i, s := range list[sel.seen:] {
		l := &s.labels
		if sel.filter != nil && !sel.filter.Match(l, v.dims&^(1<<DimStatus)) {
			continue
		}
		if sel.first < 0 {
			sel.first = sel.seen + i
		}
		hit := !statusFiltered || sel.filter.Match(l, 1<<DimStatus)
		sel.matched = append(sel.matched, selected{s: s, hit: hit})
	}
	sel.seen = len(list)
	return v
}

// Aggregate answers the selection over the window of the given length ending at end:
// one aggregate per group with calls in the window.
func (sel *Selection) Aggregate(window time.Duration, end time.Time, need Need) ([]Aggregate, error) {
	return sel.AggregateReaching(window, end, window, need)
}

// AggregateReaching is Aggregate at the resolution that reaches back reach (at least
// window) from end, so that two windows compared with each other (this week and the
// same window a week ago) are measured alike.
//
// The Latency histograms of the result belong to the selection: its next call that
// needs them reuses them (a rule evaluated every tick allocates none), so a caller
// copies what must outlive that call.
func (sel *Selection) AggregateReaching(window time.Duration, end time.Time, reach time.Duration, need Need) ([]Aggregate, error) {
	s := sel.store
	s.Flush()
	now := s.now(end)
	startSecs := end.Unix() - int64(max(window, reach)/time.Second)
	v := sel.refresh(now - startSecs)
	if v == nil {
		q := &Query{Filter: sel.filter, GroupBy: sel.group, Window: window, End: end, Need: need}
		if x, ok := s.callerIndexFor(q, sel.need); ok {
			return x.aggregate(q)
		}
		return nil, fmt.Errorf("%w: %s needs a rule that tracks these dimensions (only a caller alone, with status classes, blocked or limited, is kept for every call)", ErrNotTracked, sel.need)
	}
	ri := pickResolution(v.res, startSecs, now, v.fineFrom.Load())
	if ri < 0 {
		ri = len(v.res) - 1 // beyond the horizon: answer what is kept
	}
	from, to := windowSlots(window, end, v.res[ri])
	var spanBuf [8]span
	spans := splitSpans(spanBuf[:0], v.res, ri, from*v.res[ri].secs, (to+1)*v.res[ri].secs)
	statusFiltered := sel.filter != nil && sel.filter.Dims().Has(DimStatus)
	sel.nAggs = 0
	clear(sel.groups)
	var single *Aggregate // the one group of an ungrouped selection
	startAt := end.Add(-window).Unix()
	skipMisses := statusFiltered && !need.totals()
	for _, m := range sel.matched {
		if (skipMisses && !m.hit) || m.s.dead.Load() || m.s.newest.Load() < startAt {
			continue // nothing in the window, not wanted, or the series is gone
		}
		m.s.mu.Lock()
		var a *Aggregate
		for _, sp := range spans {
			m.s.rings[sp.ri].window(sp.from, sp.to, func(b *bucket) {
				if a == nil {
					a = sel.groupFor(&m.s.labels, &single, statusFiltered, need)
				}
				addBucket(a, b, m.hit)
			})
		}
		m.s.mu.Unlock()
	}
	out := make([]Aggregate, 0, sel.nAggs)
	if single != nil && single.Total > 0 {
		out = append(out, *single)
	}
	for _, a := range sel.groups {
		if a.Total > 0 {
			out = append(out, *a)
		}
	}
	return out, nil
}

// newAgg returns an empty aggregate for group g, reusing one of the last call's (and its
// sketches, when this call needs them too).
func (sel *Selection) newAgg(g Labels, statusFiltered bool, need Need) *Aggregate {
	if sel.nAggs == len(sel.aggs) {
		sel.aggs = append(sel.aggs, &Aggregate{})
	}
	a := sel.aggs[sel.nAggs]
	sel.nAggs++
	lat := a.Latency
	*a = Aggregate{Group: g, statusFiltered: statusFiltered}
	if need.latency() {
		if lat == nil {
			lat = &sketch.Histogram{}
		}
		lat.Reset()
		a.Latency = lat
	}
	if need.callers() {
		a.Callers = &sketch.HLL{}
	}
	return a
}

func (sel *Selection) groupFor(l *Labels, single **Aggregate, statusFiltered bool, need Need) *Aggregate {
	if sel.group == 0 {
		if *single == nil {
			*single = sel.newAgg(Labels{}, statusFiltered, need)
		}
		return *single
	}
	g := l.Project(sel.group)
	if sel.groups == nil {
		sel.groups = make(map[Labels]*Aggregate)
	}
	a := sel.groups[g]
	if a == nil {
		a = sel.newAgg(g, statusFiltered, need)
		sel.groups[g] = a
	}
	return a
}

func addBucket(a *Aggregate, b *bucket, hit bool) {
	a.Total += uint64(b.n)
	a.OK += uint64(b.n2xx)
	a.Status4xx += uint64(b.n4xx)
	a.Status5xx += uint64(b.n5xx)
	if !hit {
		return
	}
	a.Count += uint64(b.n)
	a.Blocked += uint64(b.blocked)
	a.Limited += uint64(b.limited)
	for i, n := range b.fails {
		a.Failures[i] += uint64(n)
	}
	a.BytesIn += b.bytesIn
	a.BytesOut += b.bytesOut
	a.LatencySum += b.latSum
	if a.Latency != nil {
		a.Latency.Merge(&b.lat)
	}
	if a.Callers != nil {
		a.Callers.Merge(&b.callers)
	}
}

// callerIndexFor returns the caller history that can answer q: the query needs at most
// one caller dimension, and besides it only status classes (all of 1xx-3xx, 4xx or 5xx),
// blocked or limited.
func (s *Store) callerIndexFor(q *Query, need DimSet) (*callerIndex, bool) {
	callers := need & CallerDims
	if popcount(callers) != 1 || need&^(CallerDims|1<<DimStatus|1<<DimBlocked|1<<DimLimited) != 0 {
		return nil, false
	}
	if q.GroupBy.Has(DimStatus) || q.GroupBy.Has(DimBlocked) || q.GroupBy.Has(DimLimited) {
		return nil, false
	}
	if q.Filter != nil && q.Filter.Dims().Has(DimStatus) {
		if _, ok := q.Filter.status.classes(); !ok {
			return nil, false
		}
	}
	var x *callerIndex
	switch {
	case callers.Has(DimUser):
		x = s.callers[0]
	case callers.Has(DimCompany):
		x = s.callers[1]
	default:
		x = s.callers[2]
	}
	return x, true
}

// Status classes as kept by caller history.
const (
	classOK = 1 << iota // 1xx-3xx
	class4xx
	class5xx
)

// classes returns the status classes the set is the exact union of, or false when it is
// not a union of whole classes (1xx-3xx together, 4xx, 5xx).
func (s *StatusSet) classes() (int, bool) {
	whole := func(lo, hi int) (all, none bool) {
		all, none = true, true
		for c := lo; c < hi; c++ {
			if s.Has(c) {
				none = false
			} else {
				all = false
			}
		}
		return
	}
	var m int
	for _, k := range []struct {
		lo, hi, bit int
	}{{100, 400, classOK}, {400, 500, class4xx}, {500, 600, class5xx}} {
		all, none := whole(k.lo, k.hi)
		switch {
		case all:
			m |= k.bit
		case !none:
			return 0, false
		}
	}
	// Codes below 100 (no answer) count as 5xx in caller history.
	return m, m != 0
}

func (x *callerIndex) aggregate(q *Query) ([]Aggregate, error) {
	secs, n := int64(hourSecs), int64(CallerHours)
	if q.Window > time.Duration(CallerHours)*time.Hour {
		secs, n = daySecs, CallerDays
	}
	from, to := windowSlots(q.Window, q.End, resolution{secs: secs, slots: n})
	if to-from+1 > n {
		from = to - n + 1
	}
	from-- // exclusive from here on
	startSecs := (from + 1) * secs
	var (
		statusFiltered bool
		classes        = classOK | class4xx | class5xx
		onlyBlocked    bool
		onlyLimited    bool
		wantID         string
		blockedFilter  *bool
		limitedFilter  *bool
	)
	if q.Filter != nil {
		f := &q.Filter.f
		if q.Filter.dims.Has(DimStatus) {
			statusFiltered = true
			classes, _ = q.Filter.status.classes()
		}
		blockedFilter, limitedFilter = f.Blocked, f.Limited
		onlyBlocked = blockedFilter != nil && *blockedFilter
		onlyLimited = limitedFilter != nil && *limitedFilter
		switch x.kind {
		case DimUser:
			wantID = f.User
		case DimCompany:
			wantID = f.Company
		case DimKey:
			wantID = f.Key
		}
	}
	if (blockedFilter != nil && !*blockedFilter) || (limitedFilter != nil && !*limitedFilter) {
		return nil, fmt.Errorf("%w: caller history cannot exclude blocked or limited calls", ErrNotTracked)
	}
	if onlyBlocked && onlyLimited {
		return nil, fmt.Errorf("%w: caller history cannot combine blocked and limited", ErrNotTracked)
	}
	grouped := q.GroupBy.Has(x.kind)
	total := Aggregate{statusFiltered: statusFiltered}
	var out []Aggregate
	visit := func(c *caller) {
		if c.last < startSecs {
			return
		}
		bs := c.hours
		if secs == daySecs {
			bs = c.days
		}
		var sum CallerCounts
		for i := len(bs) - 1; i >= 0 && int64(bs[i].slot) > from; i-- {
			if int64(bs[i].slot) <= to {
				sum.merge(&bs[i].CallerCounts)
			}
		}
		if sum.Calls == 0 {
			return
		}
		a := Aggregate{statusFiltered: statusFiltered}
		a.Total = uint64(sum.Calls)
		a.OK, a.Status4xx, a.Status5xx = uint64(sum.OK), uint64(sum.Status4), uint64(sum.Status5)
		// Blocked calls are answered 403 and limited ones 429: both are 4xx.
		switch {
		case onlyBlocked || onlyLimited:
			n := uint64(sum.Blocked)
			if onlyLimited {
				n = uint64(sum.Limited)
			}
			a.Total, a.OK, a.Status4xx, a.Status5xx = n, 0, n, 0
			if classes&class4xx != 0 {
				a.Count = n
			}
			a.Blocked, a.Limited = boolCount(onlyBlocked, a.Count), boolCount(onlyLimited, a.Count)
		default:
			if classes&classOK != 0 {
				a.Count += uint64(sum.OK)
			}
			if classes&class4xx != 0 {
				a.Count += uint64(sum.Status4)
				a.Blocked, a.Limited = uint64(sum.Blocked), uint64(sum.Limited)
			}
			if classes&class5xx != 0 {
				a.Count += uint64(sum.Status5)
			}
		}
		if a.Count > 0 {
			a.distinct = 1
		}
		if grouped {
			switch x.kind {
			case DimUser:
				a.Group.User = c.id
			case DimCompany:
				a.Group.Company = c.id
			case DimKey:
				a.Group.Key = c.id
			}
			out = append(out, a)
			return
		}
		total.Total += a.Total
		total.OK += a.OK
		total.Status4xx += a.Status4xx
		total.Status5xx += a.Status5xx
		total.Count += a.Count
		total.Blocked += a.Blocked
		total.Limited += a.Limited
		total.distinct += a.distinct
	}
	if wantID != "" {
		sh := x.shard(wantID)
		sh.mu.Lock()
		if i, ok := sh.m[wantID]; ok {
			visit(&sh.slab[i])
		}
		sh.mu.Unlock()
	} else {
		for i := range x.shards {
			sh := &x.shards[i]
			sh.mu.Lock()
			for j := range sh.slab {
				if sh.slab[j].id != "" {
					visit(&sh.slab[j])
				}
			}
			sh.mu.Unlock()
		}
	}
	if !grouped && total.Total > 0 {
		out = append(out, total)
	}
	return out, nil
}

func boolCount(b bool, n uint64) uint64 {
	if b {
		return n
	}
	return 0
}

// CallerHistory is what the store knows of one caller.
type CallerHistory struct {
	// ID is the user id, company id or key id.
	ID string `json:"id"`
	// FirstSeen, LastSeen and FirstSuccess are the times of the first call, the latest call
	// and the first call answered with 1xx-3xx (nil when none yet).
	FirstSeen    time.Time  `json:"first_seen"`
	LastSeen     time.Time  `json:"last_seen"`
	FirstSuccess *time.Time `json:"first_success"`
	// Hours and Days hold the counts per hour (7 days) and per day (35 days), oldest first.
	Hours []CallerPeriod `json:"hours"`
	Days  []CallerPeriod `json:"days"`
	// TopFailing lists the endpoints and statuses the caller's failing calls (4xx, 5xx)
	// got most, most frequent first (approximate: see TopFailures).
	TopFailing []Failing `json:"top_failing"`
}

// CallerPeriod is one hour or day of a caller's history.
type CallerPeriod struct {
	Start time.Time `json:"start"`
	CallerCounts
}

// Caller returns the history of one user, company or key (dim is DimUser, DimCompany or
// DimKey).
func (s *Store) Caller(dim Dim, id string) (CallerHistory, bool) {
	s.Flush()
	return s.CallerApplied(dim, id)
}

// CallerApplied is Caller without applying buffered calls first.
func (s *Store) CallerApplied(dim Dim, id string) (CallerHistory, bool) {
	x := s.callerIndexOf(dim)
	if x == nil {
		return CallerHistory{}, false
	}
	sh := x.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.m[id]
	if !ok {
		return CallerHistory{}, false
	}
	c := &sh.slab[i]
	h := CallerHistory{ID: c.id, FirstSeen: time.Unix(c.first, 0).UTC(), LastSeen: time.Unix(c.last, 0).UTC()}
	if c.first2xx != 0 {
		t := time.Unix(c.first2xx, 0).UTC()
		h.FirstSuccess = &t
	}
	for _, b := range c.hours {
		h.Hours = append(h.Hours, CallerPeriod{Start: time.Unix(int64(b.slot)*hourSecs, 0).UTC(), CallerCounts: b.CallerCounts})
	}
	for _, b := range c.days {
		h.Days = append(h.Days, CallerPeriod{Start: time.Unix(int64(b.slot)*daySecs, 0).UTC(), CallerCounts: b.CallerCounts})
	}
	h.TopFailing = []Failing{}
	if c.fails != nil {
		for _, f := range c.fails {
			if f.Count > 0 {
				h.TopFailing = append(h.TopFailing, f)
			}
		}
		sort.Slice(h.TopFailing, func(i, j int) bool {
			a, b := h.TopFailing[i], h.TopFailing[j]
			if a.Count != b.Count {
				return a.Count > b.Count
			}
			if a.Endpoint != b.Endpoint {
				return a.Endpoint < b.Endpoint
			}
			return a.Status < b.Status
		})
	}
	return h, true
}

// SortAggregates orders aggregates by their group labels, for stable output.
func SortAggregates(as []Aggregate, dims DimSet) {
	ds := dims.List()
	sort.Slice(as, func(i, j int) bool {
		for _, d := range ds {
			a, b := as[i].Group.Get(d), as[j].Group.Get(d)
			if a != b {
				return a < b
			}
		}
		return false
	})
}

// RangeQuery asks for a time series of aggregates: one point per Step from From until
// To, point k covering [From+k*Step, From+(k+1)*Step). A To within a second (such as
// now) counts that whole second, so that the point holding To is there.
type RangeQuery struct {
	// Filter selects calls; nil selects all.
	Filter *Matcher
	// GroupBy splits the result into one series per distinct value of these dimensions.
	GroupBy DimSet
	// From and To bound the range; From is rounded down to a multiple of Step.
	From, To time.Time
	// Step is the width of a point; it must be a multiple of a resolution the answering
	// view keeps (1s, 1m or 1h), and is rounded up to whole seconds.
	Step time.Duration
	// Need says which sketches to merge (see Query).
	Need Need
}

// MaxRangePoints caps the points of a range query.
const MaxRangePoints = 20000

// RangeGroup is the series of one group.
type RangeGroup struct {
	Group  Labels
	Points []Aggregate
}

// Range answers a range query. It returns the start of the first point (From rounded
// down to the step) and one series per group that had calls in the range.
func (s *Store) Range(q *RangeQuery) (time.Time, []RangeGroup, error) {
	s.Flush()
	step := int64((q.Step + time.Second - 1) / time.Second)
	if step <= 0 {
		return time.Time{}, nil, &FieldError{Field: "step", Err: errors.New("must be positive")}
	}
	from := floorDiv(q.From.Unix(), step) * step
	to := q.To.Unix()
	if q.To.Nanosecond() > 0 {
		to++ // the range ends within this second: its calls so far are in the range
	}
	if to <= from {
		return time.Unix(from, 0).UTC(), nil, nil
	}
	k := (to - from + step - 1) / step
	if k > MaxRangePoints {
		return time.Time{}, nil, &FieldError{Field: "step", Err: fmt.Errorf("%d points is more than %d: use a longer step or a shorter range", k, MaxRangePoints)}
	}
	need := q.GroupBy
	if q.Filter != nil {
		need |= q.Filter.Dims()
	}
	now := s.now(q.To)
	var v *view
	if RouteDims.Contains(need) {
		v = s.route
	} else if v = s.detailFor(need, now-from); v == nil {
		return time.Time{}, nil, fmt.Errorf("%w: %s needs a rule that tracks these dimensions", ErrNotTracked, need)
	}
	ri := -1
	for i, r := range v.res {
		if step%r.secs == 0 && r.holds(from, now, i, v.fineFrom.Load()) {
			ri = i
			break
		}
	}
	if ri < 0 {
		// Beyond every horizon: the coarsest resolution, if it divides the step.
		last := len(v.res) - 1
		oldest := (floorDiv(now, v.res[last].secs) - v.res[last].slots + 1) * v.res[last].secs
		if from < oldest && step%v.res[last].secs == 0 {
			ri = last
		} else {
			var kept []string
			for _, r := range v.res {
				kept = append(kept, fmt.Sprintf("%ds buckets for %s", r.secs, time.Duration(r.secs*r.slots)*time.Second))
			}
			return time.Time{}, nil, &FieldError{Field: "step", Err: fmt.Errorf("%ds is finer than what is kept that far back (%s): use a longer step or a shorter range", step, strings.Join(kept, ", "))}
		}
	}
	r := v.res[ri]
	statusFiltered := q.Filter != nil && q.Filter.Dims().Has(DimStatus)
	groups := make(map[Labels]*RangeGroup)
	for _, se := range v.series() {
		l := &se.labels
		if q.Filter != nil && !q.Filter.Match(l, v.dims&^(1<<DimStatus)) {
			continue
		}
		hit := q.Filter == nil || !statusFiltered || q.Filter.Match(l, 1<<DimStatus)
		g := l.Project(q.GroupBy)
		se.mu.Lock()
		se.rings[ri].window(floorDiv(from, r.secs)-1, floorDiv(to-1, r.secs), func(b *bucket) {
			i := (b.slot*r.secs - from) / step
			if i < 0 || i >= k {
				return
			}
			rg := groups[g]
			if rg == nil {
				rg = &RangeGroup{Group: g, Points: make([]Aggregate, k)}
				groups[g] = rg
			}
			p := &rg.Points[i]
			if !p.init {
				p.init = true
				p.Group, p.statusFiltered = g, statusFiltered
				if q.Need.latency() {
					p.Latency = &sketch.Histogram{}
				}
				if q.Need.callers() {
					p.Callers = &sketch.HLL{}
				}
			}
			addBucket(p, b, hit)
		})
		se.mu.Unlock()
	}
	out := make([]RangeGroup, 0, len(groups))
	for _, rg := range groups {
		for i := range rg.Points {
			if !rg.Points[i].init {
				rg.Points[i] = Aggregate{Group: rg.Group, init: true, statusFiltered: statusFiltered}
				if q.Need.latency() {
					rg.Points[i].Latency = &sketch.Histogram{}
				}
				if q.Need.callers() {
					rg.Points[i].Callers = &sketch.HLL{}
				}
			}
		}
		out = append(out, *rg)
	}
	return time.Unix(from, 0).UTC(), out, nil
}

// SortRangeGroups orders range groups by their group labels, for stable output.
func SortRangeGroups(gs []RangeGroup, dims DimSet) {
	ds := dims.List()
	sort.Slice(gs, func(i, j int) bool {
		for _, d := range ds {
			a, b := gs[i].Group.Get(d), gs[j].Group.Get(d)
			if a != b {
				return a < b
			}
		}
		return false
	})
}
