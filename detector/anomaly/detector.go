package anomaly

import (
	"math"
	"time"
)

// Result is the detector's verdict on one point.
type Result struct {
	// Score is how anomalous the point is, in [0, 1]: a tenth of the surprise in decimal
	// digits, counted per 5 minutes of data, so 0.5 means "a one-in-100,000 event a 5
	// minutes under this series' own learnt noise" (a per-minute series needs 1 in 500,000
	// a point). Scores of different series are comparable. 0 during warm-up.
	Score float64
	// Direction is Up or Down: the side of the expected value the anomaly is on (None when
	// the score is 0).
	Direction Direction
	// Expected is the value the detector expected here (the baseline level plus the
	// seasonal pattern, when one has proved itself), in the units of the input.
	Expected float64
	// Low and High bound the values that the test against the long-term expectation
	// accepts at the configured sensitivity. A run of values inside the band can still
	// score through the level tests.
	Low, High float64
	// Warm is false during the warm-up (the first WarmupPoints points), when Score is 0.
	Warm bool
	// Onset is Score declustered: the evidence that an anomaly starts (or grows) here. It
	// equals Score when the point scores more than 1.2 times every point of the episode
	// it belongs to (an episode opens at a point scoring above 0.3 and closes after 100
	// points in a row at or below it), and 0 otherwise, so that one incident scores once,
	// as the alert column of Replay counts it once. Replay's anomaly_score is Onset.
	Onset float64
}

// Model constants. They are the same for every series; the package documentation explains
// them. Rates are per point unless they say otherwise.
const (
	// WarmupPoints is the number of points a detector learns from before it scores.
	WarmupPoints = 150

	levelRate = 0.2  // fast level: gain on the one-step residual (about 5 points)
	trendRate = 0.01 // damped trend: gain on the one-step residual, times levelRate
	trendDamp = 0.95 // damped trend: decay a point
	levelClip = 3.0  // an isolated residual beyond this many sigmas moves the level this far only
	runUnclip = 3    // after this many such residuals on one side, the level follows fully

	acceptRate  = 0.01    // accepted level: follows the fast level (about 100 points)
	acceptLevel = 4.30103 // a change this surprising (decimal digits; slight on per-minute data) ...
	acceptAfter = 3       // ... this many points in a row is accepted as the new normal
	longRate    = 0.005   // long-term level: follows the fast level (about 200 points) ...
	longSeconds = 43200.0 // ... or about 12 hours, whichever is longer ...
	longClip    = 3.0     // ... by at most this many level spreads a point
	longAdopt   = 200     // an accepted level held this many points becomes the long-term one

	scaleRate  = 0.02  // noise scale of one-step residuals (about 50 points)
	devRate    = 0.005 // spread of the fast level around the long-term level (about 200 points)
	scaleClip  = 4.0   // residuals beyond this many sigmas count this much in the scales
	tailsAfter = 50    // points before the tails start learning

	silenceShare    = 0.5  // a silent count series earns this share of the Poisson evidence (overdispersion)
	recordBlock     = 5000 // records are taken over the last 5000 to 10000 points
	recordDiscount  = 1.0  // decimal digits taken off the 1/n chance of a record
	recordBeyond    = 16.0 // prior: digits of surprise per range beyond the range (Gaussian, n = 10^4)
	recordSpanFloor = 10.0 // the range is taken at least this many noise floors wide
	recordPrior     = 3.0  // weight of the prior mean excess of records, in records
	recordMemory    = 30.0 // records the learnt mean excess remembers
	recordClip      = 5.0  // one record counts at most this many mean excesses
	recordMin       = 500  // points a range must hold before its records are scored
	slowRate        = 0.05 // slow level whose records are also scored (about 20 points)
	slowDiscount    = 1.0  // further digits off its records: its values are not independent

	dayQuantum    = 4.0  // yesterday's deviations are kept in steps of 1/dayQuantum sigma ...
	dayEmpty      = -128 // ... as bytes, this one marking an empty slot
	dayLearnAfter = 20   // 5-minute steps compared before the change's tails learn ...
	dayScoreAfter = 50   // ... and before it is scored
	dayStepsCap   = 1 << 20

	cusumSlack    = 0.5 // CUSUM: the reference value, half the shift (1 sigma of a 5-minute mean) it looks for
	cusumDiscount = 1.5 // digits off its surprise: a CUSUM is a scan over every start point, not one test

	agreeShare = 0.05 // the level or record family agreeing with the strongest adds this share ...
	agreeFloor = 1.0  // ... of its surprise beyond this many digits

	unitSeconds = 300.0 // surprise is counted per 5 minutes: finer series pay log10(unit/dt)
	onsetFloor  = 0.3   // an episode is a stretch of points scoring above this ...
	onsetQuiet  = 100   // ... ended by this many points in a row at or below it;
	onsetRise   = 1.2   // within it, a point is an onset if it scores this much above its peak

	dailySlots        = 288  // time-of-day slots of the daily profile (5 minutes each)
	dailySlot         = 300  // seconds per daily slot
	weeklySlots       = 168  // hour-of-week slots of the weekly correction
	weeklySlot        = 3600 // seconds per weekly slot
	daySeconds        = 86400
	weekSeconds       = 7 * daySeconds
	seasonBaseHalfDay = 43200.0        // seconds: memory of the slow levels the profiles are learnt against
	dailyMemoryDays   = 7.0            // the daily profile forgets over about a week
	weeklyMemoryWeeks = 4.0            // the weekly correction over about four weeks
	gateMemory        = 3 * daySeconds // memory of the errors that choose the seasonal model
	gateOn            = 0.85           // a seasonal model is used once its error is below 85% of the simpler one's
	gateOff           = 0.95           // and dropped again above 95%
)

