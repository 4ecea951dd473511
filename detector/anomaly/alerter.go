package anomaly

// Transition is what an Alerter did on one point.
type Transition uint8

const (
	// Steady: no change (still quiet, or still firing).
	Steady Transition = iota
	// Fired: the alert started firing on this point; notify.
	Fired
	// Resolved: the alert stopped firing on this point; notify.
	Resolved
)

// String returns "steady", "fired" or "resolved".
func (t Transition) String() string {
	switch t {
	case Fired:
		return "fired"
	case Resolved:
		return "resolved"
	}
	return "steady"
}

// Defaults of NewAlerter.
const (
	// ClearFraction: while firing, a point scoring at least this fraction of the threshold
	// (on a matching side) keeps the incident open.
	ClearFraction = 0.75
	// ResolveAfter: an incident resolves after this many points in a row below the clear
	// level, so one incident fires once even if its score dips.
	ResolveAfter = 10
	// HoldOff: once fired, an alert does not fire again until this many points after it
	// fired (an hour of per-minute data): an incident that resolves and flares up again
	// soon after is the same incident, and notifying it twice is noise.
	HoldOff = 60
)

// Alerter turns a series of Results into alert transitions for one sensitivity and
// direction: it fires when a warm point scores at least Threshold on a side that
// Direction matches, stays firing while points keep scoring at least Clear on a matching
// side, and resolves after ResolveAfter points in a row that do not; it fires again only
// HoldOff points or more after it last fired. The zero value never fires; use NewAlerter.
// It is not safe for concurrent use. AppendBinary and UnmarshalBinary snapshot and
// restore it (with its settings), so that a firing alert survives a restart.
type Alerter struct {
	// Threshold is the score at which the alert fires.
	Threshold float64
	// Clear is the score below which a point counts towards resolving (hysteresis).
	Clear float64
	// ResolveAfter is the number of points in a row below Clear that resolve the alert.
	ResolveAfter int
	// HoldOff is the number of points after firing during which the alert does not fire
	// again (0: it may fire again as soon as it has resolved).
	HoldOff int
	// Direction is the side (or sides) that count: Up, Down or Both.
	Direction Direction

	firing bool
	quiet  int
	since  int // 1 + points since the alert last fired, up to HoldOff+1; 0: never fired
}

// NewAlerter returns an Alerter at sensitivity s for the sides dir (None means Both).
func NewAlerter(s Sensitivity, dir Direction) *Alerter {
	if dir == None {
		dir = Both
	}
	thr := s.Threshold()
	return &Alerter{Threshold: thr, Clear: thr * ClearFraction, ResolveAfter: ResolveAfter,
		HoldOff: HoldOff, Direction: dir}
}

// Resume puts the alerter in the firing state without a transition: for an alert known
// to be firing from elsewhere (restored after a restart), so that it neither fires a
// second time nor stays open forever.
func (a *Alerter) Resume() { a.firing, a.quiet, a.since = true, 0, 1 }

// Firing reports whether the alert is firing.
func (a *Alerter) Firing() bool { return a.firing }

// Observe takes the detector's result for the next point and returns the transition.
func (a *Alerter) Observe(r Result) Transition {
	matches := r.Warm && a.Direction.Matches(r.Direction)
	if a.since > 0 && a.since <= a.HoldOff {
		a.since++
	}
	held := a.since > 0 && a.since <= a.HoldOff
	if !a.firing {
		if matches && r.Score >= a.Threshold && !held {
			a.firing, a.quiet, a.since = true, 0, 1
			return Fired
		}
		return Steady
	}
	if matches && r.Score >= a.Clear {
		a.quiet = 0
		return Steady
	}
	a.quiet++
	if a.quiet >= max(a.ResolveAfter, 1) {
		a.firing, a.quiet = false, 0
		return Resolved
	}
	return Steady
}

// Reset returns the alerter to quiet, as if it had seen nothing.
func (a *Alerter) Reset() { a.firing, a.quiet, a.since = false, 0, 0 }
