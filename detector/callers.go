package detector

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
)

const (
	callerShards = 64
	hourSecs     = 3600
	daySecs      = 86400
	// CallerHours and CallerDays are how far back per-caller history goes: hourly counts
	// for 7 days, daily counts for 35 days.
	CallerHours = 7 * 24
	CallerDays  = 35
)

// CallerCounts are the counts of one caller in one hour or one day.
type CallerCounts struct {
	// Calls counts every call; OK those answered with 1xx to 3xx, Status4 with 4xx,
	// Status5 with 5xx or not answered at all.
	Calls   uint32 `json:"calls"`
	OK      uint32 `json:"ok"`
	Status4 uint32 `json:"4xx"`
	Status5 uint32 `json:"5xx"`
	// Blocked and Limited count the calls refused by the block list, and by a rate limit
	// or quota.
	Blocked uint32 `json:"blocked"`
	Limited uint32 `json:"limited"`
}

func (c *CallerCounts) add(p *point) {
	c.Calls++
	switch {
	case p.status >= 500 || p.status < 100:
		c.Status5++
	case p.status >= 400:
		c.Status4++
	default:
		c.OK++
	}
	if p.blocked {
		c.Blocked++
	}
	if p.limited {
		c.Limited++
	}
}

func (c *CallerCounts) merge(o *CallerCounts) {
	c.Calls += o.Calls
	c.OK += o.OK
	c.Status4 += o.Status4
	c.Status5 += o.Status5
	c.Blocked += o.Blocked
	c.Limited += o.Limited
}

type callerBucket struct {
	slot uint32 // hours or days since the Unix epoch
	CallerCounts
}

// caller is the compact history of one user, company or key.
type caller struct {
	id                    string
	first, last, first2xx int64 // Unix seconds; first2xx 0 until the first success
	hours                 []callerBucket
	days                  []callerBucket
	fails                 *topFailures // nil until the caller's first 4xx or 5xx
}

// TopFailures is how many (endpoint, status) pairs each caller's failing calls are kept
// for, by the space-saving algorithm: the pairs that fail most are kept with counts that
// may overstate a newcomer by at most the smallest count it replaced.
const TopFailures = 4

// topFailures counts a caller's most frequent failing (endpoint, status) pairs.
type topFailures [TopFailures]Failing

// Failing is an endpoint and status that a caller's calls failed with, and how often.
type Failing struct {
	// Endpoint is the normalised endpoint ("/users/{id}"), Status the status code (0:
	// no answer from the upstream).
	Endpoint string `json:"endpoint"`
	Status   int    `json:"status"`
	// Count is how many of the caller's calls failed so (may overstate, see TopFailures).
	Count uint32 `json:"count"`
}

func (t *topFailures) add(endpoint string, status int) { t.addN(endpoint, status, 1) }

func (t *topFailures) addN(endpoint string, status int, n uint32) {
	minI := 0
	for i := range t {
		f := &t[i]
		if f.Count > 0 && f.Endpoint == endpoint && f.Status == status {
			f.Count += n
			return
		}
		if f.Count < t[minI].Count {
			minI = i
		}
	}
	f := &t[minI]
	*f = Failing{Endpoint: endpoint, Status: status, Count: f.Count + n}
}

// callerIndex keeps the compact history of every caller of one kind, bounded by max
// callers: when full, a new caller evicts the least recently seen of a few sampled ones.
type callerIndex struct {
	kind        Dim
	seed        maphash.Seed
	maxPerShard int
	shards      [callerShards]callerShard
	evictions   atomic.Uint64
	n           atomic.Int64
}

type callerShard struct {
	mu   sync.Mutex
	m    map[string]int32
	slab []caller
	free []int32
	rnd  uint64
}