// The statistics a point is scored on, each with an up and a down tail.
const (
	statStep   = iota // the value against the one-step forecast
	statUsual         // the value against the long-term expectation
	statChange        // the fast level against the accepted level
	statDrift         // the fast level against the long-term level
	numStats
)

// Detector scores one series. It is not safe for concurrent use. The zero value is not
// usable: call New.
type Detector struct {
	cfg Config

	n      uint64  // points observed
	t0, tl int64   // first and last time stamp, Unix nanoseconds
	dt     float64 // typical interval between points, seconds

	level, trend float64 // fast level and damped trend of the deseasonalised series
	accepted     float64 // accepted level: jumps to the fast level when a change is accepted
	long         float64 // long-term level
	sigma        float64 // noise scale of one-step residuals
	devSigma     float64 // scale of the fast level around the long-term level
	mag          float64 // mean |y|, for the noise floor of continuous series
	run          int32   // signed length of the current run of large same-side residuals
	accept       uint32  // points in a row with a very surprising change
	held         uint32  // points since the accepted level last jumped
	silent       float64 // counts expected since the last non-zero count
	values       records // range of the deseasonalised values
	slow         float64 // slow level of the deseasonalised values (gain slowRate)
	slowRange    records // range of the slow level
	peak         float64 // highest score of the current episode (0 outside episodes)
	calm         uint32  // points in a row scoring at most onsetFloor

	season   uint8      // seasonal model in use: 0 none, 1 daily, 2 daily and weekly
	sbase    [3]float64 // slow levels of the series less season model k
	serr     [3]float64 // mean absolute error of sbase[k] + season k
	gateTime float64    // seconds of error measurement so far

	tails    [2 * numStats]tail // [stat*2 + side], side 0 up, 1 down
	ctxs     contexts           // novelty of the contexts of the deseasonalised values
	ctxTail  tail               // upper tail of the context novelty
	dayTail  [2]tail            // tails of the change since yesterday, up and down
	dayScale float64            // mean size of the change since yesterday (usual sigmas)
	daySteps uint32             // 5-minute steps compared with yesterday (capped)
	yday     [dailySlots]int8   // yesterday's deviation from the usual value per 5-minute slot
	daily    [dailySlots]float32
	weekly   [weeklySlots]float32
	cusum    [2]float64 // two-sided CUSUM of the one-step residuals' 5-minute means, up and down
	cusSum   float64    // sum of the clipped one-step residuals since the last 5-minute step
	cusTail  [2]tail    // tails of the CUSUM, up and down
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
	d.ctxs, d.ctxTail = newContexts(), newTail()
	d.dayTail = [2]tail{newTail(), newTail()}
	d.cusTail = [2]tail{newTail(), newTail()}
	for i := range d.yday {
		d.yday[i] = dayEmpty
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

// unitPenalty is the surprise, in decimal digits, that a point pays for the series being
// sampled more often than every unitSeconds: a per-minute series has five chances a
// 5-minute interval to show a one-in-a-million point, so its points pay log10(5). Scores
// thus mean the same false-alert rate per unit of time for any interval up to 5 minutes;
// coarser series are not credited.
func (d *Detector) unitPenalty() float64 {
	if d.dt <= 0 || d.dt >= unitSeconds {
		return 0
	}
	return math.Log10(unitSeconds / d.dt)
}

// slot returns the slot of a circular profile of n slots of width w seconds that holds
// the time sec (seconds into the cycle).
func slot(sec float64, w float64, n int) int {
	return min(max(int(sec/w), 0), n-1)
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
		d.level, d.accepted, d.long, d.mag = y, y, y, math.Abs(y)
		d.values = newRecords(y)
		d.slow, d.slowRange = y, newRecords(y)
		d.sbase = [3]float64{y, y, y}
		return Result{Expected: v, Low: v, High: v}
	}
	d.n++
	gap := max(float64(tn-d.tl)/1e9, 0)
	if gap > 0 {
		d.dt += (min(gap, daySeconds) - d.dt) * max(1/float64(d.n-1), 0.01)
	}
	d.tl = max(d.tl, tn)

	// Seasonal phase from the wall clock.
	_, off := t.Zone()
	wall := float64(t.Unix()+int64(off)) + float64(t.Nanosecond())/1e9
	sow := math.Mod(wall+4*daySeconds, weekSeconds) // 1970-01-01 was a Thursday: 0 = Sunday 00:00
	if sow < 0 {
		sow += weekSeconds
	}
	ds := slot(math.Mod(sow, daySeconds), dailySlot, dailySlots)
	ws := slot(sow, weeklySlot, weeklySlots)
	sd, sw := float64(d.daily[ds]), float64(d.weekly[ws])
	seas := [3]float64{0, sd, sd + sw}
	act := seas[d.season]

	// Residuals against the one-step forecast and the long-term expectation, scored
	// before the point is learnt.
	sig := max(d.sigma, d.floor())
	devFloor := sig * math.Sqrt(levelRate/(2-levelRate))
	sigDev := max(d.devSigma, devFloor)
	exp := d.long + act // the usual value here
	if d.cfg.Kind == Count {
		if v == 0 {
			d.silent += d.inverse(exp)
		} else {
			d.silent = 0
		}
	}
	var x [numStats]float64
	r := y - (d.level + trendDamp*d.trend + act)
	x[statStep] = r / sig
	x[statUsual] = (y - exp) / math.Hypot(sig, sigDev)

	// Fast level and trend (Holt, error-correction form), robust to isolated outliers.
	switch {
	case x[statStep] > levelClip:
		d.run = max(d.run, 0) + 1
	case x[statStep] < -levelClip:
		d.run = min(d.run, 0) - 1
	default:
		d.run = 0
	}
	rc := r
	if d.run < runUnclip && d.run > -runUnclip && d.n > 30 {
		rc = clamp(r, levelClip*sig)
	}
	d.level += trendDamp*d.trend + levelRate*rc
	d.trend = trendDamp*d.trend + levelRate*trendRate*rc
	x[statChange] = (d.level - d.accepted) / sigDev
	x[statDrift] = (d.level - d.long) / sigDev

	// Records: the deseasonalised value, and its slow level, beyond their ranges. The slow
	// level finds drifts (a latency creeping up for hours) that no single point shows; its
	// successive values are far from independent, so its records count slowDiscount
	// digits less.
	yr := y - act
	span := recordSpanFloor * d.floor()
	d.slow += max(1/float64(d.n-1), slowRate) * (yr - d.slow)
	record, recSide := 0.0, 0.0
	if d.n > WarmupPoints {
		record, recSide = d.values.surprise(yr, span)
		if s, side := d.slowRange.surprise(d.slow, span); s-slowDiscount > record {
			record, recSide = s-slowDiscount, side
		}
	}
	d.values.add(yr, span, d.n > recordBlock)
	d.slowRange.add(d.slow, span, d.n > recordBlock)

	// Contexts: every 5 minutes (every point of a coarser series), the mean deseasonalised
	// value quantised within its range, and how many of the recent sequences of levels
	// are new. Stepping in time, not points, keeps the novelty of a per-minute series as
	// rare a 5 minutes as that of a 5-minute one (surprise is counted per unit of time).
	lo, hi := min(d.values.now[0], d.values.before[0]), max(d.values.now[1], d.values.before[1])
	d.ctxs.sum += yr
	d.ctxs.cnt++
	d.ctxs.secs += gap
	d.cusSum += clamp(x[statStep], scaleClip)
	xc, fresh, novelty := 0.0, false, 0.0
	xday, daily := 0.0, 0.0 // change since yesterday (in its scales) and its surprise
	if d.ctxs.secs >= unitSeconds {
		xc = max(d.ctxs.observe(ctxLevel(d.ctxs.sum/d.ctxs.cnt, lo, hi, span)), 0)
		xday, daily = d.sinceYesterday((d.ctxs.sum/d.ctxs.cnt-d.long)/math.Hypot(sig, sigDev), ds)
		z := d.cusSum / math.Sqrt(d.ctxs.cnt) // the 5-minute mean residual, in its own sigmas
		d.cusum[0] = max(0, d.cusum[0]+z-cusumSlack)
		d.cusum[1] = max(0, d.cusum[1]-z-cusumSlack)
		d.ctxs.sum, d.ctxs.cnt, d.ctxs.secs, d.cusSum = 0, 0, 0, 0
		fresh = true
		novelty = d.ctxTail.surprise(xc)
	}

	var surprise [numStats]float64
	for s := range x {
		if x[s] >= 0 {
			surprise[s] = d.tails[2*s].surprise(x[s])
		} else {
			surprise[s] = d.tails[2*s+1].surprise(-x[s])
		}
	}
	cusum, cusSide := 0.0, 0.0
	if d.n > tailsAfter {
		if s := d.cusTail[0].surprise(d.cusum[0]); s > 0 {
			cusum, cusSide = s, 1
		}
		if s := d.cusTail[1].surprise(d.cusum[1]); s > cusum {
			cusum, cusSide = s, -1
		}
		cusum = max(cusum-cusumDiscount, 0)
	}
	res := Result{}
	if d.n > WarmupPoints {
		res.Warm = true
		// A point is anomalous if neither the recent nor the usual behaviour explains it;
		// the level, if it has moved away from both the accepted and the long-term level.
		// A point (or level) between the recent and the usual one is explained by a
		// partial return to normal: it only counts when both see it on the same side.
		point := both(surprise[statStep], surprise[statUsual], x[statStep], x[statUsual])
		lvl := both(surprise[statChange], surprise[statDrift], x[statChange], x[statDrift])
		// A break of the daily pattern counts when the point is unusual too.
		yesterday := both(daily, surprise[statUsual], xday, x[statUsual])
		best, side := agree([6]float64{point, lvl, record, novelty, yesterday, cusum}, [6]float64{x[statUsual], x[statDrift], recSide, x[statUsual], xday, cusSide})
		if silence := d.silent * math.Log10E * silenceShare; silence > best {
			best, side = silence, -1
		}
		best -= math.Log10(2) + d.unitPenalty()
		if best > 0 {
			res.Score = min(best/10, 1)
			res.Direction = Up
			if side < 0 {
				res.Direction = Down
			}
		}
		if surprise[statChange] >= acceptLevel {
			d.accept++
		} else {
			d.accept = 0
		}
		// Decluster: within an episode only a clear new high is an onset.
		if res.Score > onsetRise*d.peak {
			res.Onset = res.Score
		}
		if res.Score > onsetFloor {
			d.peak, d.calm = max(d.peak, res.Score), 0
		} else if d.calm++; d.calm >= onsetQuiet {
			d.peak = 0
		}
	}
	thr := 10*d.cfg.Sensitivity.Threshold() + math.Log10(2) + d.unitPenalty()
	sigUsual := math.Hypot(sig, sigDev)
	res.Expected = d.inverse(exp)
	res.High = d.inverse(exp + d.tails[2*statUsual].quantile(thr)*sigUsual)
	res.Low = d.inverse(exp - d.tails[2*statUsual+1].quantile(thr)*sigUsual)

	// Learn. The tails learn once the scales have settled.
	for s := range x {
		if d.n <= tailsAfter {
			break
		}
		d.tails[2*s].update(max(x[s], 0))
		d.tails[2*s+1].update(max(-x[s], 0))
	}
	if d.n > tailsAfter && fresh {
		d.ctxTail.update(xc)
		d.cusTail[0].update(d.cusum[0])
		d.cusTail[1].update(d.cusum[1])
	}
	early := d.n <= 30
	a := max(1/float64(d.n-1), scaleRate)
	e := math.Abs(r) * 1.2533
	if !early && d.run < runUnclip && d.run > -runUnclip {
		e = min(e, scaleClip*sig)
	}
	d.sigma += a * (e - d.sigma)
	dev := d.level - d.long
	ed := math.Abs(dev) * 1.2533
	if !early {
		ed = min(ed, scaleClip*sigDev)
	}
	d.devSigma += max(1/float64(d.n-1), devRate) * (ed - d.devSigma)
	d.mag += max(1/float64(d.n-1), 0.01) * (math.Abs(y) - d.mag)
	d.accepted += max(1/float64(d.n-1), acceptRate) * (d.level - d.accepted)
	lr := longRate
	if d.dt > 0 {
		lr = min(lr, d.dt/longSeconds) // about 200 points or 12 hours, whichever is longer
	}
	d.long += max(1/float64(d.n-1), lr) * clamp(dev, longClip*sigDev)
	d.held++
	if d.accept >= acceptAfter {
		d.accepted, d.accept, d.held = d.level, 0, 0
		d.cusum = [2]float64{} // the change is the new normal: watch for the next one
	}
	if d.held == longAdopt {
		d.long = d.accepted
	}

	d.learnSeason(y, gap, seas, ds, ws)
	return res
}

// learnSeason updates the slow levels, the daily profile and the weekly correction, and
// decides which seasonal model is in use.
func (d *Detector) learnSeason(y, gap float64, seas [3]float64, ds, ws int) {
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
			d.serr[k] += a * (math.Abs(e[k]) - d.serr[k])
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
			d.accepted, d.long = d.level, d.level
			d.season = next
			// The statistics change their nature: learn their tails afresh.
			for i := range d.tails {
				d.tails[i] = newTail()
			}
			d.ctxs, d.ctxTail = newContexts(), newTail()
			d.cusum, d.cusSum, d.cusTail = [2]float64{}, 0, [2]tail{newTail(), newTail()}
			// Deseasonalised values are on another scale: their ranges start afresh.
			yr := y - seas[next]
			d.values = newRecords(yr)
		}
	}
	ab := step / seasonBaseHalfDay
	for k := range d.sbase {
		d.sbase[k] += ab * e[k]
	}
	gd := step / dailySlot / min(math.Floor(span/daySeconds)+1, dailyMemoryDays)
	d.daily[ds] += float32(gd * e[1])
	if span >= weekSeconds {
		gw := min(gap, weeklySlot) / weeklySlot / min(math.Floor(span/weekSeconds), weeklyMemoryWeeks)
		d.weekly[ws] += float32(gw * e[2])
	}
}

