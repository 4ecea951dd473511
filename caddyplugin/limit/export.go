package limit

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// EntryKind says what an [Entry] holds.
type EntryKind string

const (
	// BucketEntry is a token bucket.
	BucketEntry EntryKind = "bucket"
	// QuotaEntry is a quota counter for one period.
	QuotaEntry EntryKind = "quota"
)

// Entry is one token bucket or quota counter, as [Memory.Export] writes it for a
// snapshot and [Memory.Import] reads it back.
type Entry struct {
	// Kind is "bucket" or "quota".
	Kind EntryKind `json:"kind"`
	// Policy is the policy id.
	Policy string `json:"policy"`
	// Key is the caller key.
	Key string `json:"key"`

	// Rate is the refill rate of a bucket, such as "100/s".
	Rate Rate `json:"rate,omitzero"`
	// Burst is the size of a bucket.
	Burst int64 `json:"burst,omitempty"`
	// Tokens is how many tokens a bucket held at Updated (a fraction when refilling).
	Tokens float64 `json:"tokens,omitempty"`
	// Updated is when Tokens was computed.
	Updated time.Time `json:"updated,omitzero"`

	// Used is how many calls a quota counter counted in its period.
	Used int64 `json:"used,omitempty"`
	// Limit is the quota's limit per period.
	Limit int64 `json:"limit,omitempty"`
	// PeriodStart is the first instant of the counter's period.
	PeriodStart time.Time `json:"period_start,omitzero"`
	// PeriodEnd is the end of the counter's period (exclusive).
	PeriodEnd time.Time `json:"period_end,omitzero"`
}

// Export returns every token bucket and quota counter the store holds, sorted by kind,
// policy and key. Shards are copied one at a time, so the result is not one instant's
// state when calls run meanwhile.
func (m *Memory) Export() []Entry {
	out := []Entry{}
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for _, b := range s.buckets {
			out = append(out, Entry{
				Kind: BucketEntry, Policy: b.k.policy, Key: b.k.key,
				Rate:  Rate{Events: b.events, Per: time.Duration(b.per)},
				Burst: b.burst, Tokens: b.tokens, Updated: time.Unix(0, b.last).UTC(),
			})
		}
		for _, c := range s.counters {
			out = append(out, Entry{
				Kind: QuotaEntry, Policy: c.k.policy, Key: c.k.key,
				Used: c.used, Limit: c.limit,
				PeriodStart: time.Unix(0, c.start).UTC(), PeriodEnd: time.Unix(0, c.end).UTC(),
			})
		}
		s.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Policy, b.Policy), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// Import adds the entries to the store, replacing the entries it holds for the same
// kind, policy and key, and evicting as a new entry would when the store is full. It
// checks every entry first: if one is invalid, it imports none and says which.
func (m *Memory) Import(entries []Entry) error {
	for i, e := range entries {
		if err := e.validate(); err != nil {
			return fmt.Errorf("limit: Import: entry %d (%s %q %q): %w", i, e.Kind, e.Policy, e.Key, err)
		}
	}
	for _, e := range entries {
		quota := e.Kind == QuotaEntry
		k := entryKey{e.Policy, e.Key, quota}
		id, si := m.hashOf(k)
		s := &m.shards[si]
		s.mu.Lock()
		// add* replace the entry of the same kind, policy and key, if any: its index hash
		// is the same.
		if quota {
			s.addCounter(m, counter{id: id, k: k, used: e.Used, limit: e.Limit,
				start: e.PeriodStart.UnixNano(), end: e.PeriodEnd.UnixNano()}, math.MinInt64)
		} else {
			s.addBucket(m, bucket{
				id: id, k: k, tokens: min(max(e.Tokens, 0), float64(e.Burst)), last: e.Updated.UnixNano(),
				events: e.Rate.Events, per: int64(e.Rate.Per), burst: e.Burst,
			}, math.MinInt64)
		}
		s.mu.Unlock()
	}
	return nil
}

func (e Entry) validate() error {
	switch e.Kind {
	case BucketEntry:
		if err := e.Rate.validate(); err != nil {
			return err
		}
		if e.Burst <= 0 {
			return fmt.Errorf("burst %d: must be more than zero", e.Burst)
		}
		if math.IsNaN(e.Tokens) {
			return fmt.Errorf("tokens: not a number")
		}
		if e.Updated.IsZero() {
			return fmt.Errorf("updated: missing")
		}
	case QuotaEntry:
		if e.Limit <= 0 || e.Used < 0 {
			return fmt.Errorf("used %d of limit %d: want used >= 0 and limit > 0", e.Used, e.Limit)
		}
		if !e.PeriodStart.Before(e.PeriodEnd) {
			return fmt.Errorf("period %v to %v: start must be before end", e.PeriodStart, e.PeriodEnd)
		}
	default:
		return fmt.Errorf("kind %q: want bucket or quota", e.Kind)
	}
	return nil
}
