package detector

import (
	"sync"
	"sync/atomic"
)

// A view keeps one series per distinct projection of calls onto its dimensions, each with
// rings of buckets at the view's resolutions. The route view (method, endpoint, status,
// upstream, blocked, limited) records every call; detail views that include caller
// dimensions exist while a rule needs them.
type view struct {
	dims DimSet
	res  []resolution
	max  int
	// mu guards m. Calls are applied by one goroutine (the store's loop) at a time in the
	// common case, so one map hashed once per call beats sharding.
	mu sync.RWMutex
	m  map[Labels]*series

	n        atomic.Int64  // live series
	overflow atomic.Uint64 // calls folded into overflow series because the view was full
	// fineFrom is the Unix second from which the finest ring holds every call: after a
	// snapshot delta that left that ring out was read, the second after its newest call
	// (0: always). Windows that reach back before it are answered from the next ring.
	fineFrom atomic.Int64

	listMu sync.Mutex
	list   atomic.Pointer[[]*series] // every live series, in creation order
	gen    atomic.Uint64             // bumped when the list is compacted
}

func newView(dims DimSet, res []resolution, max int) *view {
	v := &view{dims: dims, res: res, max: max, m: make(map[Labels]*series)}
	empty := make([]*series, 0, 64)
	v.list.Store(&empty)
	return v
}

// horizon returns how far back the view keeps data, in seconds.
func (v *view) horizon() int64 {
	var h int64
	for _, r := range v.res {
		if x := r.secs * r.slots; x > h {
			h = x
		}
	}
	return h
}

// record adds a call, with labels already projected onto the view's dimensions.
func (v *view) record(l *Labels, t int64, p *point) {
	for attempt := 0; attempt < 2; attempt++ {
		if v.get(l).add(v.res, t, p) {
			return
		}
		// Swept between lookup and add: look it up again.
	}
}

// get returns the series for l, creating it (or, when the view is full, the overflow
// series that l folds into).
func (v *view) get(l *Labels) *series {
	v.mu.RLock()
	s := v.m[*l]
	v.mu.RUnlock()
	if s != nil {
		return s
	}
	if int(v.n.Load()) >= v.max {
		v.overflow.Add(1)
		o := overflowLabels(l, v.dims)
		if o != *l {
			return v.get(&o)
		}
		// Overflow series themselves are bounded (status x flags) and always created.
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if s = v.m[*l]; s != nil {
		return s
	}
	s = &series{labels: *l}
	v.m[*l] = s
	v.n.Add(1)
	v.listMu.Lock()
	list := append(*v.list.Load(), s)
	v.list.Store(&list)
	v.listMu.Unlock()
	return s
}

// overflowLabels folds the unbounded dimensions of l into Other, keeping the bounded ones
// (status, blocked, limited).
func overflowLabels(l *Labels, dims DimSet) Labels {
	o := *l
	if dims.Has(DimMethod) {
		o.Method = Other
	}
	if dims.Has(DimEndpoint) {
		o.Endpoint = Other
	}
	if dims.Has(DimUpstream) {
		o.Upstream = Other
	}
	if dims.Has(DimUser) {
		o.User = Other
	}
	if dims.Has(DimCompany) {
		o.Company = Other
	}
	if dims.Has(DimKey) {
		o.Key = Other
	}
	return o
}

// series returns the live series in creation order. The slice must not be modified.
func (v *view) series() []*series { return *v.list.Load() }

// sweep removes the series whose every bucket has fallen out of the horizon at now (Unix
// seconds), and returns how many it removed.
func (v *view) sweep(now int64) int {
	var removed int
	for _, s := range v.series() {
		s.mu.Lock()
		gone := s.expired(v.res, now)
		if gone {
			s.dead.Store(true)
		}
		s.mu.Unlock()
		if !gone {
			continue
		}
		v.mu.Lock()
		if v.m[s.labels] == s {
			delete(v.m, s.labels)
			v.n.Add(-1)
		}
		v.mu.Unlock()
		removed++
	}
	if removed > 0 {
		v.listMu.Lock()
		old := *v.list.Load()
		live := make([]*series, 0, len(old)-removed+16)
		for _, s := range old {
			if !s.dead.Load() {
				live = append(live, s)
			}
		}
		v.list.Store(&live)
		v.gen.Add(1)
		v.listMu.Unlock()
	}
	return removed
}