// records keeps the range of a series over the last recordBlock to 2*recordBlock points,
// in two blocks, and how far records usually go beyond it.
type records struct {
	now, before [2]float64 // lowest and highest value of the current and the last block
	n           uint32     // points in the current block
	seen        uint32     // points since the range started, capped at 2*recordBlock
	gap         [2]float64 // mean excess of records below and above the range, in ranges
	k           [2]float64 // records seen below and above (capped at recordMemory)
}

func newRecords(v float64) records {
	g := 1 / (recordBeyond * ln10)
	return records{now: [2]float64{v, v}, before: [2]float64{v, v}, gap: [2]float64{g, g}, seen: 1}
}

// beyond says whether v is beyond the range, on which side (0 below, 1 above) and by how
// many ranges.
func (r *records) beyond(v, minSpan float64) (bool, int, float64) {
	lo, hi := min(r.now[0], r.before[0]), max(r.now[1], r.before[1])
	span := max(hi-lo, minSpan)
	switch {
	case v > hi:
		return true, 1, (v - hi) / span
	case v < lo:
		return true, 0, (lo - v) / span
	}
	return false, 0, 0
}

// surprise scores v against the range, in decimal digits, and gives its side (1 above,
// -1 below, 0 inside). Beyond the range of the last n points the chance is about 1/n for
// exchangeable points (less recordDiscount digits, so that a record by a hair does not
// alert), times an exponential in how far beyond, with the series' own mean excess of
// records. A range that holds fewer than recordMin points scores nothing. minSpan is the
// narrowest range.
func (r *records) surprise(v float64, minSpan float64) (float64, float64) {
	if r.seen < recordMin {
		return 0, 0
	}
	out, side, e := r.beyond(v, minSpan)
	if !out {
		return 0, 0
	}
	base := math.Log10(float64(min(r.seen-1, recordBlock+r.n))) - recordDiscount
	return base + e/(r.gap[side]*ln10), float64(2*side - 1)
}

