package limit

import (
	"context"
	"fmt"
	"math/bits"
	"time"
)

// checkInline is how many limits of one call Check keeps on the stack; more go to the
// heap.
const checkInline = 16

// checkOp is one entry Check needs: its identity, its shard, and where the shard holds
// it (-1 when it holds none).
type checkOp struct {
	id    entryHash
	shard int // -1: a request without a limit, nothing to look up
	pos   int32
}

// Check implements [Store]. It never returns an error but for outputs shorter than the
// requests or an invalid quota.
//
// It locks the shards of all the call's entries at once, in shard order (so that two
// calls cannot deadlock), then reads all their index slots, then all the entries.
// These lookups do not depend on each other, so their cache misses overlap, where
// taking the limits one lock at a time waits for each miss in turn: in a gateway,
// where the entries are rarely in the CPU cache, that is most of the limiter's cost.
func (m *Memory) Check(_ context.Context, quotas []QuotaRequest, reqs []Request, now time.Time, qout []QuotaDecision, out []Decision) (bool, error) {
	if len(qout) < len(quotas) || len(out) < len(reqs) {
		return false, fmt.Errorf("limit: Check: %d and %d decisions for %d quotas and %d requests", len(qout), len(out), len(quotas), len(reqs))
	}
	for i := range quotas {
		if err := quotas[i].Quota.validate(); err != nil {
			return false, fmt.Errorf("limit: Check: quota %q: %w", quotas[i].PolicyID, err)
		}
	}
	var buf [checkInline]checkOp
	ops := buf[:0]
	if n := len(quotas) + len(reqs); n > checkInline {
		ops = make([]checkOp, 0, n)
	}
	for i := range quotas {
		id, si := m.hashOf(entryKey{quotas[i].PolicyID, quotas[i].Key, true})
		ops = append(ops, checkOp{id: id, shard: si})
	}
	for i := range reqs {
		r := &reqs[i]
		if r.Rate.Events <= 0 || r.Rate.Per <= 0 {
			ops = append(ops, checkOp{shard: -1})
			continue
		}
		id, si := m.hashOf(entryKey{r.PolicyID, r.Key, false})
		ops = append(ops, checkOp{id: id, shard: si})
	}
	qops, bops := ops[:len(quotas)], ops[len(quotas):]

	var locked shardSet
	for i := range ops {
		locked.add(ops[i].shard)
	}
	locked.lock(m)
	for i := range ops {
		o := &ops[i]
		o.pos = -1
		if o.shard >= 0 {
			if p, ok := m.shards[o.shard].index.get(o.id.h); ok {
				o.pos = p
			}
		}
	}
	for i := range qops {
		if o := &qops[i]; o.pos >= 0 && !m.shards[o.shard].holdsCounter(o.pos, o.id) {
			o.pos = -1
		}
	}
	for i := range bops {
		if o := &bops[i]; o.pos >= 0 && !m.shards[o.shard].holdsBucket(o.pos, o.id) {
			o.pos = -1
		}
	}

	t := now.UnixNano()
	ok := true
	for i := range quotas {
		if c := m.current(&qops[i], t); c != nil && c.used > quotas[i].Quota.Limit-1 {
			ok = false
		}
	}
	for i := range bops {
		if o := &bops[i]; o.pos >= 0 {
			b := &m.shards[o.shard].buckets[o.pos]
			b.refill(t) // brings it up to now: the same state whether or not it is taken
			b.setPolicy(reqs[i])
			if b.tokens < 1-eps {
				ok = false
			}
		}
	}
	if !ok { // describe the state without the call, and change nothing
		for i := range quotas {
			q := &quotas[i]
			var u QuotaUsage
			if c := m.current(&qops[i], t); c != nil {
				u = QuotaUsage{Used: c.used, Start: time.Unix(0, c.start), ResetsAt: time.Unix(0, c.end)}
			} else {
				u.Start, u.ResetsAt = q.Quota.Period.Bounds(now, q.Loc)
			}
			u.Limit, u.Remaining = q.Quota.Limit, max(0, q.Quota.Limit-u.Used)
			qout[i] = QuotaDecision{Allowed: u.Used <= q.Quota.Limit-1, QuotaUsage: u}
		}
		for i := range bops {
			switch o := &bops[i]; {
			case o.shard < 0:
				out[i] = Decision{Allowed: true}
			case o.pos < 0:
				out[i] = Decision{Allowed: true, Remaining: reqs[i].capacity()}
			default:
				b := &m.shards[o.shard].buckets[o.pos]
				out[i] = b.decision(b.tokens >= 1-eps)
			}
		}
		locked.unlock(m)
		return false, nil
	}

	// Count and take: the entries found first, then the new ones, since making room for
	// a new entry may move the others of its shard.
	for i := range quotas {
		o := &qops[i]
		if o.pos < 0 {
			continue
		}
		s := &m.shards[o.shard]
		c := &s.counters[o.pos]
		s.renew(c, &quotas[i].Quota, quotas[i].Loc, now, t)
		c.ref, c.limit = true, quotas[i].Quota.Limit
		c.used++
		qout[i] = QuotaDecision{Allowed: true, QuotaUsage: c.usage()}
	}
	for i := range bops {
		switch o := &bops[i]; {
		case o.shard < 0:
			out[i] = Decision{Allowed: true}
		case o.pos >= 0:
			b := &m.shards[o.shard].buckets[o.pos]
			b.ref = true
			b.tokens = max(0, b.tokens-1)
			out[i] = b.decision(true)
		}
	}
	for i := range quotas {
		if o := &qops[i]; o.pos < 0 {
			q := &quotas[i]
			start, end := q.Quota.Period.Bounds(now, q.Loc)
			c := m.shards[o.shard].addCounter(m, counter{
				id: o.id, k: entryKey{q.PolicyID, q.Key, true}, used: 1, limit: q.Quota.Limit,
				start: start.UnixNano(), end: end.UnixNano(), ref: true,
			}, t)
			qout[i] = QuotaDecision{Allowed: true, QuotaUsage: c.usage()}
		}
	}
	for i := range bops {
		if o := &bops[i]; o.shard >= 0 && o.pos < 0 {
			r := &reqs[i]
			burst := r.capacity()
			b := m.shards[o.shard].addBucket(m, bucket{
				id: o.id, k: entryKey{r.PolicyID, r.Key, false}, tokens: float64(burst) - 1, last: t,
				events: r.Rate.Events, per: int64(r.Rate.Per), burst: burst, ref: true,
			}, t)
			out[i] = b.decision(true)
		}
	}
	locked.unlock(m)
	return true, nil
}

// current returns the counter o found if its period is still running at t, or nil
// (none found, or its period ended: the call would start a new one from zero).
func (m *Memory) current(o *checkOp, t int64) *counter {
	if o.pos < 0 {
		return nil
	}
	if c := &m.shards[o.shard].counters[o.pos]; t < c.end {
		return c
	}
	return nil
}

// shardSet is a set of shard numbers (NewMemory makes at most 256 shards), locked and
// unlocked in ascending order.
type shardSet [4]uint64

func (s *shardSet) add(shard int) {
	if shard >= 0 {
		s[shard>>6] |= 1 << (shard & 63)
	}
}

func (s *shardSet) lock(m *Memory) {
	for w, word := range s {
		for ; word != 0; word &= word - 1 {
			m.shards[w<<6+bits.TrailingZeros64(word)].mu.Lock()
		}
	}
}

func (s *shardSet) unlock(m *Memory) {
	for w, word := range s {
		for ; word != 0; word &= word - 1 {
			m.shards[w<<6+bits.TrailingZeros64(word)].mu.Unlock()
		}
	}
}
