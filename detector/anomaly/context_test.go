package anomaly

import "testing"

// A repeated pattern of levels is learnt (no new contexts, statistic at or below 0), and
// the same levels in a new order are new contexts.
func TestContextsLearnPatterns(t *testing.T) {
	c := newContexts()
	pattern := []int{0, 3, 6, 9, 6, 3}
	var x float64
	for i := range 3000 {
		x = c.observe(pattern[i%len(pattern)])
	}
	if x > 0 {
		t.Fatalf("a learnt pattern scores %.2f, want <= 0", x)
	}
	swapped := []int{0, 6, 3, 9, 3, 6}
	peak := 0.0
	for i := range 12 {
		peak = max(peak, c.observe(swapped[i%len(swapped)]))
	}
	if peak < 3 {
		t.Fatalf("the same levels in a new order score %.2f, want >= 3 sigmas", peak)
	}
}

// Levels are quantised within the range, at least minSpan wide, and clamped to it.
func TestContextLevels(t *testing.T) {
	for _, c := range []struct {
		v, lo, hi, span float64
		want            int
	}{
		{0, 0, 12, 1, 0}, {11.9, 0, 12, 1, ctxBins - 1}, {6, 0, 12, 1, 6}, {-5, 0, 12, 1, 0},
		{50, 0, 12, 1, ctxBins - 1}, {0.5, 0, 0, 12, 0}, {6.5, 0, 0, 12, 6},
	} {
		if got := ctxLevel(c.v, c.lo, c.hi, c.span); got != c.want {
			t.Errorf("ctxLevel(%v, %v, %v, %v) = %d, want %d", c.v, c.lo, c.hi, c.span, got, c.want)
		}
	}
}
