package anomaly

import (
	"bytes"
	"strings"
	"testing"
)

func TestAlerter(t *testing.T) {
	up := func(s float64) Result { return Result{Score: s, Direction: Up, Warm: true} }
	down := func(s float64) Result { return Result{Score: s, Direction: Down, Warm: true} }
	cold := Result{Score: 0.9, Direction: Up}
	quiet := Result{Warm: true}
	repeat := func(r Result, n int) []Result {
		out := make([]Result, n)
		for i := range out {
			out[i] = r
		}
		return out
	}
	seq := func(parts ...[]Result) []Result {
		var out []Result
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	thr := Moderate.Threshold()
	tests := []struct {
		name string
		dir  Direction
		in   []Result
		want string // one letter per point: . steady, F fired, R resolved
	}{
		{"quiet", Both, repeat(quiet, 5), "....."},
		{"fires once while it stays anomalous", Both, repeat(up(0.9), 4), "F..."},
		{"not during warm-up", Both, []Result{cold, cold}, ".."},
		{"resolves after ResolveAfter quiet points", Both, seq(repeat(up(0.9), 2), repeat(quiet, ResolveAfter)), "F." + strings.Repeat(".", ResolveAfter-1) + "R"},
		{"a dip below the threshold but above clear keeps it firing", Both,
			seq([]Result{up(0.9)}, repeat(up(thr*ClearFraction), ResolveAfter+2)), "F" + strings.Repeat(".", ResolveAfter+2)},
		{"a short quiet spell does not resolve", Both,
			seq([]Result{up(0.9)}, repeat(quiet, ResolveAfter-1), []Result{up(0.9)}), "F" + strings.Repeat(".", ResolveAfter)},
		{"held off after resolving", Both,
			seq([]Result{up(0.9)}, repeat(quiet, ResolveAfter), []Result{up(0.9)}), "F" + strings.Repeat(".", ResolveAfter-1) + "R."},
		{"fires again after HoldOff", Both,
			seq([]Result{up(0.9)}, repeat(quiet, HoldOff-1), []Result{up(0.9)}),
			"F" + strings.Repeat(".", ResolveAfter-1) + "R" + strings.Repeat(".", HoldOff-1-ResolveAfter) + "F"},
		{"up only ignores down", Up, []Result{down(0.9), up(0.9)}, ".F"},
		{"down only ignores up", Down, []Result{up(0.9), down(0.9)}, ".F"},
		{"below the threshold", Both, []Result{up(thr - 0.01)}, "."},
		{"at the threshold", Both, []Result{up(thr)}, "F"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAlerter(Moderate, tt.dir)
			var got strings.Builder
			for _, r := range tt.in {
				switch a.Observe(r) {
				case Fired:
					got.WriteByte('F')
				case Resolved:
					got.WriteByte('R')
				default:
					got.WriteByte('.')
				}
			}
			if got.String() != tt.want {
				t.Errorf("got %s, want %s", got.String(), tt.want)
			}
		})
	}
}

func TestAlerterDefaults(t *testing.T) {
	a := NewAlerter(Severe, None)
	if a.Direction != Both || a.Threshold != SevereThreshold || a.ResolveAfter != ResolveAfter || a.HoldOff != HoldOff {
		t.Errorf("NewAlerter(Severe, None) = %+v", a)
	}
	var zero Alerter
	if zero.Observe(Result{Score: 1, Direction: Up, Warm: true}) != Steady {
		t.Error("the zero Alerter fired")
	}
	a.Observe(Result{Score: 1, Direction: Up, Warm: true})
	if !a.Firing() {
		t.Fatal("not firing after a score of 1")
	}
	a.Reset()
	if a.Firing() {
		t.Error("firing after Reset")
	}
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Sensitivity
	}{{"slight", Slight}, {"Moderate", Moderate}, {"", Moderate}, {" severe ", Severe}} {
		if got, err := ParseSensitivity(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseSensitivity(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if _, err := ParseSensitivity("high"); err == nil {
		t.Error(`ParseSensitivity("high") gave no error`)
	}
	for _, tt := range []struct {
		in   string
		want Direction
	}{{"up", Up}, {"DOWN", Down}, {"both", Both}, {"", Both}} {
		if got, err := ParseDirection(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseDirection(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if _, err := ParseDirection("sideways"); err == nil {
		t.Error(`ParseDirection("sideways") gave no error`)
	}
	for _, tt := range []struct {
		in   string
		want Kind
	}{{"count", Count}, {"latency", Continuous}, {"continuous", Continuous}} {
		if got, err := ParseKind(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if _, err := ParseKind("bytes"); err == nil {
		t.Error(`ParseKind("bytes") gave no error`)
	}
	if !(SlightThreshold < ModerateThreshold && ModerateThreshold < SevereThreshold) {
		t.Error("thresholds are not increasing from slight to severe")
	}
	if !Both.Matches(Up) || !Both.Matches(Down) || Up.Matches(Down) || Both.Matches(None) {
		t.Error("Direction.Matches is wrong")
	}
}

// A restored alerter goes on exactly as the original: still firing, still held off.
func TestAlerterBinaryRoundTrip(t *testing.T) {
	in := []Result{{Score: 0.9, Direction: Up, Warm: true}}
	for range ResolveAfter + 5 {
		in = append(in, Result{Warm: true})
	}
	for range HoldOff {
		in = append(in, Result{Score: 0.9, Direction: Up, Warm: true})
	}
	for cut := range in {
		a := NewAlerter(Slight, Up)
		for _, r := range in[:cut] {
			a.Observe(r)
		}
		b, err := a.AppendBinary([]byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		var r Alerter
		if err := r.UnmarshalBinary(b[1:]); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if r != *a {
			t.Fatalf("cut %d: restored %+v, want %+v", cut, r, *a)
		}
		for k, x := range in[cut:] {
			if got, want := r.Observe(x), a.Observe(x); got != want {
				t.Fatalf("cut %d, point %d: restored alerter %v, original %v", cut, k, got, want)
			}
		}
	}
	good, _ := NewAlerter(Moderate, Both).MarshalBinary()
	for _, bad := range [][]byte{nil, good[:len(good)-1], append(bytes.Clone(good), 0), []byte("VGAD\x01")} {
		var r Alerter
		if err := r.UnmarshalBinary(bad); err == nil {
			t.Errorf("UnmarshalBinary(%q) accepted", bad)
		}
	}
	nan := bytes.Clone(good)
	copy(nan[5:], []byte{0, 0, 0, 0, 0, 0, 0xf8, 0x7f}) // Threshold NaN
	var r Alerter
	if err := r.UnmarshalBinary(nan); err == nil {
		t.Error("a NaN threshold was accepted")
	}
}
