package limit

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Memory is the in-process [Store]: token buckets and quota counters kept in memory,
// for one gateway. It is safe for concurrent use: the state is split into shards by
// caller key, each behind its own mutex, held only for a few map and arithmetic
// operations. Calls for keys it already holds do not allocate.
//
// Memory holds at most maxKeys entries in all, token buckets and quota counters
// together (one entry per policy id and caller key). When a new entry finds its shard
// full, one entry of that shard is evicted, in this order:
//
//  1. quota counters of periods that have ended (nothing is lost);
//  2. token buckets, the least recently used first (approximately: CLOCK). An evicted
//     bucket comes back full, so its caller can burst once more;
//  3. quota counters, least recently used first: an evicted counter forgets its usage,
//     so its caller gets the whole quota again for the period.
//
// Size maxKeys for every quota counter of a period plus the callers active within a
// bucket's refill time; [Memory.Evictions] counts what was evicted.
//
// An entry is found by two independent 64-bit hashes of its kind, policy id and key
// (as ristretto finds its items), not by comparing the strings: a lookup then touches
// the shard's index and the entry alone, which matters in a gateway, where the entries
// are rarely in the CPU cache. Two different entries whose hashes both collide, about
// one chance in 2^64 per pair of keys alive at once, would be taken for one; an entry
// whose first hash alone collides with another's replaces it, as an eviction would.
type Memory struct {
	shards    []shard
	mask      uint64
	seed      maphash.Seed // for the index hash, which also picks the shard
	seed2     maphash.Seed // for the check hash
	perShard  int
	evictions atomic.Uint64
}

// entryKey identifies an entry: a token bucket or a quota counter of a policy and key.
type entryKey struct {
	policy, key string
	quota       bool
}

// entryHash is the identity of an entry in its shard: the index hash h, the key of the
// shard's index, and an independent check hash c.
type entryHash struct{ h, c uint64 }

// bucket is a token bucket. Times are Unix nanoseconds.
type bucket struct {
	id     entryHash
	tokens float64
	last   int64 // when tokens was computed
	events int64 // the policy the bucket was last used with
	per    int64
	burst  int64
	ref    bool     // used since the CLOCK hand last passed
	k      entryKey // for Export; lookups compare id only
}

// counter is the quota usage of one period.
type counter struct {
	id         entryHash
	used       int64
	limit      int64
	start, end int64 // the period, [start, end)
	ref        bool
	k          entryKey
}

type shard struct {
	mu       sync.Mutex
	index    hashIndex // by id.h: position in buckets or counters (the kind is in the hash)
	buckets  []bucket
	counters []counter
	bHand    int
	cHand    int
	minEnd   int64 // no counter ends before this
	_        [64]byte
}

// NewMemory returns an in-process store that holds at most maxKeys entries (at least 1).
func NewMemory(maxKeys int) *Memory {
	maxKeys = max(maxKeys, 1)
	n := 1
	for n < 4*runtime.GOMAXPROCS(0) && n < 256 && maxKeys/(n*2) >= 64 {
		n *= 2
	}
	m := &Memory{
		shards:   make([]shard, n),
		mask:     uint64(n - 1),
		seed:     maphash.MakeSeed(),
		seed2:    maphash.MakeSeed(),
		perShard: maxKeys / n,
	}
	for i := range m.shards {
		m.shards[i].minEnd = math.MaxInt64
	}
	return m
}

// quotaSalt sets quota counters apart from token buckets of the same policy and key.
const quotaSalt = 0x9e3779b97f4a7c15

// hashOf returns the identity of the entry of k and the number of the shard that holds
// it. The shard depends on the caller key alone, so that the entries of one caller (its
// buckets and quota counters under every policy) share a shard, and Check takes one
// lock for all of them.
func (m *Memory) hashOf(k entryKey) (entryHash, int) {
	kh := maphash.String(m.seed, k.key)
	id := entryHash{
		h: kh ^ bits.RotateLeft64(maphash.String(m.seed, k.policy), 17),
		c: maphash.String(m.seed2, k.key) ^ bits.RotateLeft64(maphash.String(m.seed2, k.policy), 29),
	}
	if k.quota {
		id.h ^= quotaSalt
		id.c ^= quotaSalt
	}
	return id, int(kh & m.mask)
}

