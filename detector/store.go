// Package detector records API calls into in-memory time buckets and answers queries over
// them; its sub-packages evaluate alert rules and detect anomalies. It knows nothing of
// Caddy.
//
// The Store keeps three kinds of history, all bounded:
//
//   - the route view: one series per (method, endpoint, status, upstream, blocked,
//     limited), with buckets of 1 second for the last 10 minutes, 1 minute for the last
//     48 hours and 1 hour for the last 35 days; each bucket holds counts by status class,
//     bytes, a latency histogram and a distinct-caller sketch. Bounded by MaxSeries:
//     beyond it, new label sets are folded into "other" and counted;
//   - caller history: per user, company and API key, calls, successes, 4xx, 5xx, blocked
//     and limited per hour for 7 days and per day for 35 days, with first call, first
//     success and last call. Bounded by MaxKeys per kind: beyond it the least recently
//     seen caller (approximately) is evicted and counted;
//   - detail views, created on demand by Track for rules that filter or group by a caller
//     (user, company, key) together with other dimensions, from the moment they are
//     tracked.
//
// Record is safe for concurrent use, never blocks on anything but short in-memory
// critical sections, and allocates nothing for series and callers it already knows.
//
// WriteSnapshot and ReadSnapshot save the route view, caller history and recent calls,
// and merge them back, so that a restart keeps the history (see snapshot.go for the
// format).
package detector

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/vigilgw/vigil/detector/sketch"
)

// Config bounds the store's memory.
type Config struct {
	// MaxSeries caps the series of the route view and of each detail view. Default 100000.
	MaxSeries int
	// MaxKeys caps the callers kept per kind (users, companies, keys), and the series of a
	// detail view keyed by a caller. Default 1000000.
	MaxKeys int
	// RecentCalls is the size of the ring of most recent calls (for samples and the calls
	// API). Default 10000.
	RecentCalls int
}

// The route view's resolutions.
var routeResolutions = []resolution{
	{secs: 1, slots: 600},    // 10 minutes
	{secs: 60, slots: 2880},  // 48 hours
	{secs: 3600, slots: 840}, // 35 days
}

// Store records calls into time buckets. Create it with New.
type Store struct {
	cfg     Config
	route   *view
	callers [3]*callerIndex // user, company, key
	recent  *recentRing
	trackMu sync.Mutex
	tracked map[trackKey]*trackedView
	details atomic.Pointer[[]*view]
	// counters are the callers' filtered counters (CountCallers); trackMu guards the slice.
	counters    []*counterCore
	counterList atomic.Pointer[[]*counterCore]
	// pendingCounters are the callers of a snapshot's counters that no counter had
	// when it was read, by key, for the counter of the same rule to take; trackMu.
	pendingCounters map[string][]caller
	recorded        atomic.Uint64
	lastEpoch       atomic.Int64 // newest call time seen, Unix seconds
	observer        atomic.Pointer[func(Call)]

	intake  [intakeShards]intakeShard
	homes   sync.Pool // *intakeShard: the shard each processor last recorded into
	spare   [intakeShards][]Call
	flushMu sync.Mutex
	wake    chan struct{}
}

type trackKey struct {
	dims    DimSet
	horizon int64
}

type trackedView struct {
	v    *view
	refs int
}

// New returns an empty store.
func New(cfg Config) *Store {
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = 100000
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 1000000
	}
	if cfg.RecentCalls == 0 {
		cfg.RecentCalls = 10000
	}
	if cfg.RecentCalls < 0 {
		cfg.RecentCalls = 0
	}
	s := &Store{
		cfg:     cfg,
		route:   newView(RouteDims, routeResolutions, cfg.MaxSeries),
		recent:  newRecentRing(cfg.RecentCalls),
		tracked: make(map[trackKey]*trackedView),
	}
	s.callers[0] = newCallerIndex(DimUser, cfg.MaxKeys)
	s.callers[1] = newCallerIndex(DimCompany, cfg.MaxKeys)
	s.callers[2] = newCallerIndex(DimKey, cfg.MaxKeys)
	none := []*view{}
	s.details.Store(&none)
	s.wake = make(chan struct{}, 1)
	for i := range s.intake {
		s.intake[i].buf = make([]Call, 0, intakeSize)
		s.spare[i] = make([]Call, 0, intakeSize)
	}
	return s
}

// Observe sets fn to be called with every call the store applies, after the store's
// own views took it: a moment after [Store.Record], on the background loop (Run) or
// in Flush, in batches, or on the recording goroutine when the intake is full, so
// possibly on several goroutines at once. It lets a counter of every call (such as a
// metrics registry) stay off the request path. fn must be quick and must not call the
// store. The call is passed by value so that a call applied on the request path stays
// on its stack. nil removes fn.
func (s *Store) Observe(fn func(c Call)) {
	if fn == nil {
		s.observer.Store(nil)
		return
	}
	s.observer.Store(&fn)
}

