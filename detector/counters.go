package detector

import (
	"fmt"
	"sync"
	"time"
)

// CallerCounter counts, per caller of one kind (user, company or key), the calls that
// match a filter: hourly for 7 days and daily for 35 days, like the caller history, but
// only for matching calls ("400, 404 or 405 responses per user"). Cohort rules use it to
// judge behaviour over weeks without scanning calls. It counts from the moment it is
// created (or, after a restart, from its counts in the snapshot: WriteSnapshot keeps
// them); Release stops it. Bounded by MaxKeys callers, least recently seen evicted.
type CallerCounter struct {
	*counterCore
	once sync.Once
}

// counterCore is shared by the counters of the same kind and filter.
type counterCore struct {
	store   *Store
	kind    Dim
	key     string // kind and filter, for sharing
	matcher *Matcher
	index   *callerIndex
	refs    int // guarded by store.trackMu
}

// CountCallers starts counting the calls matching m (nil: all) per caller of kind.
// Counters of the same kind and filter share their counts.
func (s *Store) CountCallers(kind Dim, m *Matcher) *CallerCounter {
	key := kind.String()
	if m != nil {
		f := m.Filter()
		key += fmt.Sprintf("|%+v|%v|%v", f, boolPtr(f.Blocked), boolPtr(f.Limited))
	}
	s.trackMu.Lock()
	defer s.trackMu.Unlock()
	for _, c := range s.counters {
		if c.key == key {
			c.refs++
			return &CallerCounter{counterCore: c}
		}
	}
	c := &counterCore{store: s, kind: kind, key: key, matcher: m, index: newCallerIndex(kind, s.cfg.MaxKeys), refs: 1}
	if p, ok := s.pendingCounters[key]; ok { // counts of the same rule before a restart
		delete(s.pendingCounters, key)
		c.index.restore(p)
	}
	s.counters = append(s.counters, c)
	s.publishCounters()
	return &CallerCounter{counterCore: c}
}

// restoreCounter merges a snapshot's counter into the counter of the same key, or keeps
// it until such a counter is created (or the next snapshot is written).
func (s *Store) restoreCounter(dc decodedCounter) {
	s.trackMu.Lock()
	for _, c := range s.counters {
		if c.key == dc.key {
			s.trackMu.Unlock()
			c.index.restore(dc.callers)
			return
		}
	}
	if s.pendingCounters == nil {
		s.pendingCounters = map[string][]caller{}
	}
	s.pendingCounters[dc.key] = append(s.pendingCounters[dc.key], dc.callers...)
	s.trackMu.Unlock()
}

func boolPtr(b *bool) string {
	if b == nil {
		return "-"
	}
	return fmt.Sprint(*b)
}

// Release stops the counter (once its last sharer released it).
func (c *CallerCounter) Release() {
	c.once.Do(func() {
		s := c.store
		s.trackMu.Lock()
		defer s.trackMu.Unlock()
		c.refs--
		if c.refs > 0 {
			return
		}
		for i, o := range s.counters {
			if o == c.counterCore {
				s.counters = append(s.counters[:i:i], s.counters[i+1:]...)
				break
			}
		}
		s.publishCounters()
	})
}

// Shared identifies the counts this counter shares with others of the same kind and
// filter (comparable: equal for sharers).
func (c *CallerCounter) Shared() any { return c.counterCore }

// EachCount calls fn with the counts over the window ending at end of every caller the
// counter holds calls of in that window (callers with none are left out: their count is
// zero), until fn returns false. fn runs under a lock: it must not call the store.
func (c *CallerCounter) EachCount(window time.Duration, end time.Time, fn func(id string, n CallerCounts) bool) {
	c.index.each(window, end, fn)
}

// EachCallerCount is EachCount over the caller history of kind (every call).
func (s *Store) EachCallerCount(kind Dim, window time.Duration, end time.Time, fn func(id string, n CallerCounts) bool) {
	if x := s.callerIndexOf(kind); x != nil {
		x.each(window, end, fn)
	}
}

// callerSpan returns the bucket size (an hour, or a day for windows longer than the
// hourly history) and the slots, inclusive, that cover window ending at end.
func callerSpan(window time.Duration, end time.Time) (secs, from, to int64) {
	secs, n := int64(hourSecs), int64(CallerHours)
	if window > time.Duration(CallerHours)*time.Hour {
		secs, n = daySecs, CallerDays
	}
	from, to = windowSlots(window, end, resolution{secs: secs, slots: n})
	if to-from+1 > n {
		from = to - n + 1
	}
	return secs, from, to
}

