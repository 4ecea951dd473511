package cohort

import (
	"cmp"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/rules"
)

// TTFHWSource gives the rules engine time to first hello world (metric ttfhw of static
// and anomaly rules) from a registry and a store: package rules cannot import this one,
// so the gateway hands it one with rules.Engine.SetTTFHW. Safe for concurrent use.
//
// The anomaly series needs the sign-up times of this week's users every minute. Reading
// every user's entry is one cache miss each (some 100-300 ms for a million users), so the
// source keeps the recent sign-ups itself, in TTFHWBuckets buckets by a hash of each
// entry's address, and each minute makes one pass over the registry's map that touches
// no entry: it counts and sums the hashes per bucket, and re-reads only the buckets whose
// sum changed (an entry is never modified in place: an upsert puts a new one), plus a
// few in rotation so that every bucket is read again within the hour whatever happens.
// For a million users that is 33-39 ms a minute, 52 ms with 100 sign-ups in the minute,
// and 130-155 ms for the first pass (BenchmarkNewUserTTFHWMillionUsers).
type TTFHWSource struct {
	store *detector.Store
	reg   *Registry

	mu      sync.Mutex
	buckets [TTFHWBuckets]signupBucket
	n       [TTFHWBuckets]int // scratch of a pass
	sum     [TTFHWBuckets]uint64
	refresh [TTFHWBuckets]bool
	next    int // the next bucket to re-read in rotation
	warm    bool
}

// TTFHWBuckets is the number of buckets the source keeps recent sign-ups in: a new or
// changed user costs re-reading the registry entries of its bucket, a 16384th of them.
const TTFHWBuckets = 1 << ttfhwBucketBits

const ttfhwBucketBits = 14

// ttfhwRotation is how many buckets each pass re-reads whether or not they changed, so
// that all are re-read within an hour of one pass a minute (a safety net against an
// address reused by another user's entry between two passes).
const ttfhwRotation = (TTFHWBuckets + 59) / 60

// TTFHWSample is the most users the median of recent sign-ups is computed over. Beyond
// it, a fixed sample is taken: the users whose entries hash lowest, so that the same
// users are in it from one minute to the next and sampling adds no jitter of its own to
// the series. 4096 users put the sample median within about 1.6 percentiles of the
// true one (two standard errors).
const TTFHWSample = 4096

// signupBucket is what the source knows of one bucket's registry entries.
type signupBucket struct {
	n     int      // entries in the bucket at the last read
	sum   uint64   // the sum of their hashes
	floor int64    // users holds those signed up after this (Unix seconds)
	users []signup // in no order: the bucket is one range of hashes
}

// signup is a user who signed up after a bucket's floor.
type signup struct {
	id      string
	hash    uint64
	created int64 // Unix seconds
}

// NewTTFHWSource returns a source over a registry and a store.
func NewTTFHWSource(store *detector.Store, reg *Registry) *TTFHWSource {
	return &TTFHWSource{store: store, reg: reg}
}

// UserTTFHW returns a user's time to first hello world at now (as Engine.TTFHW: from
// created_at, or the first call when unknown, to the first success or now); false when
// nothing is known of the user.
func (s *TTFHWSource) UserTTFHW(user string, now time.Time) (time.Duration, bool) {
	cd := candidate{id: user, store: s.store, kind: detector.DimUser}
	s.reg.mu.RLock()
	cd.user = s.reg.users[user]
	s.reg.mu.RUnlock()
	return cd.ttfhw(now.Unix())
}

// NewUserTTFHW returns, for each time T in at (ascending), the median time to first
// hello world at T of the registered users whose created_at lies in (T-signup, T]: for
// each, from created_at to the first success if it came by T, else to T (the time so
// far). Users without a sign-up time are nobody's new users and are left out. Beyond
// TTFHWSample users in the span of all the times, the median is over a fixed sample and
// Users is scaled up from it.
func (s *TTFHWSource) NewUserTTFHW(at []time.Time, signup time.Duration) []rules.TTFHWMedian {
	out := make([]rules.TTFHWMedian, len(at))
	if len(at) == 0 {
		return out
	}
	lo := at[0].Add(-signup).Unix() // exclusive
	hi := at[len(at)-1].Unix()      // inclusive
	s.mu.Lock()
	defer s.mu.Unlock()
	s.update(lo)
	sample, total := s.sample(lo, hi)
	if len(sample) == 0 {
		return out
	}
	first2xx := make([]int64, len(sample))
	for i := range sample {
		_, first2xx[i], _ = s.store.FirstCalls(detector.DimUser, sample[i].id)
	}
	scale := float64(total) / float64(len(sample))
	buf := make([]int64, 0, len(sample))
	for k, t := range at {
		end, start := t.Unix(), t.Add(-signup).Unix()
		buf = buf[:0]
		for i := range sample {
			u := &sample[i]
			if u.created <= start || u.created > end {
				continue
			}
			stop := end
			if f := first2xx[i]; f != 0 && f <= end {
				stop = f
			}
			buf = append(buf, max(stop-u.created, 0))
		}
		if len(buf) > 0 {
			out[k] = rules.TTFHWMedian{Median: median(buf), Users: int(float64(len(buf))*scale + 0.5)}
		}
	}
	return out
}

