package endpoint

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Other is the endpoint that [Table.Intern] gives once the table is full: calls to
// endpoints not seen before the cap was reached are counted under it.
const Other = "other"

// Table interns endpoint strings and caps how many distinct ones there are, so that
// metrics labels and time series stay bounded however many paths clients invent. It is
// safe for concurrent use and built for a read-mostly load: looking up a known endpoint
// reads an immutable map through an atomic pointer, with no lock and no shared write;
// new endpoints go to a mutex-protected map that is merged into a new immutable map once
// it has been asked for often enough to pay for the copy.
type Table struct {
	max      int
	read     atomic.Pointer[map[string]string] // immutable once published
	full     atomic.Bool                       // no more room, and read holds every entry
	overflow atomic.Uint64

	mu     sync.Mutex
	dirty  map[string]string // entries not yet in read
	misses int               // lookups that took the mutex since the last merge
}

// NewTable returns a table that holds at most maxEndpoints endpoints (at least 1).
func NewTable(maxEndpoints int) *Table {
	t := &Table{max: max(maxEndpoints, 1), dirty: make(map[string]string)}
	read := make(map[string]string)
	t.read.Store(&read)
	return t
}

// Intern returns the interned string equal to b, adding it when it is new. When the
// table already holds its maximum it returns [Other] instead and counts the overflow. It
// does not allocate when b is already in the table, nor when the table is full.
func (t *Table) Intern(b []byte) string {
	if s, ok := (*t.read.Load())[string(b)]; ok {
		return s
	}
	if t.full.Load() {
		t.overflow.Add(1)
		return Other
	}
	return t.internSlow(b)
}

func (t *Table) internSlow(b []byte) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	read := *t.read.Load()
	if s, ok := read[string(b)]; ok {
		return s
	}
	s, ok := t.dirty[string(b)]
	switch {
	case ok:
	case len(read)+len(t.dirty) >= t.max:
		t.merge(read)
		t.full.Store(true)
		t.overflow.Add(1)
		return Other
	default:
		s = string(b)
		t.dirty[s] = s
	}
	// Copying the read map costs its size; merge once the lookups that missed it have
	// cost about as much, so that a steady set of endpoints ends up lock-free.
	t.misses++
	if t.misses >= 8+len(read)/4 {
		t.merge(read)
	}
	return s
}

// merge publishes read plus dirty as the new read map. t.mu must be held.
func (t *Table) merge(read map[string]string) {
	t.misses = 0
	if len(t.dirty) == 0 {
		return
	}
	next := make(map[string]string, len(read)+len(t.dirty))
	maps.Copy(next, read)
	maps.Copy(next, t.dirty)
	t.read.Store(&next)
	clear(t.dirty)
}

// Overflow returns how many calls to [Table.Intern] returned [Other] because the table
// was full.
func (t *Table) Overflow() uint64 { return t.overflow.Load() }

// Len returns how many endpoints the table holds (never more than its maximum).
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(*t.read.Load()) + len(t.dirty)
}
