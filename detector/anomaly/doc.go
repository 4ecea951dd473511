// Package anomaly is Vigil's streaming anomaly detector: one Detector per series (calls of
// a customer, 5xx of a route, latency of an upstream) takes the values one at a time with
// their time stamps and says how unusual each one is, with no threshold to pick. It is
// plain Go with no dependency on Caddy; the rule engine, the gateway and the
// "caddy vigil replay" command (Replay) use it.
//
//	d := anomaly.New(anomaly.Config{Kind: anomaly.Count})
//	a := anomaly.NewAlerter(anomaly.Moderate, anomaly.Down)
//	for each closed minute {
//		r := d.Observe(minute, float64(calls))
//		if a.Observe(r) == anomaly.Fired { notify(r.Expected, r.Low, r.High) }
//	}
//
// # Cost
//
// Constant time and memory a point: about 0.51 µs and no allocation per Observe, 4048
// bytes per series (a Detector owns no slices; BenchmarkObserve and
// BenchmarkDetectorMemory measure both). AppendBinary / UnmarshalBinary snapshot and
// restore a detector (versioned, validated, 4032 bytes) and an Alerter (39 bytes: a
// firing alert survives a restart).
//
// # The model
//
// Counts are taken through the Anscombe transform 2·sqrt(x+3/8), under which Poisson noise
// has unit variance; that unit is also the floor of every noise scale, so the ups and downs
// of a series of 0, 1 and 3 calls a minute never look significant. Continuous values
// (latency, NAB's series) are used as they are, with a floor of a thousandth of their
// magnitude.
//
// The detector learns:
//
//   - a fast level with a damped trend (Holt's method, gain 0.2 a point), robust to
//     isolated outliers (a residual moves it by at most 3 sigmas until 3 come in a row);
//   - an accepted level (gain 0.01) and a long-term level (about 200 points or 12 hours,
//     whichever is longer; at most 3 spreads a point): what the series usually does;
//   - a daily profile (288 slots of 5 minutes) and an hour-of-week correction (168 slots),
//     indexed by the time stamp's wall clock, not by counting points, so they work for any
//     interval and with gaps. Each is learnt against its own slow level (half-day memory)
//     and used only once it has proved itself: the daily profile after two days, if its
//     error over the last three days is below 85% of the error without it; the weekly
//     correction after two weeks, below 85% of the daily model's. A series with no cycle
//     never uses one.
//   - the noise scale of one-step residuals (gain 0.02, winsorised at 4 sigmas) and the
//     spread of the fast level around the long-term level (gain 0.005).
//
// Each point is scored on four statistics, each in sigmas: the value against the one-step
// forecast and against the long-term expectation (a point is anomalous only if neither
// the recent nor the usual behaviour explains it, and both see it on the same side), and
// the fast level against the accepted and the long-term levels (likewise). Each side of
// each statistic has its own tail model, learnt from the series itself: the share of
// points that start a run beyond 2 sigmas, and for a ladder of excesses (0.5 to 64 sigmas)
// the share of those runs that go beyond; log-linear between rungs, exponential past the
// last rung any run reached, bounded by "never seen in k runs". Runs are declustered
// (counted once, at their end, with their highest point), so a long anomaly does not teach
// the tail about itself while it lasts, and a series whose normal life includes 20-sigma
// spikes learns that it does. The prior is a light, Gaussian-like tail. (The shares of
// the ladder are kept as float32: they are shares of a few hundred runs.)
//
// A fifth test looks for records: a deseasonalised value beyond the range of the last 5000
// to 10000 points. Its chance is about 1/n for n exchangeable points (taken one digit
// less, so that a record by a hair does not alert) times an exponential in how far beyond,
// whose mean starts at the Gaussian value (1/16 of the range a decimal digit) and, once
// the detector has seen a full block, is learnt from the series' own records. The range
// restarts when the seasonal model switches (deseasonalised values are then on another
// scale) and scores nothing until it holds 500 points. A sixth test looks for records of a
// slow level of the deseasonalised value (gain 0.05, about 20 points), one digit less
// again since its successive values are not independent: a latency creeping up for hours
// sets no single-point record but takes its slow level where it has never been.
//
// A seventh test scores the novelty of contexts, after CAD OSE (NAB's Contextual Anomaly
// Detector), for changes of pattern that bring no new value: every 5 minutes (every point
// of a coarser series) the mean deseasonalised value is cut into 12 levels of its record
// range; a context is the last 4 levels in order; a bit filter of two generations (3072
// bits each, the contexts of 2000 steps each, so that it keeps learning and forgets) says
// which contexts were seen lately. The statistic is the number of new contexts among the
// last 20 steps against the number their usual share (over about 2000 steps) predicts, on
// the Anscombe scale, with a learnt upper tail like the others; it is measured after 300
// steps, and it sees the point on the side of its value against the long-term
// expectation. Stepping in time keeps its chances per unit of time the same for a
// per-minute series as for a 5-minute one.
//
// An eighth test looks for breaks of the daily pattern: every 5 minutes (every point of a
// coarser series) the deviation of the mean value from the usual one, in sigmas of the
// test against the long-term expectation, is compared with the deviation kept in the
// same 5-minute slot the day before (a byte a slot, in quarter sigmas), in a learnt scale
// with learnt up and down tails (measured after 50 comparisons). Like the point tests it
// counts only together with the test against the long-term expectation, on the same side
// (the smaller of the two surprises): on its own it scores yesterday's spike again today,
// as a break.
//
// A ninth test is a two-sided CUSUM (Page's cumulative sum) of the one-step residuals, for
// slow changes that no single point or level test sees in time (a temperature drifting
// for a day): every 5 minutes (every point of a coarser series) the mean of the residuals
// (each clipped at 4 sigmas), in its own sigmas, less a slack of 0.5, is added to the
// upward sum, and its negative to the downward one, each floored at 0. Each sum has a
// learnt tail like the others (a run beyond 2 is an excursion, learnt once, at its end,
// with its highest value); its surprise counts 1.5 digits less, since a CUSUM is a scan
// over every start point at once. The sums restart when a change is accepted and when
// the seasonal model switches. Stepping in time keeps it as quiet per unit of time on
// per-minute series as on 5-minute ones: stepped every point it raised the synthetic
// moderate false alerts from 0.17 to 0.26 a series-week.
//
// A count series also scores its silence: the counts expected (long-term level plus
// season) since its last non-zero count, whose Poisson chance is e^-sum; it earns half of
// that evidence, an allowance for overdispersion. So a customer of one call every two
// minutes that goes quiet for hours is found, where no single minute says anything.
//
// The surprise of a point is the largest of these, in decimal digits (-log10 of the tail
// probability), plus a small credit for agreement: the level, the record, the context, the
// daily-break and the CUSUM families, when they are not the strongest and see the point on
// the same side, each add
// 5% of their surprise beyond 1 digit (the families are far from independent, so not the
// Fisher sum; the point family adds nothing, as the fast level moves because of the
// points). A point that only one family finds unusual is the commonest false alarm; one
// that persists or goes where the series has never been is more often a real change.
// From that it takes log10(2) for taking the largest of two families, and log10(300 s /
// interval) for a series sampled more often than every 5 minutes: a per-minute series has
// five chances a 5-minute interval to show a one-in-a-million point, so its points pay
// log10(5) = 0.7 digits. Surprise is thus counted per unit of time, and a threshold means
// the same false-alert rate per series-week whatever the interval (coarser series are not
// credited). The Score is a tenth of it, capped at 1: a score of 0.5 is a one-in-100,000
// event a 5 minutes under the series' own learnt behaviour, comparable across series. The
// Direction is the side of the statistic that scored. A change of level that scores at
// least 4.3 digits for 3 points in a row is accepted as the new normal (the accepted level
// jumps to it; the long-term level follows after 200 points): the alert resolves and a
// return to the old level is explained by the long-term level.
//
// Onset is the Score declustered, for consumers that count every unusual point (Replay's
// anomaly_score, and so NAB's scorer): an episode opens at a point scoring above 0.3 and
// closes after 100 points in a row at or below it; within it a point's Onset is its Score
// only if that is at least 1.2 times the episode's peak so far, else 0. One incident then
// scores once, at its start (or when it clearly worsens), as the alert column counts it.
//
// Expected is the long-term level plus the seasonal profile in use, and [Low, High] the
// values the test against the long-term expectation accepts at Config.Sensitivity (a
// value outside may still not alert if the recent behaviour explains it).
//
// # Warm-up
//
// A detector scores nothing for its first WarmupPoints (150) points: Score 0 and Warm
// false, so no alerts (2.5 hours of per-minute data, 12.5 hours at 5 minutes; NAB does not
// score the first 15% of a file, at least 169 rows in its shortest). Tails start learning
// after 50 points; seasonality is used from the second day at the earliest.
//
// # Sensitivities
//
// Slight, Moderate and Severe are the fixed score thresholds 0.335, 0.38 and 0.53 (3.65,
// 4.1 and 5.6 digits of surprise a 5 minutes before the correction; 4.35, 4.8 and 6.3 a
// point of a per-minute series), the same for every series. They were chosen on two sets
// (bench/nab/README.md): on the synthetic API traffic set (per minute, 5 seeds, 35
// incidents), moderate finds 33 incidents with 0.17 false alerts per series-week, slight
// 35 with 0.47, severe 20 with 0.05 (on 5 other seeds: 34 with 0.22, 35 with 0.52, 20
// with 0.03); on the NAB development corpus (mostly 5-minute data) the alert column
// scores 62.5, 61.0 and 40.5 against a swept score of 69.1, so moderate is within 10
// points of the sweep. Over 16 weeks of per-minute white noise (5 series), moderate
// raises about 0.29 false alerts per series-week (0.26 without the context test), severe
// 0.01; of Poisson counts of mean 0.5, 5 and 50 a minute, moderate 0.05, 0.10 and 0.07
// (0.05, 0.10 and 0.04 without), severe none. The daily-break test changed none of these
// (another draw of the same sizes: 0.31 on noise, 0.00, 0.12 and 0.06 on counts, with
// and without it), nor did the CUSUM (a third draw: 0.20 on noise, 0.05, 0.07 and 0.16 on
// counts, severe 0.00 to 0.01, with and without it).
//
// The Alerter turns scores into alerts: it fires when a warm point scores at least the
// threshold on a matching side, stays firing while points score at least 75% of it, and
// resolves after 10 points below, so one incident fires once; it does not fire again
// within 60 points (an hour of per-minute data) of firing, so an incident that flares up
// again soon after is not notified twice.
package anomaly
