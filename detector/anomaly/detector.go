package anomaly

import (
	"math"
	"time"
)

// Result is the detector's verdict on one point.
type Result struct {
	// Score is how anomalous the point is, in [0, 1]: a tenth of the surprise in decimal
	// digits, so 0.5 means "a one-in-100,000 event under this series' own learnt noise".
	// Scores of different series are comparable. 0 during warm-up.
	Score float64
	// Direction is Up or Down: the side of the expected value the anomaly is on (None when
	// the score is 0).
	Direction Direction
	// Expected is the value the detector expected here (the baseline level plus the
	// seasonal pattern, when one has proved itself), in the units of the input.
	Expected float64
	// Low and High bound the values that would not be anomalous at the configured
	// sensitivity as a single point. A run of values inside the band can still score
	// through the sustained-deviation test.
	Low, High float64
	// Warm is false during the warm-up (the first WarmupPoints points), when Score is 0.
	Warm bool
}

// Model constants. They are the same for every series; the package documentation explains
// each one. Rates are per point unless they say otherwise.
const (
	// WarmupPoints is the number of points a detector learns from before it scores.
	WarmupPoints = 150

	dailySlots  = 96   // time-of-day slots of the daily profile (15 minutes each)
	dailySlot   = 900  // seconds per daily slot
	weeklySlots = 168  // hour-of-week slots of the weekly correction
	weeklySlot  = 3600 // seconds per weekly slot
	daySeconds  = 86400
	weekSeconds = 7 * daySeconds

	levelRate = 0.2  // fast level: gain on the one-step residual
	trendRate = 0.01 // damped trend: gain on the one-step residual (times levelRate)
	trendDamp = 0.95 // damped trend: decay per point
	levelClip = 3.0  // one-step residuals beyond this many sigmas move the level this far only

	baseRate  = 0.01 // baseline level (the expectation sustained deviations are measured from)
	scaleRate = 0.02 // noise scale of one-step residuals
	scaleClip = 4.0  // residuals beyond this many sigmas count this much in the scale
	devRate   = 0.005

	seasonBaseHalfDay = 43200.0 // seconds: memory of the slow levels the seasonal profiles are learnt against
	dailyMemoryDays   = 7.0     // the daily profile forgets over about a week
	weeklyMemoryWeeks = 4.0     // the weekly correction over about four weeks
	gateMemory        = daySeconds
	gateOn            = 0.85 // a seasonal model is used once its error is below 85% of the simpler one's
	gateOff           = 0.95 // and dropped again above 95%

	acceptSurprise = 4.0 // a level deviation this surprising (decimal digits) ...
	acceptAfter    = 30  // ... for this many points in a row is accepted as the new normal

	tailStart    = 2.0    // peaks over this many sigmas feed the tail model
	tailRate0    = 0.0228 // prior: share of points beyond tailStart on one side (Gaussian)
	tailExcess0  = 0.45   // prior: mean excess beyond tailStart, in sigmas
	tailPrior    = 200.0  // weight of the prior, in points
	tailMemory   = 5000.0 // points the tail model remembers
	excessPrior  = 10.0   // weight of the excess prior, in peaks
	excessMemory = 200.0  // peaks the excess estimate remembers
	excessClip   = 4.0    // a peak counts at most this many mean excesses
)

const (
	statPoint = iota // one-step residual, up side
	statLevel        // deviation of the fast level from the baseline
	numStats
)

const ln10 = 2.302585092994046

// tail is a peaks-over-threshold model of one side of one statistic: the share of points
// beyond tailStart and the mean excess of those beyond it, an exponential tail.
type tail struct {
	rate   float64 // share of points beyond tailStart
	excess float64 // mean excess beyond tailStart
	n      float64 // points seen (capped at tailMemory)
	k      float64 // peaks seen (capped at excessMemory)
}

func newTail() tail { return tail{rate: tailRate0, excess: tailExcess0} }

// surprise is -log10 of the tail probability of x (x >= 0, in sigmas).
func (t *tail) surprise(x float64) float64 {
	if !(x > tailStart) {
		return 0
	}
	return -math.Log10(t.rate) + (x-tailStart)/(t.excess*ln10)
}

// quantile is the x whose surprise is s.
func (t *tail) quantile(s float64) float64 {
	x := tailStart + (s+math.Log10(t.rate))*t.excess*ln10
	return max(x, tailStart)
}

func (t *tail) update(x float64) {
	t.n = min(t.n+1, tailMemory)
	peak := 0.0
	if x > tailStart {
		peak = 1
	}
	t.rate += (peak - t.rate) / (t.n + tailPrior)
	t.rate = max(t.rate, 1e-6)
	if peak == 1 {
		t.k = min(t.k+1, excessMemory)
		e := min(x-tailStart, excessClip*t.excess)
		t.excess += (e - t.excess) / (t.k + excessPrior)
		t.excess = max(t.excess, 0.05)
	}
}

