// Package intern keeps one copy of the strings the request path sees over and over
// (endpoints, API key ids), so that turning bytes into such a string costs no allocation.
package intern

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Table interns strings and caps how many distinct ones it holds, so that what is kept
// stays bounded however many distinct strings clients send. It is safe for concurrent use
// and built for a read-mostly load: looking up a known string reads an immutable map
// through an atomic pointer, with no lock and no shared write, so that cores looking up
// at once do not pass a cache line between them; new strings go to a mutex-protected map
// that is merged into a new immutable map once it has been asked for often enough to pay
// for the copy.
type Table struct {
	max      int
	read     atomic.Pointer[map[string]string] // immutable once published
	full     atomic.Bool                       // no more room, and read holds every entry
	overflow atomic.Uint64

	mu     sync.Mutex
	dirty  map[string]string // entries not yet in read
	misses int               // lookups that took the mutex since the last merge
}

// NewTable returns a table that holds at most maxStrings strings (at least 1).
func NewTable(maxStrings int) *Table {
	t := &Table{max: max(maxStrings, 1), dirty: make(map[string]string)}
	read := make(map[string]string)
	t.read.Store(&read)
	return t
}

// Intern returns the interned string equal to b and true, adding it when it is new.
// When the table already holds its maximum and b is not in it, it returns "" and false
// and counts the overflow. It does not allocate when b is already in the table, nor when
// the table is full.
func (t *Table) Intern(b []byte) (string, bool) {
	if s, ok := (*t.read.Load())[string(b)]; ok {
		return s, true
	}
	if t.full.Load() {
		t.overflow.Add(1)
		return "", false
	}
	return t.internSlow(b)
}

func (t *Table) internSlow(b []byte) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	read := *t.read.Load()
	if s, ok := read[string(b)]; ok {
		return s, true
	}
	s, ok := t.dirty[string(b)]
	switch {
	case ok:
	case len(read)+len(t.dirty) >= t.max:
		t.merge(read)
		t.full.Store(true)
		t.overflow.Add(1)
		return "", false
	default:
		s = string(b)
		t.dirty[s] = s
	}
	// Copying the read map costs its size; merge once the lookups that missed it have
	// cost about as much, so that a steady set of strings ends up lock-free.
	t.misses++
	if t.misses >= 8+len(read)/4 {
		t.merge(read)
	}
	return s, true
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

// Overflow returns how many calls to [Table.Intern] found the table full.
func (t *Table) Overflow() uint64 { return t.overflow.Load() }

// Len returns how many strings the table holds (never more than its maximum).
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(*t.read.Load()) + len(t.dirty)
}
