package detector

import (
	"sync"
	"sync/atomic"
)

// series holds the buckets of one label set of one view, at each of the view's resolutions.
type series struct {
	mu     sync.Mutex
	labels Labels
	rings  [maxResolutions]ring // only the view's resolutions are used
	// first, last and first2xx are Unix seconds of the first call, the latest call and the
	// first call answered with a 1xx-3xx status (0 when none yet).
	first, last, first2xx int64
	dead                  atomic.Bool  // removed from its view by the sweeper
	newest                atomic.Int64 // s.last, readable without the lock: idle series are skipped cheaply
}

// add records a point at t (Unix seconds); false when the series was swept meanwhile.
func (s *series) add(res []resolution, t int64, p *point) bool {
	s.mu.Lock()
	if s.dead.Load() {
		s.mu.Unlock()
		return false
	}
	if s.first == 0 || t < s.first {
		s.first = t
	}
	if t > s.last {
		s.last = t
		s.newest.Store(t)
	}
	if p.status >= 100 && p.status < 400 && (s.first2xx == 0 || t < s.first2xx) {
		s.first2xx = t
	}
	for i := range res {
		r := &res[i]
		if b := s.rings[i].bucketFor(floorDiv(t, r.secs), r.slots); b != nil {
			b.add(p)
		}
	}
	s.mu.Unlock()
	return true
}

// expired reports whether every ring has expired relative to now (Unix seconds); the caller
// holds s.mu.
func (s *series) expired(res []resolution, now int64) bool {
	for i := range res {
		if slot, ok := s.rings[i].newest(); ok && slot > floorDiv(now, res[i].secs)-res[i].slots {
			return false
		}
	}
	return true
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
