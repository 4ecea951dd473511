package detector

import (
	"sync"
	"time"
)

// CallerCounter counts, per caller of one kind (user, company or key), the calls that
// match a filter: hourly for 7 days and daily for 35 days, like the caller history, but
// only for matching calls ("400, 404 or 405 responses per user"). Cohort rules use it to
// judge behaviour over weeks without scanning calls. It counts from the moment it is
// created; Release stops it. Bounded by MaxKeys callers, least recently seen evicted.
type CallerCounter struct {
	store   *Store
	kind    Dim
	matcher *Matcher
	index   *callerIndex
	once    sync.Once
}

// CountCallers starts counting the calls matching m (nil: all) per caller of kind.
func (s *Store) CountCallers(kind Dim, m *Matcher) *CallerCounter {
	c := &CallerCounter{store: s, kind: kind, matcher: m, index: newCallerIndex(kind, s.cfg.MaxKeys)}
	s.trackMu.Lock()
	s.counters = append(s.counters, c)
	s.publishCounters()
	s.trackMu.Unlock()
	return c
}

// Release stops the counter.
func (c *CallerCounter) Release() {
	c.once.Do(func() {
		s := c.store
		s.trackMu.Lock()
		for i, o := range s.counters {
			if o == c {
				s.counters = append(s.counters[:i:i], s.counters[i+1:]...)
				break
			}
		}
		s.publishCounters()
		s.trackMu.Unlock()
	})
}

func (s *Store) publishCounters() {
	cs := append([]*CallerCounter(nil), s.counters...)
	s.counterList.Store(&cs)
}

func (c *CallerCounter) record(cl *Call, l *Labels, t int64, p *point) {
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
	return c.index.count(id, window, end)
}

// CallerCount returns the counts of every call of one caller (kind DimUser, DimCompany or
// DimKey) over the window ending at end, from the caller history.
func (s *Store) CallerCount(kind Dim, id string, window time.Duration, end time.Time) CallerCounts {
	s.Flush()
	switch kind {
	case DimUser:
		return s.callers[0].count(id, window, end)
	case DimCompany:
		return s.callers[1].count(id, window, end)
	case DimKey:
		return s.callers[2].count(id, window, end)
	}
	return CallerCounts{}
}

func (x *callerIndex) count(id string, window time.Duration, end time.Time) CallerCounts {
	secs, n := int64(hourSecs), int64(CallerHours)
	if window > time.Duration(CallerHours)*time.Hour {
		secs, n = daySecs, CallerDays
	}
	from, to := windowSlots(window, end, resolution{secs: secs, slots: n})
	if to-from+1 > n {
		from = to - n + 1
	}
	sh := x.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.m[id]
	if !ok {
		return CallerCounts{}
	}
	c := &sh.slab[i]
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