// add takes v into the range, learning how far beyond it v went if it was a record and
// learn is set (once the detector has seen a full block of points, whether or not the
// range has restarted since).
func (r *records) add(v float64, minSpan float64, learn bool) {
	if out, side, e := r.beyond(v, minSpan); out && learn {
		r.k[side] = min(r.k[side]+1, recordMemory)
		r.gap[side] += (min(e, recordClip*r.gap[side]) - r.gap[side]) / (r.k[side] + recordPrior)
	}
	r.now[0], r.now[1] = min(r.now[0], v), max(r.now[1], v)
	r.seen = min(r.seen+1, 2*recordBlock)
	if r.n++; r.n >= recordBlock {
		r.before, r.now, r.n = r.now, [2]float64{v, v}, 0
	}
}

// agree scores a point on its six families of tests (point, level, record, context,
// daily break, CUSUM), given their surprises and the sides (signs) they see it on: the
// strongest one's surprise, plus agreeShare of what each other family but the point one,
// when it is not the strongest and sees the point on the same side, says beyond
// agreeFloor digits. The families are far from independent (a spike is a point and often a record),
// so agreement earns a small share, not the sum; but a point that only one family finds
// unusual is the commonest false alarm, and one that persists (the level), goes where the
// series has not been (a record) or makes a pattern it has not shown lately (new
// contexts) is more often a real change. The point family adds nothing to the others: the
// fast level moved because of the points. It returns the score in digits and the side.
func agree(s, side [6]float64) (float64, float64) {
	k := 0
	for i := 1; i < len(s); i++ {
		if s[i] > s[k] {
			k = i
		}
	}
	best := s[k]
	for i := 1; i < len(s); i++ { // every family but the point one
		if i != k && s[i] > agreeFloor && (side[i] > 0) == (side[k] > 0) {
			best += agreeShare * (s[i] - agreeFloor)
		}
	}
	return best, side[k]
}