// findBucket returns the position of the bucket id, or -1. s.mu must be held.
func (s *shard) findBucket(id entryHash) int {
	if i, ok := s.index.get(id.h); ok && s.holdsBucket(i, id) {
		return int(i)
	}
	return -1
}

// findCounter returns the position of the quota counter id, or -1. s.mu must be held.
func (s *shard) findCounter(id entryHash) int {
	if i, ok := s.index.get(id.h); ok && s.holdsCounter(i, id) {
		return int(i)
	}
	return -1
}

// holdsBucket reports whether the bucket at position i, which the index gave for id's
// hash, is id's (the index maps buckets and counters alike). s.mu must be held.
func (s *shard) holdsBucket(i int32, id entryHash) bool {
	return int(i) < len(s.buckets) && s.buckets[i].id == id
}

// holdsCounter is holdsBucket for a quota counter.
func (s *shard) holdsCounter(i int32, id entryHash) bool {
	return int(i) < len(s.counters) && s.counters[i].id == id
}

// renew starts counter c afresh from zero when its period ended by t (UnixNano of now).
// s.mu must be held.
func (s *shard) renew(c *counter, q *Quota, loc *time.Location, now time.Time, t int64) {
	if t < c.end {
		return
	}
	start, end := q.Period.Bounds(now, loc)
	c.used, c.start, c.end = 0, start.UnixNano(), end.UnixNano()
	s.minEnd = min(s.minEnd, c.end)
}

// dropCollision removes the entry, of either kind, that holds the index slot of id
// without being id (its index hash collides), so that id can take the slot. s.mu must
// be held.
func (s *shard) dropCollision(id entryHash) {
	i, ok := s.index.get(id.h)
	if !ok {
		return
	}
	if int(i) < len(s.buckets) && s.buckets[i].id.h == id.h {
		s.removeBucket(int(i))
	} else if int(i) < len(s.counters) && s.counters[i].id.h == id.h {
		s.removeCounter(int(i))
	}
}

// eps absorbs floating-point error in token counts.
const eps = 1e-9

// Take implements [Limiter]. It never returns an error but for an out shorter than reqs.
func (m *Memory) Take(_ context.Context, reqs []Request, now time.Time, out []Decision) (bool, error) {
	if len(out) < len(reqs) {
		return false, fmt.Errorf("limit: Take: %d decisions for %d requests", len(out), len(reqs))
	}
	t := now.UnixNano()
	denied := -1
	for i, r := range reqs {
		if denied >= 0 {
			out[i] = m.peek(r, t)
			continue
		}
		out[i] = m.take(r, t)
		if !out[i].Allowed {
			denied = i
		}
	}
	if denied < 0 {
		return true, nil
	}
	for i := range denied { // give back what the call took before it was denied
		out[i] = m.giveBack(reqs[i], t)
	}
	return false, nil
}

// take looks up (or creates) the bucket of r, refills it and takes a token if there is
// one.
func (m *Memory) take(r Request, now int64) Decision {
	if r.Rate.Events <= 0 || r.Rate.Per <= 0 {
		return Decision{Allowed: true} // no limit
	}
	id, si := m.hashOf(entryKey{r.PolicyID, r.Key, false})
	s := &m.shards[si]
	s.mu.Lock()
	b := s.bucket(m, id, r, now)
	b.ref = true
	allowed := b.tokens >= 1-eps
	if allowed {
		b.tokens = max(0, b.tokens-1)
	}
	d := b.decision(allowed)
	s.mu.Unlock()
	return d
}

// Peek implements [Limiter]. It never returns an error but for an out shorter than reqs.
func (m *Memory) Peek(_ context.Context, reqs []Request, now time.Time, out []Decision) error {
	if len(out) < len(reqs) {
		return fmt.Errorf("limit: Peek: %d decisions for %d requests", len(out), len(reqs))
	}
	t := now.UnixNano()
	for i, r := range reqs {
		out[i] = m.peek(r, t)
	}
	return nil
}

func (m *Memory) peek(r Request, now int64) Decision { return m.existing(r, now, false) }

// giveBack returns the token that take took for r, if the bucket is still there.
func (m *Memory) giveBack(r Request, now int64) Decision { return m.existing(r, now, true) }

