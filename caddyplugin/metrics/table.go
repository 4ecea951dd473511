package metrics

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// table maps the values of one label to their series, for at most max values; further
// values share the series of Other, and each such fold is counted in folded.
//
// Lookups read an immutable map through an atomic pointer: no lock, no shared write, no
// allocation. A new value copies the map under a mutex, which costs the number of values
// so far; it happens at most max times in the life of the process, and max is at most
// maxCap, so the copies add up to a few milliseconds at the default caps.
type table[T any] struct {
	max       int
	folded    *atomic.Uint64
	newSeries func(label string) *T
	other     *T

	series atomic.Pointer[map[string]*T] // by value; immutable once stored; never holds Other

	mu      sync.Mutex    // serialises additions
	byLabel map[string]*T // by escaped label value
}

func newTable[T any](max int, folded *atomic.Uint64, newSeries func(label string) *T) *table[T] {
	t := &table[T]{max: max, folded: folded, newSeries: newSeries, other: newSeries(Other),
		byLabel: make(map[string]*T)}
	t.series.Store(&map[string]*T{})
	return t
}

// get returns the series of value v, adding it when there is room.
func (t *table[T]) get(v string) *T {
	m := *t.series.Load()
	if s, ok := m[v]; ok {
		return s
	}
	if v == Other {
		return t.other
	}
	if len(m) >= t.max {
		t.folded.Add(1)
		return t.other
	}
	return t.add(v)
}

func (t *table[T]) add(v string) *T {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := *t.series.Load()
	if s, ok := m[v]; ok {
		return s
	}
	if len(m) >= t.max {
		t.folded.Add(1)
		return t.other
	}
	// Values that are not UTF-8 can make the same label value: they share its series,
	// as the output must not hold the same series twice. Each still takes a place in m,
	// so that m stays bounded whatever the values.
	label := labelValue(v)
	s, ok := t.byLabel[label]
	if !ok {
		s = t.newSeries(label)
		t.byLabel[label] = s
	}
	next := make(map[string]*T, len(m)+1)
	maps.Copy(next, m)
	// The caller's string may live in a buffer it reuses; the key must not.
	next[strings.Clone(v)] = s
	t.series.Store(&next)
	return s
}

// all returns every series once, sorted by label value, then Other; the caller skips
// an unused Other.
func (t *table[T]) all() []*T {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*T, 0, len(t.byLabel)+1)
	for _, label := range slices.Sorted(maps.Keys(t.byLabel)) {
		out = append(out, t.byLabel[label])
	}
	return append(out, t.other)
}
