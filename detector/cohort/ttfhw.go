package cohort

import (
	"sync"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/rules"
)

// TTFHWSource gives the rules engine time to first hello world (metric ttfhw of static
// and anomaly rules) from a registry and a store: package rules cannot import this one,
// so the gateway hands it one with rules.Engine.SetTTFHW. Safe for concurrent use.
//
// The anomaly series needs the sign-up times of this week's users every minute: one pass
// over the registry's slab, which holds users in slot order, so the pass reads memory in
// order, and the sample of at most TTFHWSample is a heap (5-10 ms a minute for a
// million users, 16 ms for a new rule's 24 hours of history:
// BenchmarkNewUserTTFHWMillionUsers, BenchmarkNewUserTTFHWBackfill).
type TTFHWSource struct {
	store *detector.Store
	reg   *Registry

	mu  sync.Mutex
	buf []signup // scratch of a pass: the sample, at most TTFHWSample
}

// TTFHWSample is the most users the median of recent sign-ups is computed over. Beyond
// it, a fixed sample is taken: the users whose registry slots hash lowest, so that the
// same users are in it from one minute to the next (until a Load gives users new slots)
// and sampling adds no jitter of its own to the series. 4096 users put the sample median
// within about 1.6 percentiles of the true one (two standard errors).
const TTFHWSample = 4096

// signup is a user who signed up in the span of a series.
type signup struct {
	slot    int32
	hash    uint64 // of the slot, for the sample
	created int64  // Unix seconds
}

// NewTTFHWSource returns a source over a registry and a store.
func NewTTFHWSource(store *detector.Store, reg *Registry) *TTFHWSource {
	return &TTFHWSource{store: store, reg: reg}
}

// UserTTFHW returns a user's time to first hello world at now (as Engine.TTFHW: from
// created_at, or the first call when unknown, to the first success or now); false when
// nothing is known of the user.
func (s *TTFHWSource) UserTTFHW(user string, now time.Time) (time.Duration, bool) {
	cd := userCandidate(s.store, s.reg, user)
	return cd.ttfhw(now.Unix())
}

// NewUserTTFHW returns, for each time T in at (ascending), the median time to first
// hello world at T of the registered users whose created_at lies in (T-within, T]: for
// each, from created_at to the first success if it came by T, else to T (the time so
// far). Users without a sign-up time are nobody's new users and are left out. Beyond
// TTFHWSample users in the span of all the times, the median is over a fixed sample and
// Users is scaled up from it.
func (s *TTFHWSource) NewUserTTFHW(at []time.Time, within time.Duration) []rules.TTFHWMedian {
	out := make([]rules.TTFHWMedian, len(at))
	if len(at) == 0 {
		return out
	}
	lo := at[0].Add(-within).Unix() // exclusive
	hi := at[len(at)-1].Unix()      // inclusive
	s.mu.Lock()
	defer s.mu.Unlock()
	// The sample is a max-heap on the hash: a user enters it while it is not full, or
	// in place of the highest hash when its own is lower.
	users := s.buf[:0]
	total := 0
	r := s.reg
	r.mu.RLock()
	for i := range r.entries {
		c := r.entries[i].created
		if c <= lo || c > hi {
			continue
		}
		total++
		u := signupOf(int32(i), c)
		switch {
		case len(users) < TTFHWSample:
			users = append(users, u)
			siftUp(users, len(users)-1)
		case u.hash < users[0].hash:
			users[0] = u
			siftDown(users, 0)
		}
	}
	ids := make([]string, len(users))
	for i := range users {
		ids[i] = r.ids[users[i].slot]
	}
	r.mu.RUnlock()
	s.buf = users[:0]
	if len(users) == 0 {
		return out
	}
	first2xx := make([]int64, len(users))
	for i, id := range ids {
		_, first2xx[i], _ = s.store.FirstCalls(detector.DimUser, id)
	}
	scale := float64(total) / float64(len(users))
	buf := make([]int64, 0, len(users))
	for k, t := range at {
		end, start := t.Unix(), t.Add(-within).Unix()
		buf = buf[:0]
		for i := range users {
			u := &users[i]
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

// signupOf returns the signup of a slot, with the slot's hash (a 64-bit mix of it, so
// that the lowest hashes are a sample spread over all slots).
func signupOf(slot int32, created int64) signup {
	h := uint64(slot) + 0x9E3779B97F4A7C15
	h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9
	h = (h ^ (h >> 27)) * 0x94D049BB133111EB
	return signup{slot: slot, hash: h ^ (h >> 31), created: created}
}

// siftUp and siftDown keep h a max-heap on the hash.
func siftUp(h []signup, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].hash >= h[i].hash {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func siftDown(h []signup, i int) {
	for {
		l, big := 2*i+1, i
		if l < len(h) && h[l].hash > h[big].hash {
			big = l
		}
		if r := l + 1; r < len(h) && h[r].hash > h[big].hash {
			big = r
		}
		if big == i {
			return
		}
		h[i], h[big] = h[big], h[i]
		i = big
	}
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

var _ rules.TTFHWSource = (*TTFHWSource)(nil)
