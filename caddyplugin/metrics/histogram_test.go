package metrics

import (
	"testing"
	"time"
)

func TestHistogramObserve(t *testing.T) {
	tests := []struct {
		name      string
		durations []time.Duration
		// cumulative is the expected count of each bucket, +Inf last.
		cumulative [len(bucketBounds) + 1]uint64
		sum        float64
	}{
		{
			name:       "nothing",
			cumulative: [len(bucketBounds) + 1]uint64{},
		},
		{
			name:       "zero and negative count in the first bucket",
			durations:  []time.Duration{0, -time.Second},
			cumulative: [...]uint64{2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2},
		},
		{
			name:       "a bound belongs to its bucket, a nanosecond more to the next",
			durations:  []time.Duration{time.Millisecond, time.Millisecond + 1, 30 * time.Second, 30*time.Second + 1},
			cumulative: [...]uint64{1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 4},
			sum:        60.002,
		},
		{
			name: "one in each bucket",
			durations: []time.Duration{500 * time.Microsecond, 2 * time.Millisecond, 4 * time.Millisecond,
				8 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond,
				200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 2 * time.Second,
				4 * time.Second, 8 * time.Second, 20 * time.Second, time.Hour},
			cumulative: [...]uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
			sum:        3600 + 20 + 8 + 4 + 2 + 0.8 + 0.4 + 0.2 + 0.08 + 0.04 + 0.02 + 0.008 + 0.004 + 0.002 + 0.0005,
		},
		{
			name:       "the sum is rounded to the microsecond",
			durations:  []time.Duration{1499, 1500, 2 * time.Microsecond},
			cumulative: [...]uint64{3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3},
			sum:        0.000005,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h histogram
			for _, d := range tt.durations {
				h.observe(d)
			}
			s := h.snapshot()
			if s.cumulative != tt.cumulative {
				t.Errorf("cumulative buckets %v, want %v", s.cumulative, tt.cumulative)
			}
			if s.count() != uint64(len(tt.durations)) {
				t.Errorf("count %d, want %d", s.count(), len(tt.durations))
			}
			if diff := s.sumSeconds - tt.sum; diff > 1e-9 || diff < -1e-9 {
				t.Errorf("sum %g, want %g", s.sumSeconds, tt.sum)
			}
		})
	}
}

func TestBucketLabels(t *testing.T) {
	want := [...]string{"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
		"1", "2.5", "5", "10", "30", "+Inf"}
	if bucketLabels != want {
		t.Errorf("le values %q, want %q", bucketLabels, want)
	}
	for i := 1; i < len(bucketBounds); i++ {
		if bucketBounds[i] <= bucketBounds[i-1] {
			t.Errorf("bound %v after %v", bucketBounds[i], bucketBounds[i-1])
		}
	}
}