// sinceYesterday compares dev, the deviation of the last 5 minutes from the usual value
// (in sigmas of the usual test), with the deviation stored in slot ds a day ago, and stores
// dev there. It returns the change in its learnt scale and its surprise (0 while the
// tails are young or the slot is empty). Deviations are kept in quarter sigmas, as bytes.
func (d *Detector) sinceYesterday(dev float64, ds int) (float64, float64) {
	x, s := 0.0, 0.0
	if prev := d.yday[ds]; prev != dayEmpty {
		diff := dev - float64(prev)/dayQuantum
		sc := max(d.dayScale, 1/dayQuantum)
		x = diff / sc
		side := 0
		if x < 0 {
			side = 1
		}
		if d.daySteps > dayScoreAfter {
			s = d.dayTail[side].surprise(math.Abs(x))
		}
		d.daySteps = min(d.daySteps+1, dayStepsCap)
		e := min(math.Abs(diff)*1.2533, scaleClip*sc)
		d.dayScale += max(1/float64(d.daySteps), scaleRate) * (e - d.dayScale)
		if d.daySteps > dayLearnAfter {
			d.dayTail[0].update(max(x, 0))
			d.dayTail[1].update(max(-x, 0))
		}
	}
	d.yday[ds] = int8(max(-127, min(127, math.Round(dev*dayQuantum))))
	return x, s
}

// both is the smaller of two surprises if their statistics x and y are on the same side,
// and 0 if not.
func both(sx, sy, x, y float64) float64 {
	if (x > 0) != (y > 0) {
		return 0
	}
	return min(sx, sy)
}
