package detector

import (
	"sync"
)

// recentRing keeps the most recent calls, newest overwriting oldest.
type recentRing struct {
	mu    sync.Mutex
	calls []Call
	next  uint64 // total calls added; next slot is next % len(calls)
}

func newRecentRing(n int) *recentRing {
	return &recentRing{calls: make([]Call, n)}
}

func (r *recentRing) add(c *Call) {
	if len(r.calls) == 0 {
		return
	}
	r.mu.Lock()
	r.calls[r.next%uint64(len(r.calls))] = *c
	r.next++
	r.mu.Unlock()
}

// newest calls fn with the kept calls, newest first, until fn returns false.
func (r *recentRing) newest(fn func(c *Call) bool) {
	if len(r.calls) == 0 {
		return
	}
	r.mu.Lock()
	n := uint64(len(r.calls))
	if r.next < n {
		n = r.next
	}
	// Copy out under the lock so that fn runs without it.
	out := make([]Call, 0, n)
	for i := uint64(0); i < n; i++ {
		out = append(out, r.calls[(r.next-1-i)%uint64(len(r.calls))])
	}
	r.mu.Unlock()
	for i := range out {
		if !fn(&out[i]) {
			return
		}
	}
}