// Detector scores one series. It is not safe for concurrent use. The zero value is not
// usable: call New.
type Detector struct {
	cfg Config

	n      uint64  // points observed
	t0, tl int64   // first and last time stamp, Unix nanoseconds
	dt     float64 // typical interval between points, seconds

	level, trend float64 // fast level and damped trend of the deseasonalised series
	base         float64 // baseline level of the deseasonalised series
	sigma        float64 // noise scale of one-step residuals
	devSigma     float64 // scale of level - base
	mag          float64 // mean |y|, for the noise floor of continuous series
	run          int32   // signed length of the current run of large same-side residuals
	accept       uint32  // points in a row with a very surprising level deviation

	season   uint8      // seasonal model in use: 0 none, 1 daily, 2 daily and weekly
	sbase    [3]float64 // slow levels of the series less season model k
	serr     [3]float64 // mean absolute error of sbase[k] + season k
	gateTime float64    // seconds of error measurement so far

	tails  [2 * numStats]tail // [stat*2 + side], side 0 up, 1 down
	daily  [dailySlots]float32
	weekly [weeklySlots]float32
}

// New returns a detector for one series. It panics if cfg holds an unknown Kind or
// Sensitivity (constants of this package never are).
func New(cfg Config) *Detector {
	if err := cfg.validate(); err != nil {
		panic(err)
	}
	d := &Detector{cfg: cfg}
	for i := range d.tails {
		d.tails[i] = newTail()
	}
	return d
}

// Config returns the configuration the detector was made with.
func (d *Detector) Config() Config { return d.cfg }

// Points returns the number of points observed.
func (d *Detector) Points() uint64 { return d.n }

func (d *Detector) transform(v float64) float64 {
	if d.cfg.Kind == Count {
		return 2 * math.Sqrt(max(v, 0)+0.375)
	}
	return v
}

func (d *Detector) inverse(y float64) float64 {
	if d.cfg.Kind == Count {
		if y <= 0 {
			return 0
		}
		return max(y*y/4-0.375, 0)
	}
	return y
}

// floor is the smallest noise scale: Poisson noise for counts, a thousandth of the
// series' magnitude for continuous values.
func (d *Detector) floor() float64 {
	if d.cfg.Kind == Count {
		return 1
	}
	return max(1e-3*d.mag, 1e-9)
}

// interp reads a circular profile at position pos (in slots, slot centres at k+0.5) and
// returns the value and the two slots with their weights.
func interp(p []float32, pos float64) (v float64, i0, i1 int, w1 float64) {
	n := len(p)
	x := pos - 0.5
	f := math.Floor(x)
	w1 = x - f
	i0 = int(f) % n
	if i0 < 0 {
		i0 += n
	}
	i1 = i0 + 1
	if i1 == n {
		i1 = 0
	}
	v = (1-w1)*float64(p[i0]) + w1*float64(p[i1])
	return
}

func clamp(x, lim float64) float64 { return max(-lim, min(lim, x)) }