// sampleSeed hashes entry addresses: fixed for the process, so that buckets and the
// sample stay the same from one pass to the next.
var sampleSeed = maphash.MakeSeed()

// update brings the buckets up to date with the registry, keeping in each the users
// signed up after lo (or after an earlier floor, for a bucket not re-read). s.mu held.
func (s *TTFHWSource) update(lo int64) {
	// Read in the first pass whatever the sums: every bucket the first time, a few in
	// rotation, and any whose users do not reach back to lo.
	for b := range s.buckets {
		s.refresh[b] = !s.warm || s.buckets[b].floor > lo
	}
	if s.warm {
		for k := 0; k < ttfhwRotation; k++ {
			s.refresh[s.next] = true
			s.next = (s.next + 1) % TTFHWBuckets
		}
	}
	s.warm = true
	for b := range s.buckets {
		if s.refresh[b] {
			s.buckets[b].users, s.buckets[b].floor = s.buckets[b].users[:0], lo
		}
	}
	r := s.reg
	r.mu.RLock()
	defer r.mu.RUnlock()
	// The first pass hashes each entry's address (not its id: another cache miss) and
	// reads the sign-up time only of the entries of buckets being re-read.
	clear(s.n[:])
	clear(s.sum[:])
	for id, u := range r.users {
		h := maphash.Comparable(sampleSeed, u)
		b := h >> (64 - ttfhwBucketBits)
		s.n[b]++
		s.sum[b] += h
		if s.refresh[b] && u.created > lo {
			s.buckets[b].users = append(s.buckets[b].users, signup{id: id, hash: h, created: u.created})
		}
	}
	// Buckets whose entries changed since they were read are read again.
	again := false
	for b := range s.buckets {
		bk := &s.buckets[b]
		changed := !s.refresh[b] && (bk.n != s.n[b] || bk.sum != s.sum[b])
		if changed {
			bk.users, bk.floor = bk.users[:0], lo
			again = true
		}
		s.refresh[b] = changed
		bk.n, bk.sum = s.n[b], s.sum[b]
	}
	if again {
		for id, u := range r.users {
			h := maphash.Comparable(sampleSeed, u)
			b := h >> (64 - ttfhwBucketBits)
			if s.refresh[b] && u.created > lo {
				s.buckets[b].users = append(s.buckets[b].users, signup{id: id, hash: h, created: u.created})
			}
		}
	}
}

// sample returns the users signed up in (lo, hi] with the lowest hashes, at most
// TTFHWSample, and how many signed up in that span. s.mu held.
func (s *TTFHWSource) sample(lo, hi int64) ([]signup, int) {
	var out []signup
	total := 0
	for b := range s.buckets { // each bucket holds a range of hashes, in order
		start := len(out)
		for _, u := range s.buckets[b].users {
			if u.created <= lo || u.created > hi {
				continue
			}
			total++
			if start < TTFHWSample {
				out = append(out, u)
			}
		}
		if start < TTFHWSample && len(out) > TTFHWSample {
			// The bucket that fills the sample: its users of lowest hash.
			slices.SortFunc(out[start:], func(x, y signup) int { return cmp.Compare(x.hash, y.hash) })
			out = out[:TTFHWSample]
		}
	}
	return out, total
}

// median returns the median of v in seconds (of an even count, the mean of the middle
// two), reordering v.
func median(v []int64) time.Duration {
	n := len(v)
	k := n / 2
	m := nth(v, k)
	if n%2 == 1 {
		return time.Duration(m) * time.Second
	}
	// The lower middle is the largest of what nth left before k.
	lower := v[0]
	for _, x := range v[1:k] {
		lower = max(lower, x)
	}
	return time.Duration(float64(lower+m) / 2 * float64(time.Second))
}

// nth reorders v so that v[k] is the value it would have were v sorted, with no larger
// value before it and no smaller one after (quickselect), and returns v[k].
func nth(v []int64, k int) int64 {
	lo, hi := 0, len(v)-1
	for lo < hi {
		// Median of three as the pivot: sorted or constant input stays linear.
		mid := lo + (hi-lo)/2
		if v[mid] < v[lo] {
			v[mid], v[lo] = v[lo], v[mid]
		}
		if v[hi] < v[lo] {
			v[hi], v[lo] = v[lo], v[hi]
		}
		if v[hi] < v[mid] {
			v[hi], v[mid] = v[mid], v[hi]
		}
		p := v[mid]
		i, j := lo, hi
		for i <= j {
			for v[i] < p {
				i++
			}
			for v[j] > p {
				j--
			}
			if i <= j {
				v[i], v[j] = v[j], v[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return v[k]
		}
	}
	return v[k]
}

var _ rules.TTFHWSource = (*TTFHWSource)(nil)
