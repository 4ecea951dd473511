package metrics

import (
	"strconv"
	"sync/atomic"
	"time"
)

// bucketBounds are the upper bounds (le) of vigil_request_duration_seconds, from 1 ms to
// 30 s in 1-2.5-5 steps: from an answer served from cache to an upstream that runs into
// the common 30 s proxy timeout. A last bucket, +Inf, holds everything.
var bucketBounds = [...]time.Duration{
	1 * time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	1 * time.Second, 2500 * time.Millisecond, 5 * time.Second,
	10 * time.Second, 30 * time.Second,
}

// bucketLabels are the le label values: bucketBounds in seconds, then +Inf.
var bucketLabels = func() (l [len(bucketBounds) + 1]string) {
	for i, b := range bucketBounds {
		l[i] = strconv.FormatFloat(b.Seconds(), 'g', -1, 64)
	}
	l[len(bucketBounds)] = "+Inf"
	return l
}()

// histogram is a Prometheus histogram of durations with bucketBounds. Each observation
// adds to one bucket and to the sum; the cumulative counts and the total count are worked
// out when written, from one read of every bucket, so that they always agree.
type histogram struct {
	buckets [len(bucketBounds) + 1]atomic.Uint64 // not cumulative; the last is +Inf only
	// sumMicros is the sum in microseconds, rounded: exact to a microsecond per request,
	// and it wraps only after 585,000 years of summed durations.
	sumMicros atomic.Uint64
}

// observe adds d (a negative one counts as 0).
func (h *histogram) observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(bucketBounds) && d > bucketBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumMicros.Add(uint64((d + time.Microsecond/2) / time.Microsecond))
}

// histogramSnapshot is a histogram read for writing.
type histogramSnapshot struct {
	cumulative [len(bucketBounds) + 1]uint64 // the last is the count
	sumSeconds float64
}

func (h *histogram) snapshot() (s histogramSnapshot) {
	var n uint64
	for i := range h.buckets {
		n += h.buckets[i].Load()
		s.cumulative[i] = n
	}
	s.sumSeconds = float64(h.sumMicros.Load()) / 1e6
	return s
}

func (s *histogramSnapshot) count() uint64 { return s.cumulative[len(s.cumulative)-1] }