// Config returns the store's configuration, defaults applied.
func (s *Store) Config() Config { return s.cfg }

// Record records one call. It only copies the call into a small buffer, one of several
// shards; the store applies buffered calls to its views in the background (Run) and
// before answering any query (Flush). When a buffer is full the call is applied at once
// instead: a call is never dropped.
//
// Each processor keeps recording into the shard it used last (a sync.Pool holds it, per
// processor), so that the shard's lock and the lines it writes stay in that core's
// cache between calls, instead of moving from core to core with every call as with a
// shard picked at random. A shard found full is not kept: the next call picks another
// at random.
func (s *Store) Record(c *Call) {
	sh, _ := s.homes.Get().(*intakeShard)
	if sh == nil {
		sh = &s.intake[rand.Uint32()&(intakeShards-1)]
	}
	sh.mu.Lock()
	if len(sh.buf) < cap(sh.buf) {
		sh.buf = append(sh.buf, *c)
		n := len(sh.buf)
		sh.mu.Unlock()
		s.homes.Put(sh)
		if n == intakeWake {
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
		return
	}
	sh.mu.Unlock()
	s.apply(c)
}

// intakeShards buffers of intakeSize calls each hold calls until they are applied; the
// background loop is woken when one holds intakeWake.
const (
	intakeShards = 16
	intakeSize   = 512
	intakeWake   = intakeSize / 2
	// FlushInterval is how often Run applies buffered calls when traffic is light.
	FlushInterval = 20 * time.Millisecond
)

type intakeShard struct {
	mu  sync.Mutex
	buf []Call
	_   [64]byte // keep shards on separate cache lines
}

// Flush applies every buffered call, so that queries see every call recorded before.
func (s *Store) Flush() { s.drain(s.apply) }

// drain takes every buffered call out of the intake and hands it to fn. Each shard is
// locked only to swap its buffer for an empty spare, so recording goes on meanwhile.
func (s *Store) drain(fn func(*Call)) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	for i := range s.intake {
		sh := &s.intake[i]
		sh.mu.Lock()
		if len(sh.buf) == 0 {
			sh.mu.Unlock()
			continue
		}
		full := sh.buf
		sh.buf = s.spare[i]
		sh.mu.Unlock()
		for j := range full {
			fn(&full[j])
		}
		clear(full) // drop references to request strings
		s.spare[i] = full[:0]
	}
}

// Run applies buffered calls in the background until stop is closed: every
// FlushInterval, and at once when a buffer is half full.
func (s *Store) Run(stop <-chan struct{}) {
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			s.Flush()
			return
		case <-t.C:
		case <-s.wake:
		}
		s.Flush()
	}
}

// apply adds one call to every view and to the caller history.
func (s *Store) apply(c *Call) {
	t := c.Time.Unix()
	l := Labels{
		Method:   c.Method,
		Endpoint: c.Endpoint,
		Upstream: c.Upstream,
		User:     identity(c.User),
		Company:  identity(c.Company),
		Key:      identity(c.Key),
		Status:   uint16(c.Status),
		Blocked:  c.Blocked,
		Limited:  c.Limited,
	}
	p := point{
		status:   c.Status,
		blocked:  c.Blocked,
		limited:  c.Limited,
		bytesIn:  nonNeg(c.BytesIn),
		bytesOut: nonNeg(c.BytesOut),
		latency:  float64(c.Latency) / float64(time.Microsecond),
		failure:  c.Failure,
		endpoint: c.Endpoint,
	}
	p.bin = sketch.BinOf(p.latency)
	p.callerHash = callerHash(l.User, c)

	rl := l.Project(RouteDims)
	s.route.record(&rl, t, &p)
	for _, v := range *s.details.Load() {
		dl := l.Project(v.dims)
		v.record(&dl, t, &p)
	}
	s.callers[0].record(l.User, t, &p)
	s.callers[1].record(l.Company, t, &p)
	s.callers[2].record(l.Key, t, &p)
	if cs := s.counterList.Load(); cs != nil {
		for _, cc := range *cs {
			cc.record(c, &l, t, &p)
		}
	}
	rc := *c
	rc.User, rc.Company, rc.Key = l.User, l.Company, l.Key
	s.recent.add(&rc)
	s.recorded.Add(1)
	if fn := s.observer.Load(); fn != nil {
		(*fn)(*c)
	}
	for {
		old := s.lastEpoch.Load()
		if t <= old || s.lastEpoch.CompareAndSwap(old, t) {
			break
		}
	}
}