// existing describes the bucket of r without creating it (a bucket that is not kept is
// full), and gives one token back to it when giveBack is true.
func (m *Memory) existing(r Request, now int64, giveBack bool) Decision {
	if r.Rate.Events <= 0 || r.Rate.Per <= 0 {
		return Decision{Allowed: true}
	}
	id, si := m.hashOf(entryKey{r.PolicyID, r.Key, false})
	s := &m.shards[si]
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.findBucket(id)
	if i < 0 {
		return Decision{Allowed: true, Remaining: r.capacity()}
	}
	if giveBack {
		b := &s.buckets[i]
		b.refill(now)
		b.tokens = min(float64(b.burst), b.tokens+1)
		return b.decision(true)
	}
	b := s.buckets[i] // a copy: peeking changes nothing
	b.refill(now)
	b.setPolicy(r)
	return b.decision(b.tokens >= 1-eps)
}

// bucket returns the bucket of r, refilled up to now and set to r's policy, creating
// a full one when there is none. s.mu must be held.
func (s *shard) bucket(m *Memory, id entryHash, r Request, now int64) *bucket {
	if i := s.findBucket(id); i >= 0 {
		b := &s.buckets[i]
		b.refill(now)
		b.setPolicy(r)
		return b
	}
	burst := r.capacity()
	return s.addBucket(m, bucket{
		id: id, k: entryKey{r.PolicyID, r.Key, false}, tokens: float64(burst), last: now,
		events: r.Rate.Events, per: int64(r.Rate.Per), burst: burst,
	}, now)
}

// addBucket adds b, which the shard does not hold, in place of an entry whose index hash
// collides with b's, or making room as makeRoom does at now, and returns it. s.mu must
// be held.
func (s *shard) addBucket(m *Memory, b bucket, now int64) *bucket {
	s.dropCollision(b.id)
	s.makeRoom(m, now)
	s.index.set(b.id.h, int32(len(s.buckets)))
	s.buckets = append(s.buckets, b)
	return &s.buckets[len(s.buckets)-1]
}

// addCounter is addBucket for a quota counter.
func (s *shard) addCounter(m *Memory, c counter, now int64) *counter {
	s.dropCollision(c.id)
	s.makeRoom(m, now)
	s.index.set(c.id.h, int32(len(s.counters)))
	s.counters = append(s.counters, c)
	s.minEnd = min(s.minEnd, c.end)
	return &s.counters[len(s.counters)-1]
}

// refill adds the tokens earned since the bucket was last computed. A clock that went
// back earns nothing.
func (b *bucket) refill(now int64) {
	if now <= b.last {
		return
	}
	b.tokens = min(float64(b.burst), b.tokens+float64(now-b.last)*float64(b.events)/float64(b.per))
	b.last = now
}

// setPolicy switches the bucket to r's rate and burst (after a config reload), keeping
// its tokens but no more than the new burst.
func (b *bucket) setPolicy(r Request) {
	b.events, b.per, b.burst = r.Rate.Events, int64(r.Rate.Per), r.capacity()
	b.tokens = min(b.tokens, float64(b.burst))
}

// decision describes the bucket; allowed says whether the call had a token.
func (b *bucket) decision(allowed bool) Decision {
	nsPerToken := float64(b.per) / float64(b.events)
	if !allowed {
		wait := time.Duration(math.Ceil((1 - b.tokens) * nsPerToken))
		return Decision{Reset: wait, RetryAfter: wait}
	}
	whole := math.Floor(b.tokens + eps)
	d := Decision{Allowed: true, Remaining: int64(whole)}
	if b.tokens < float64(b.burst)-eps {
		d.Reset = time.Duration(math.Ceil(max(0, whole+1-b.tokens) * nsPerToken))
	}
	return d
}

// AddQuota implements [QuotaCounter]. It never returns an error but for an invalid q.
func (m *Memory) AddQuota(_ context.Context, policyID, key string, q Quota, loc *time.Location, now time.Time, n int64) (QuotaDecision, error) {
	if err := q.validate(); err != nil {
		return QuotaDecision{}, fmt.Errorf("limit: AddQuota %q: %w", policyID, err)
	}
	k := entryKey{policyID, key, true}
	id, si := m.hashOf(k)
	s := &m.shards[si]
	s.mu.Lock()
	defer s.mu.Unlock()
	t := now.UnixNano()
	i := s.findCounter(id)
	if i < 0 && n <= 0 {
		start, end := q.Period.Bounds(now, loc)
		c := counter{limit: q.Limit, start: start.UnixNano(), end: end.UnixNano()}
		return QuotaDecision{Allowed: true, QuotaUsage: c.usage()}, nil // nothing used yet
	}
	var c *counter
	if i >= 0 {
		c = &s.counters[i]
		s.renew(c, &q, loc, now, t)
	} else {
		start, end := q.Period.Bounds(now, loc)
		c = s.addCounter(m, counter{id: id, k: k, start: start.UnixNano(), end: end.UnixNano()}, t)
	}
	c.ref = true
	c.limit = q.Limit
	var allowed bool
	switch {
	case n > 0:
		allowed = c.used <= c.limit-n
		if allowed {
			c.used += n
		}
	case n == 0:
		allowed = c.used < c.limit
	default:
		c.used = max(0, c.used+n)
		allowed = true
	}
	return QuotaDecision{Allowed: allowed, QuotaUsage: c.usage()}, nil
}

