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
	beyond [tailBins]float64 // share of peaks beyond each edge
	n      float64           // points seen (capped at tailMemory)
	k      float64           // peaks seen (capped at peakMemory)
	run    float64           // highest point of the current run beyond tailStart, 0 outside
}

func newTail() tail {
	t := tail{rate: tailRate0}
	for j, e := range tailEdges {
		t.beyond[j] = max(math.Exp(-e/tailExcess0), minShare)
	}
	return t
}

// logShare is the natural log of the share of peaks whose excess is beyond e (e >= 0).
// Between the origin and the edges the model has seen peaks beyond (a share of at least
// half a peak in its memory) the log share is interpolated linearly; beyond the last such
// edge it falls on as an exponential with the slope of the last segment, at least halving
// per doubling of the excess.
func (t *tail) logShare(e float64) float64 {
	resolved := 0.5 / (t.k + peakPrior)
	prevE, prevL := 0.0, 0.0
	slope := -1 / tailExcess0
	for j, edge := range tailEdges {
		l := math.Log(t.beyond[j])
		if t.beyond[j] < resolved {
			// No peak seen beyond this edge: its share is at most about half a peak
			// in the memory. Fall to that bound, and on with the same slope.
			l = max(l, math.Log(resolved))
			slope = min((l-prevL)/(edge-prevE), -math.Ln2/edge)
			if e <= edge {
				return prevL + slope*(e-prevE)
			}
			prevE, prevL = edge, l
			break
		}
		if e <= edge {
			return prevL + (l-prevL)*(e-prevE)/(edge-prevE)
		}
		slope = min((l-prevL)/(edge-prevE), -math.Ln2/edge)
		prevE, prevL = edge, l
	}
	return max(prevL+slope*(e-prevE), math.Log(minShare))
}

// surprise is -log10 of the tail probability of x (x >= 0, in sigmas); 0 up to tailStart.
func (t *tail) surprise(x float64) float64 {
	if !(x > tailStart) {
		return 0
	}
	return -math.Log10(t.rate) - t.logShare(x-tailStart)/ln10
}

// quantile is the x whose surprise is s (at least tailStart), found by bisection.
func (t *tail) quantile(s float64) float64 {
	if t.surprise(tailStart+1e-9) >= s {
		return tailStart
	}
	lo, hi := 0.0, 1.0
	for t.surprise(tailStart+hi) < s && hi < 1e6 {
		lo, hi = hi, 2*hi
	}
	for range 40 {
		mid := (lo + hi) / 2
		if t.surprise(tailStart+mid) < s {
			lo = mid
		} else {
			hi = mid
		}
	}
	return tailStart + hi
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
	t.rate += (start - t.rate) / (t.n + tailPrior)
	t.rate = max(t.rate, 1e-6)
}

func (t *tail) learnPeak(x float64) {
	t.k = min(t.k+1, peakMemory)
	a := 1 / (t.k + peakPrior)
	e := x - tailStart
	for j, edge := range tailEdges {
		hit := 0.0
		if e > edge {
			hit = 1
		}
		t.beyond[j] += a * (hit - t.beyond[j])
	}
}
