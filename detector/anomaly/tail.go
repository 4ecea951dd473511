package anomaly

import "math"

// Tail model constants (see the package documentation).
const (
	tailStart   = 2.0    // peaks over this many sigmas feed the tail model
	tailRate0   = 0.0228 // prior: share of points beyond tailStart on one side (Gaussian)
	tailExcess0 = 0.45   // prior: mean excess beyond tailStart, in sigmas (exponential tail)
	tailPrior   = 200.0  // weight of the rate prior, in points
	tailMemory  = 5000.0 // points the rate estimate remembers
	peakPrior   = 10.0   // weight of the excess prior, in peaks
	peakMemory  = 200.0  // peaks the excess estimates remember
	minShare    = 1e-15  // smallest share of peaks the model gives any excess
)

// tailEdges are the excesses (sigmas beyond tailStart) at which a tail keeps the share of
// its peaks that go farther: a doubling ladder, so that both a Gaussian tail and spikes
// of tens of sigmas are described.
var tailEdges = [tailBins]float64{0.5, 1, 2, 4, 8, 16, 32, 64}

const tailBins = 8

const ln10 = 2.302585092994046

// tail models one side of one statistic (in sigmas) beyond tailStart: the share of points
// that start a run beyond it (rate) and, for each edge of a doubling ladder of excesses, the share of those
// peaks that go beyond the edge. Between edges the log of the share is interpolated
// linearly, and beyond the last it falls as a power law with the slope of the last two
// edges. The prior is an exponential tail (light, close to Gaussian); a series whose
// normal behaviour includes spikes of tens of sigmas learns that they happen, and stops
// alarming on every one.
type tail struct {
	rate   float64           // share of points beyond tailStart
	beyond [tailBins]float32 // share of peaks beyond each edge (float32: shares of a few hundred peaks)
	n      float32           // points seen (capped at tailMemory; whole numbers, exact as float32)
	k      float32           // peaks seen (capped at peakMemory; likewise)
	run    float64           // highest point of the current run beyond tailStart, 0 outside
}

func newTail() tail {
	t := tail{rate: tailRate0}
	for j, e := range tailEdges {
		t.beyond[j] = float32(max(math.Exp(-e/tailExcess0), minShare))
	}
	return t
}

// The log share of peaks beyond an excess e is piecewise linear in e: from the origin
// (share 1) through the edges the model has seen peaks beyond (a share of at least half a
// peak in its memory); the first edge with no peak beyond it is bounded by that half peak;
// past the last knot it falls on with the slope of the last segment, at least halving per
// doubling of the excess. segments calls f with each segment (e0, l0) to (e1, l1), the
// last one open-ended (e1 = +Inf), until f returns false.
func (t *tail) segments(f func(e0, l0, slope, e1 float64) bool) {
	resolved := 0.5 / (float64(t.k) + peakPrior)
	prevE, prevL := 0.0, 0.0
	tailSlope := -1 / tailExcess0
	for j, edge := range tailEdges {
		b := float64(t.beyond[j])
		l := math.Log(b)
		seen := b >= resolved
		slope := (l - prevL) / (edge - prevE)
		if !seen {
			slope = min((math.Log(resolved)-prevL)/(edge-prevE), -math.Ln2/edge)
		}
		if !f(prevE, prevL, slope, edge) {
			return
		}
		tailSlope = min(slope, -math.Ln2/edge)
		prevE, prevL = edge, prevL+slope*(edge-prevE)
		if !seen {
			break
		}
	}
	f(prevE, prevL, tailSlope, math.Inf(1))
}

// logShare is the natural log of the share of peaks whose excess is beyond e (e >= 0).
func (t *tail) logShare(e float64) float64 {
	var out float64
	t.segments(func(e0, l0, slope, e1 float64) bool {
		out = l0 + slope*(min(e, e1)-e0)
		return e > e1
	})
	return max(out, math.Log(minShare))
}

// surprise is -log10 of the tail probability of x (x >= 0, in sigmas); 0 up to tailStart.
func (t *tail) surprise(x float64) float64 {
	if !(x > tailStart) {
		return 0
	}
	return -math.Log10(t.rate) - t.logShare(x-tailStart)/ln10
}

// quantile is the x whose surprise is s (at least tailStart).
func (t *tail) quantile(s float64) float64 {
	target := -(s + math.Log10(t.rate)) * ln10 // log share that gives surprise s
	if target >= 0 {
		return tailStart
	}
	target = max(target, math.Log(minShare))
	e := 0.0
	t.segments(func(e0, l0, slope, e1 float64) bool {
		e = e0 + (target-l0)/slope
		return e > e1
	})
	return tailStart + e
}

// update learns from one more point x (x >= 0, in sigmas). Peaks are declustered: a run
// of points beyond tailStart counts as one peak, learnt at its end with the run's highest
// point, so that a long anomaly does not teach the tail about itself while it lasts, and
// statistics that move slowly (levels) are not taken for heavy-tailed.
func (t *tail) update(x float64) {
	t.n = min(t.n+1, tailMemory)
	start := 0.0
	if x > tailStart {
		if t.run == 0 {
			start = 1
		}
		t.run = max(t.run, x)
	} else if t.run > 0 {
		t.learnPeak(t.run)
		t.run = 0
	}
	t.rate += (start - t.rate) / (float64(t.n) + tailPrior)
	t.rate = max(t.rate, 1e-6)
}

func (t *tail) learnPeak(x float64) {
	t.k = min(t.k+1, peakMemory)
	a := 1 / (float64(t.k) + peakPrior)
	e := x - tailStart
	for j, edge := range tailEdges {
		hit := 0.0
		if e > edge {
			hit = 1
		}
		t.beyond[j] += float32(a * (hit - float64(t.beyond[j])))
	}
}