func newCallerIndex(kind Dim, max int) *callerIndex {
	x := &callerIndex{kind: kind, seed: maphash.MakeSeed(), maxPerShard: (max + callerShards - 1) / callerShards}
	if x.maxPerShard < 1 {
		x.maxPerShard = 1
	}
	for i := range x.shards {
		x.shards[i].m = make(map[string]int32)
		x.shards[i].rnd = uint64(i)*0x9E3779B97F4A7C15 + 1
	}
	return x
}

func (x *callerIndex) shard(id string) *callerShard {
	return &x.shards[maphash.String(x.seed, id)%callerShards]
}

func (x *callerIndex) record(id string, t int64, p *point) {
	sh := x.shard(id)
	sh.mu.Lock()
	i, ok := sh.m[id]
	if !ok {
		i = x.insert(sh, id)
	}
	c := &sh.slab[i]
	if c.first == 0 || t < c.first {
		c.first = t
	}
	if t > c.last {
		c.last = t
	}
	if p.status >= 100 && p.status < 400 && (c.first2xx == 0 || t < c.first2xx) {
		c.first2xx = t
	}
	c.hours = addCallerBucket(c.hours, floorDiv(t, hourSecs), CallerHours, p)
	c.days = addCallerBucket(c.days, floorDiv(t, daySecs), CallerDays, p)
	if p.status >= 400 || p.status < 100 {
		if c.fails == nil {
			c.fails = new(topFailures)
		}
		c.fails.add(p.endpoint, p.status)
	}
	sh.mu.Unlock()
}

// insert adds a caller to a locked shard, evicting one when the shard is full.
func (x *callerIndex) insert(sh *callerShard, id string) int32 {
	var i int32
	switch {
	case len(sh.free) > 0:
		i = sh.free[len(sh.free)-1]
		sh.free = sh.free[:len(sh.free)-1]
	case len(sh.slab) < x.maxPerShard:
		sh.slab = append(sh.slab, caller{})
		i = int32(len(sh.slab) - 1)
		x.n.Add(1)
	default:
		// Evict the least recently seen of 5 sampled callers (Redis-style approximate LRU).
		i = -1
		for k := 0; k < 5; k++ {
			sh.rnd ^= sh.rnd << 13
			sh.rnd ^= sh.rnd >> 7
			sh.rnd ^= sh.rnd << 17
			j := int32(sh.rnd % uint64(len(sh.slab)))
			if i < 0 || sh.slab[j].last < sh.slab[i].last {
				i = j
			}
		}
		delete(sh.m, sh.slab[i].id)
		x.evictions.Add(1)
	}
	old := &sh.slab[i]
	*old = caller{id: strings.Clone(id), hours: old.hours[:0], days: old.days[:0]}
	// fails is dropped with the evicted caller (a new one starts without).
	sh.m[old.id] = i
	return i
}

// addCallerBucket adds p to the bucket for slot in a sorted slice that keeps at most n
// slots back from the newest.
func addCallerBucket(bs []callerBucket, slot int64, n int64, p *point) []callerBucket {
	s := uint32(slot)
	last := len(bs) - 1
	switch {
	case last >= 0 && bs[last].slot == s:
		bs[last].add(p)
		return bs
	case last < 0 || bs[last].slot < s:
		// Drop what falls out of the horizon.
		k := 0
		for k < len(bs) && int64(bs[k].slot) <= slot-n {
			k++
		}
		if k > 0 {
			bs = bs[:copy(bs, bs[k:])]
		}
		bs = append(bs, callerBucket{slot: s})
		bs[len(bs)-1].add(p)
		return bs
	}
	// An older slot: keep it only if within the horizon of the newest.
	if slot <= int64(bs[last].slot)-n {
		return bs
	}
	k := 0
	for k < len(bs) && bs[k].slot < s {
		k++
	}
	if bs[k].slot != s {
		bs = append(bs, callerBucket{})
		copy(bs[k+1:], bs[k:])
		bs[k] = callerBucket{slot: s}
	}
	bs[k].add(p)
	return bs
}
