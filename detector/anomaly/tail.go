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
	peakClip    = 20.0   // one peak counts at most this many mean excesses
	maxShape    = 0.45   // heaviest tail the model will fit
)

const ln10 = 2.302585092994046

// tail models one side of one statistic (in sigmas) beyond tailStart: the share of points
// beyond it (rate) and a generalised Pareto distribution of how far beyond, fitted by the
// method of moments on the excesses (mean m1, mean square m2). Light tails fit an
// exponential; series with spikes of hundreds of sigmas fit a heavy tail and stop
// alarming on every spike.
type tail struct {
	rate   float64 // share of points beyond tailStart
	m1, m2 float64 // mean and mean square of the excess of peaks
	n      float64 // points seen (capped at tailMemory)
	k      float64 // peaks seen (capped at peakMemory)
}

func newTail() tail {
	return tail{rate: tailRate0, m1: tailExcess0, m2: 2 * tailExcess0 * tailExcess0}
}

// gpd returns the shape and scale of the excess distribution.
func (t *tail) gpd() (shape, scale float64) {
	v := max(t.m2-t.m1*t.m1, 1e-12)
	r := t.m1 * t.m1 / v
	shape = min(max(0.5*(1-r), 0), maxShape)
	scale = t.m1 * (1 - shape)
	return shape, max(scale, 1e-3)
}

// surprise is -log10 of the tail probability of x (x >= 0, in sigmas); 0 up to tailStart.
func (t *tail) surprise(x float64) float64 {
	if !(x > tailStart) {
		return 0
	}
	e := x - tailStart
	shape, scale := t.gpd()
	if shape < 1e-6 {
		return -math.Log10(t.rate) + e/(scale*ln10)
	}
	return -math.Log10(t.rate) + math.Log1p(shape*e/scale)/(shape*ln10)
}

// quantile is the x whose surprise is s (at least tailStart).
func (t *tail) quantile(s float64) float64 {
	l := (s + math.Log10(t.rate)) * ln10 // -log of the conditional tail probability
	if l <= 0 {
		return tailStart
	}
	shape, scale := t.gpd()
	if shape < 1e-6 {
		return tailStart + scale*l
	}
	return tailStart + scale/shape*math.Expm1(min(shape*l, 700))
}

// update learns from one more point x (x >= 0, in sigmas).
func (t *tail) update(x float64) {
	t.n = min(t.n+1, tailMemory)
	peak := 0.0
	if x > tailStart {
		peak = 1
	}
	t.rate += (peak - t.rate) / (t.n + tailPrior)
	t.rate = max(t.rate, 1e-6)
	if peak == 1 {
		t.k = min(t.k+1, peakMemory)
		e := min(x-tailStart, peakClip*t.m1)
		a := 1 / (t.k + peakPrior)
		t.m1 += a * (e - t.m1)
		t.m2 += a * (e*e - t.m2)
		t.m1 = max(t.m1, 0.01)
	}
}