// callerHash identifies the caller for distinct counts: the user, or for anonymous
// callers their IP address.
func callerHash(user string, c *Call) uint64 {
	if user != Anonymous {
		return xxhash.Sum64String(user)
	}
	if c.IP.IsValid() {
		b := c.IP.As16()
		return xxhash.Sum64(b[:]) ^ 0x5bd1e995
	}
	return xxhash.Sum64String(Anonymous)
}

func identity(s string) string {
	if s == "" {
		return Anonymous
	}
	return s
}

func nonNeg(n int64) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n)
}

// Track asks the store to keep a detail view over dims (which include at least one
// caller dimension) reaching back horizon; it returns a release function. Views are
// shared between rules with the same needs and dropped when the last one releases. A view
// holds calls recorded after it was first tracked.
func (s *Store) Track(dims DimSet, horizon time.Duration) (release func()) {
	h := int64(horizon / time.Second)
	res := detailResolutions(h)
	k := trackKey{dims: dims, horizon: res[len(res)-1].secs * res[len(res)-1].slots}
	s.trackMu.Lock()
	defer s.trackMu.Unlock()
	tv := s.tracked[k]
	if tv == nil {
		max := s.cfg.MaxSeries
		if dims&CallerDims != 0 && s.cfg.MaxKeys > max {
			max = s.cfg.MaxKeys
		}
		tv = &trackedView{v: newView(dims, res, max)}
		s.tracked[k] = tv
		s.publishDetails()
	}
	tv.refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.trackMu.Lock()
			defer s.trackMu.Unlock()
			tv.refs--
			if tv.refs == 0 {
				delete(s.tracked, k)
				s.publishDetails()
			}
		})
	}
}

// publishDetails stores the current list of detail views; trackMu held.
func (s *Store) publishDetails() {
	vs := make([]*view, 0, len(s.tracked))
	for _, tv := range s.tracked {
		vs = append(vs, tv.v)
	}
	s.details.Store(&vs)
}

// detailResolutions picks the rings of a detail view that must reach back h seconds:
// 1 s buckets when h is at most 10 minutes, 1 min buckets up to 48 hours, 1 h buckets
// beyond (up to 35 days).
func detailResolutions(h int64) []resolution {
	switch {
	case h <= 600:
		return []resolution{{secs: 1, slots: max(h, 60)}}
	case h <= 48*3600:
		return []resolution{{secs: 1, slots: 600}, {secs: 60, slots: (h + 59) / 60}}
	default:
		if h > 35*86400 {
			h = 35 * 86400
		}
		return []resolution{{secs: 1, slots: 600}, {secs: 60, slots: 2880}, {secs: 3600, slots: (h + 3599) / 3600}}
	}
}

// Sweep drops series and detail-view series that hold nothing within their horizon at
// now. The engine calls it periodically (every minute is plenty).
func (s *Store) Sweep(now time.Time) int {
	t := now.Unix()
	n := s.route.sweep(t)
	for _, v := range *s.details.Load() {
		n += v.sweep(t)
	}
	return n
}

// Stats describes the store's size.
type Stats struct {
	// Recorded counts every call recorded since start, and those of restored snapshots.
	Recorded uint64 `json:"recorded"`
	// Series is the number of route series; DetailSeries those of detail views.
	Series       int64 `json:"series"`
	DetailSeries int64 `json:"detail_series"`
	DetailViews  int   `json:"detail_views"`
	// Overflow counts calls folded into "other" because a view was full.
	Overflow uint64 `json:"overflow"`
	// Users, Companies, Keys count the callers kept; Evictions those evicted at MaxKeys.
	Users     int64  `json:"users"`
	Companies int64  `json:"companies"`
	Keys      int64  `json:"keys"`
	Evictions uint64 `json:"evictions"`
}

// Stats returns the store's current size.
func (s *Store) Stats() Stats {
	s.Flush()
	st := Stats{
		Recorded:  s.recorded.Load(),
		Series:    s.route.n.Load(),
		Overflow:  s.route.overflow.Load(),
		Users:     s.callers[0].n.Load(),
		Companies: s.callers[1].n.Load(),
		Keys:      s.callers[2].n.Load(),
	}
	for _, v := range *s.details.Load() {
		st.DetailSeries += v.n.Load()
		st.Overflow += v.overflow.Load()
		st.DetailViews++
	}
	for _, x := range s.callers {
		st.Evictions += x.evictions.Load()
	}
	return st
}

// Recent calls fn with recent calls matching m (nil matches all), newest first, until fn
// returns false.
func (s *Store) Recent(m *Matcher, fn func(c *Call) bool) {
	s.Flush()
	s.recent.newest(func(c *Call) bool {
		if m != nil && !m.MatchCall(c) {
			return true
		}
		return fn(c)
	})
}