// QuotaUsage implements [QuotaCounter]. It never returns an error but for an invalid q.
func (m *Memory) QuotaUsage(ctx context.Context, policyID, key string, q Quota, loc *time.Location, now time.Time) (QuotaUsage, error) {
	d, err := m.AddQuota(ctx, policyID, key, q, loc, now, 0)
	return d.QuotaUsage, err
}

func (c *counter) usage() QuotaUsage {
	return QuotaUsage{
		Used:      c.used,
		Remaining: max(0, c.limit-c.used),
		Limit:     c.limit,
		Start:     time.Unix(0, c.start),
		ResetsAt:  time.Unix(0, c.end),
	}
}

// makeRoom evicts one entry when the shard is full. s.mu must be held.
func (s *shard) makeRoom(m *Memory, now int64) {
	if s.index.len() < m.perShard {
		return
	}
	m.evictions.Add(1)
	if s.minEnd <= now && s.dropEnded(now) {
		return
	}
	if len(s.buckets) > 0 {
		s.removeBucket(clockVictim(s.buckets, &s.bHand))
		return
	}
	s.removeCounter(clockVictim(s.counters, &s.cHand))
}

// dropEnded removes every counter whose period ended by now, and reports whether there
// was any. s.mu must be held.
func (s *shard) dropEnded(now int64) bool {
	dropped := false
	s.minEnd = math.MaxInt64
	for i := 0; i < len(s.counters); {
		if s.counters[i].end <= now {
			s.removeCounter(i)
			dropped = true
			continue
		}
		s.minEnd = min(s.minEnd, s.counters[i].end)
		i++
	}
	return dropped
}

func (s *shard) removeBucket(i int) { s.buckets = removeEntry(&s.index, s.buckets, i, &s.bHand) }

func (s *shard) removeCounter(i int) { s.counters = removeEntry(&s.index, s.counters, i, &s.cHand) }

// entry is what bucket and counter share: an identity and a CLOCK reference bit.
type entry[E any] interface {
	*E
	hash() uint64
	referenced() *bool
}

func (b *bucket) hash() uint64       { return b.id.h }
func (b *bucket) referenced() *bool  { return &b.ref }
func (c *counter) hash() uint64      { return c.id.h }
func (c *counter) referenced() *bool { return &c.ref }

// removeEntry removes entries[i], moving the last entry into its place, keeps index
// and the CLOCK hand right, and returns the shorter slice.
func removeEntry[E any, P entry[E]](index *hashIndex, entries []E, i int, hand *int) []E {
	index.delete(P(&entries[i]).hash())
	last := len(entries) - 1
	if i != last {
		entries[i] = entries[last]
		index.set(P(&entries[i]).hash(), int32(i))
	}
	var zero E
	entries[last] = zero
	if *hand >= last {
		*hand = 0
	}
	return entries[:last]
}

// clockVictim moves the CLOCK hand past the entries used since it last passed them,
// clearing their bit, and returns the first one that was not used. entries must not be
// empty.
func clockVictim[E any, P entry[E]](entries []E, hand *int) int {
	for {
		ref := P(&entries[*hand]).referenced()
		if !*ref {
			return *hand
		}
		*ref = false
		*hand = (*hand + 1) % len(entries)
	}
}

// Len returns how many entries (token buckets and quota counters) the store holds.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += s.index.len()
		s.mu.Unlock()
	}
	return n
}

// Evictions returns how many entries were evicted to make room for new ones, quota
// counters of ended periods included.
func (m *Memory) Evictions() uint64 { return m.evictions.Load() }

// Interface guards.
var _ Store = (*Memory)(nil)