// Observe feeds the value v observed at time t and returns its score. Points should come
// in time order; the seasonal phase is taken from t's wall clock in t's location (pass
// t.In(loc) to follow a local day). NaN and infinite values are ignored: the result is
// the zero Result and the state does not change.
func (d *Detector) Observe(t time.Time, v float64) Result {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return Result{}
	}
	y := d.transform(v)
	tn := t.UnixNano()
	if d.n == 0 {
		d.n = 1
		d.t0, d.tl = tn, tn
		d.level, d.base, d.mag = y, y, math.Abs(y)
		d.sbase = [3]float64{y, y, y}
		return Result{Expected: v, Low: v, High: v}
	}
	d.n++
	gap := float64(tn-d.tl) / 1e9
	if gap < 0 {
		gap = 0
	}
	if gap > 0 {
		g := min(gap, daySeconds)
		if d.dt == 0 {
			d.dt = g
		} else {
			d.dt += (g - d.dt) * max(1/float64(d.n), 0.01)
		}
	}
	if tn > d.tl {
		d.tl = tn
	}

	// Seasonal phase from the wall clock.
	_, off := t.Zone()
	wall := float64(t.Unix()+int64(off)) + float64(t.Nanosecond())/1e9
	sow := math.Mod(wall+4*daySeconds, weekSeconds) // 1970-01-01 was a Thursday: 0 = Sunday 00:00
	sod := math.Mod(sow, daySeconds)
	sd, d0, d1, dw := interp(d.daily[:], sod/dailySlot)
	sw, w0, w1, ww := interp(d.weekly[:], sow/weeklySlot)
	seas := [3]float64{0, sd, sd + sw}
	act := seas[d.season]

	// Point statistic: the one-step residual.
	sig := max(d.sigma, d.floor())
	pred := d.level + trendDamp*d.trend + act
	r := y - pred
	z := r / sig

	// Fast level and trend (Holt, error-correction form), robust to isolated outliers.
	switch {
	case z > 2:
		d.run = max(d.run, 0) + 1
	case z < -2:
		d.run = min(d.run, 0) - 1
	default:
		d.run = 0
	}
	rc := r
	if d.run < 3 && d.run > -3 && d.n > 30 {
		rc = clamp(r, levelClip*sig)
	}
	d.level += trendDamp*d.trend + levelRate*rc
	d.trend = trendDamp*d.trend + levelRate*trendRate*rc

	// Level statistic: how far the fast level is from the baseline.
	dev := d.level - d.base
	devFloor := sig * math.Sqrt(levelRate/(2-levelRate))
	zl := dev / max(d.devSigma, devFloor)

	res := Result{}
	if d.n > WarmupPoints {
		res.Warm = true
		best, dir := 0.0, None
		for s, x := range [numStats]float64{z, zl} {
			side, mag := 0, x
			if x < 0 {
				side, mag = 1, -x
			}
			if sp := d.tails[2*s+side].surprise(mag); sp > best {
				best = sp
				dir = Up
				if side == 1 {
					dir = Down
				}
			}
		}
		best -= math.Log10(numStats)
		if best > 0 {
			res.Score = min(best/10, 1)
			res.Direction = dir
		}
		if d.tails[2*statLevel].surprise(math.Abs(zl)) >= acceptSurprise {
			d.accept++
		} else {
			d.accept = 0
		}
	}
	exp := d.base + act
	thr := 10*d.cfg.Sensitivity.Threshold() + math.Log10(numStats)
	res.Expected = d.inverse(exp)
	res.High = d.inverse(exp + d.tails[2*statPoint].quantile(thr)*sig)
	res.Low = d.inverse(exp - d.tails[2*statPoint+1].quantile(thr)*sig)

	// Learn.
	for s, x := range [numStats]float64{z, zl} {
		d.tails[2*s].update(max(x, 0))
		d.tails[2*s+1].update(max(-x, 0))
	}
	a := max(1/float64(d.n), scaleRate)
	e := math.Abs(r) * 1.2533
	if d.n > 30 {
		e = min(e, scaleClip*sig)
	}
	d.sigma += a * (e - d.sigma)
	ed := math.Abs(dev) * 1.2533
	if d.n > 30 {
		ed = min(ed, scaleClip*max(d.devSigma, devFloor))
	}
	d.devSigma += max(1/float64(d.n), devRate) * (ed - d.devSigma)
	d.mag += max(1/float64(d.n), 0.01) * (math.Abs(y) - d.mag)
	d.base += max(1/float64(d.n), baseRate) * (d.level - d.base)
	if d.accept >= acceptAfter {
		d.base = d.level
		d.accept = 0
	}

	d.learnSeason(y, gap, seas, d0, d1, dw, w0, w1, ww)
	return res
}

// learnSeason updates the slow levels, the daily profile and the weekly correction, and
// decides which seasonal model is in use.
func (d *Detector) learnSeason(y, gap float64, seas [3]float64, d0, d1 int, dw float64, w0, w1 int, ww float64) {
	span := float64(d.tl-d.t0) / 1e9
	step := min(gap, dailySlot)
	if step == 0 {
		return
	}
	var e [3]float64
	for k := range e {
		e[k] = y - d.sbase[k] - seas[k]
		lim := 4 * 1.25 * d.serr[k]
		if d.gateTime > 0 {
			e[k] = clamp(e[k], max(lim, d.floor()))
		}
	}
	// Errors of the three models, measured from the second day on.
	if span >= daySeconds {
		d.gateTime += step
		a := max(step/d.gateTime, step/gateMemory)
		for k := range e {
			d.serr[k] += a * (math.Abs(y-d.sbase[k]-seas[k]) - d.serr[k])
		}
		next := d.season
		switch d.season {
		case 0:
			if d.gateTime >= daySeconds && d.serr[1] < gateOn*d.serr[0] {
				next = 1
			}
		case 1:
			if d.serr[1] > gateOff*d.serr[0] {
				next = 0
			} else if span >= 2*weekSeconds && d.serr[2] < gateOn*d.serr[1] {
				next = 2
			}
		case 2:
			if d.serr[2] > gateOff*d.serr[1] {
				next = 1
			}
		}
		if next != d.season {
			// Carry the fast level over to the new deseasonalised scale and start the
			// baseline afresh from it.
			d.level += seas[d.season] - seas[next]
			d.base = d.level
			d.season = next
		}
	}
	ab := step / seasonBaseHalfDay
	for k := range d.sbase {
		d.sbase[k] += ab * e[k]
	}
	gd := step / dailySlot / min(math.Floor(span/daySeconds)+1, dailyMemoryDays)
	d.daily[d0] += float32(gd * (1 - dw) * e[1])
	d.daily[d1] += float32(gd * dw * e[1])
	if span >= weekSeconds {
		gw := min(gap, weeklySlot) / weeklySlot / min(math.Floor(span/weekSeconds), weeklyMemoryWeeks)
		d.weekly[w0] += float32(gw * (1 - ww) * e[2])
		d.weekly[w1] += float32(gw * ww * e[2])
	}
}