// sum returns the caller's counts over the slots from..to of the hourly (secs an
// hour) or daily history.
func (c *caller) sum(secs, from, to int64) CallerCounts {
	bs := c.hours
	if secs == daySecs {
		bs = c.days
	}
	var sum CallerCounts
	for k := len(bs) - 1; k >= 0 && int64(bs[k].slot) >= from; k-- {
		if int64(bs[k].slot) <= to {
			sum.merge(&bs[k].CallerCounts)
		}
	}
	return sum
}

// callerIndexOf returns the caller history of kind (user, company or key); nil for any
// other dimension.
func (s *Store) callerIndexOf(kind Dim) *callerIndex {
	switch kind {
	case DimUser:
		return s.callers[0]
	case DimCompany:
		return s.callers[1]
	case DimKey:
		return s.callers[2]
	}
	return nil
}

func (x *callerIndex) each(window time.Duration, end time.Time, fn func(id string, n CallerCounts) bool) {
	secs, from, to := callerSpan(window, end)
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		for j := range sh.slab {
			c := &sh.slab[j]
			if c.id == "" || c.last < from*secs {
				continue
			}
			sum := c.sum(secs, from, to)
			if sum.Calls > 0 && !fn(c.id, sum) {
				sh.mu.Unlock()
				return
			}
		}
		sh.mu.Unlock()
	}
}

func (s *Store) publishCounters() {
	cs := append([]*counterCore(nil), s.counters...)
	s.counterList.Store(&cs)
}

func (c *counterCore) record(cl *Call, l *Labels, t int64, p *point) {
	if c.matcher != nil && !c.matcher.Match(l, c.matcher.Dims()) {
		return
	}
	var id string
	switch c.kind {
	case DimUser:
		id = l.User
	case DimCompany:
		id = l.Company
	default:
		id = l.Key
	}
	c.index.record(id, t, p)
}

// Count returns the counts of one caller over the window ending at end: hourly buckets
// for windows up to 7 days, daily ones beyond (the buckets overlapping the window).
func (c *CallerCounter) Count(id string, window time.Duration, end time.Time) CallerCounts {
	c.store.Flush()
	return c.CountApplied(id, window, end)
}

// CountApplied is Count without applying buffered calls first: for loops over many
// callers, after one Store.Flush.
func (c *CallerCounter) CountApplied(id string, window time.Duration, end time.Time) CallerCounts {
	return c.index.count(id, window, end)
}

// CallerCount returns the counts of every call of one caller (kind DimUser, DimCompany or
// DimKey) over the window ending at end, from the caller history.
func (s *Store) CallerCount(kind Dim, id string, window time.Duration, end time.Time) CallerCounts {
	s.Flush()
	return s.CallerCountApplied(kind, id, window, end)
}

// CallerCountApplied is CallerCount without applying buffered calls first.
func (s *Store) CallerCountApplied(kind Dim, id string, window time.Duration, end time.Time) CallerCounts {
	if x := s.callerIndexOf(kind); x != nil {
		return x.count(id, window, end)
	}
	return CallerCounts{}
}

func (x *callerIndex) count(id string, window time.Duration, end time.Time) CallerCounts {
	secs, from, to := callerSpan(window, end)
	sh := x.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.m[id]
	if !ok {
		return CallerCounts{}
	}
	return sh.slab[i].sum(secs, from, to)
}

// EachCaller calls fn with every caller of kind the history holds (its id, first call,
// last call and first success in Unix seconds, first2xx 0 when none), until fn returns
// false. fn runs under a shard's lock: it must not call the store.
func (s *Store) EachCaller(kind Dim, fn func(id string, first, last, first2xx int64) bool) {
	s.Flush()
	x := s.callerIndexOf(kind)
	if x == nil {
		return
	}
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		for j := range sh.slab {
			c := &sh.slab[j]
			if c.id != "" && !fn(c.id, c.first, c.last, c.first2xx) {
				sh.mu.Unlock()
				return
			}
		}
		sh.mu.Unlock()
	}
}

// FirstCalls returns a caller's first call and first success (Unix seconds, 0 when
// none), cheaply: for time to first hello world.
func (s *Store) FirstCalls(kind Dim, id string) (first, first2xx int64, ok bool) {
	x := s.callerIndexOf(kind)
	if x == nil {
		return 0, 0, false
	}
	sh := x.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, found := sh.m[id]
	if !found {
		return 0, 0, false
	}
	return sh.slab[i].first, sh.slab[i].first2xx, true
}
