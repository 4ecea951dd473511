package anomaly

import (
	"fmt"
	"strings"
)

// Kind says what sort of values a series holds; it chooses the noise model.
type Kind uint8

const (
	// Continuous values (latencies, CPU, temperatures, NAB's series): the noise scale is
	// learnt from the series itself. The zero value.
	Continuous Kind = iota
	// Count values: non-negative numbers of events per interval (calls, 5xx responses).
	// Values are taken through the Anscombe transform 2·sqrt(x+3/8), under which Poisson
	// noise has unit variance, and the noise scale never goes below that: the
	// random ups and downs of a series of 0, 1 and 3 calls a minute do not alarm.
	Count
)

// ParseKind reads a metric name: "count" gives Count; "latency" and "continuous" give
// Continuous.
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "count":
		return Count, nil
	case "latency", "continuous":
		return Continuous, nil
	}
	return 0, fmt.Errorf("anomaly: unknown metric %q (want count or latency)", s)
}

// String returns "count" or "continuous".
func (k Kind) String() string {
	switch k {
	case Count:
		return "count"
	case Continuous:
		return "continuous"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Direction is the side of an anomaly: above (Up) or below (Down) what was expected. As a
// filter (Alerter.Direction) it is a set: Both matches either side.
type Direction uint8

const (
	// None: no side (a score of 0, or a filter that matches nothing).
	None Direction = 0
	// Up: the value is above what was expected.
	Up Direction = 1
	// Down: the value is below what was expected.
	Down Direction = 2
	// Both: either side (a filter only).
	Both Direction = Up | Down
)

// ParseDirection reads "up", "down" or "both"; the empty string is Both.
func ParseDirection(s string) (Direction, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "up":
		return Up, nil
	case "down":
		return Down, nil
	case "both", "":
		return Both, nil
	}
	return None, fmt.Errorf("anomaly: unknown direction %q (want up, down or both)", s)
}

// String returns "up", "down", "both" or "none".
func (d Direction) String() string {
	switch d {
	case Up:
		return "up"
	case Down:
		return "down"
	case Both:
		return "both"
	case None:
		return "none"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// Matches reports whether an anomaly on side got (Up or Down) passes the filter d.
func (d Direction) Matches(got Direction) bool { return got != None && d&got == got }

// Sensitivity is how unusual a value must be to raise an alert. Each sensitivity is a fixed
// score threshold, the same for every series (see Threshold). The zero value is Moderate.
type Sensitivity uint8

const (
	// Moderate: the default; score 0.38, about one false alert per series-month of
	// per-minute traffic.
	Moderate Sensitivity = iota
	// Slight: score 0.335; more alerts (about two per series-month), and earlier.
	Slight
	// Severe: score 0.53; only clear-cut anomalies (two or three per series-year).
	Severe
)

// ParseSensitivity reads "slight", "moderate" or "severe"; the empty string is Moderate.
func ParseSensitivity(s string) (Sensitivity, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "moderate", "":
		return Moderate, nil
	case "slight":
		return Slight, nil
	case "severe":
		return Severe, nil
	}
	return Moderate, fmt.Errorf("anomaly: unknown sensitivity %q (want slight, moderate or severe)", s)
}

// String returns "slight", "moderate" or "severe".
func (s Sensitivity) String() string {
	switch s {
	case Slight:
		return "slight"
	case Moderate:
		return "moderate"
	case Severe:
		return "severe"
	}
	return fmt.Sprintf("Sensitivity(%d)", uint8(s))
}

// Score thresholds of the sensitivities. A score is a tenth of the surprise in decimal
// digits per 5 minutes of data (score 0.5 = a tail probability of 1e-5 a 5 minutes under
// the series' own learnt noise), so these say how rare a point must be to alert. They were chosen on the NAB development
// corpus and the synthetic API traffic set (bench/nab/README.md), once for all series.
const (
	SlightThreshold   = 0.335
	ModerateThreshold = 0.38
	SevereThreshold   = 0.53
)

// Threshold is the score at and above which a point is anomalous at this sensitivity.
func (s Sensitivity) Threshold() float64 {
	switch s {
	case Slight:
		return SlightThreshold
	case Severe:
		return SevereThreshold
	}
	return ModerateThreshold
}

// Config sets up a Detector. The zero value is a detector of continuous values with the
// band drawn at Moderate.
type Config struct {
	// Kind chooses the noise model: Continuous (default) or Count.
	Kind Kind
	// Sensitivity only sets where Result.Low and Result.High are drawn; scores do not
	// depend on it. Default Moderate.
	Sensitivity Sensitivity
}

func (c Config) validate() error {
	if c.Kind > Count {
		return fmt.Errorf("anomaly: unknown kind %d", c.Kind)
	}
	if c.Sensitivity > Severe {
		return fmt.Errorf("anomaly: unknown sensitivity %d", c.Sensitivity)
	}
	return nil
}
