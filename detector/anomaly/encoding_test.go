package anomaly

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// A detector restored from its binary state scores the rest of a series exactly as the
// original does.
func TestBinaryRoundTrip(t *testing.T) {
	for _, kind := range []Kind{Continuous, Count} {
		rng := rand.New(rand.NewPCG(11, 11))
		d := New(Config{Kind: kind, Sensitivity: Severe})
		at := start
		next := func() (time.Time, float64) {
			at = at.Add(time.Minute)
			m := 20 + 10*float64(at.Hour()%12)
			return at, poisson(rng, m)
		}
		for range 3 * 1440 {
			d.Observe(next())
		}
		b, err := d.AppendBinary([]byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		state := b[len("prefix"):]
		var r Detector
		if err := r.UnmarshalBinary(state); err != nil {
			t.Fatalf("%v: %v", kind, err)
		}
		if r.Config() != d.Config() || r.Points() != d.Points() {
			t.Fatalf("%v: restored config %+v after %d points, want %+v after %d", kind, r.Config(), r.Points(), d.Config(), d.Points())
		}
		again, _ := r.MarshalBinary()
		if !bytes.Equal(again, state) {
			t.Fatalf("%v: state changed through a round trip", kind)
		}
		for k := range 2000 {
			tt, v := next()
			if k == 1000 {
				v += 500
			}
			if got, want := r.Observe(tt, v), d.Observe(tt, v); got != want {
				t.Fatalf("%v: point %d after restore scored %+v, want %+v", kind, k, got, want)
			}
		}
	}
}

func TestUnmarshalRejectsBadInput(t *testing.T) {
	d := New(Config{})
	for k := range 500 {
		d.Observe(start.Add(time.Duration(k)*time.Minute), float64(k%10))
	}
	good, _ := d.MarshalBinary()
	flip := func(i int, b byte) []byte {
		c := bytes.Clone(good)
		c[i] = b
		return c
	}
	nan := bytes.Clone(good)
	copy(nan[len(good)-4:], []byte{0, 0, 0xc0, 0x7f}) // a NaN in the weekly profile
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"bad magic", flip(0, 'X')},
		{"future version", flip(4, 99)},
		{"unknown kind", flip(5, 9)},
		{"truncated", good[:len(good)-1]},
		{"too long", append(bytes.Clone(good), 0)},
		{"NaN", nan},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := d.MarshalBinary()
			if err := d.UnmarshalBinary(tt.in); err == nil {
				t.Error("no error")
			}
			after, _ := d.MarshalBinary()
			if !bytes.Equal(before, after) {
				t.Error("a failed UnmarshalBinary changed the detector")
			}
		})
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	d := New(Config{Kind: Count})
	for k := range 300 {
		d.Observe(start.Add(time.Duration(k)*time.Minute), float64(k%4))
	}
	good, _ := d.MarshalBinary()
	f.Add(good)
	f.Add(good[:100])
	f.Add([]byte("VGAD\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Detector
		if err := d.UnmarshalBinary(b); err != nil {
			return
		}
		// A state that was accepted must be usable.
		r := d.Observe(time.Unix(int64(d.tl/1e9)+60, 0), 1)
		if r.Score < 0 || r.Score > 1 {
			t.Fatalf("score %v from an accepted state", r.Score)
		}
	})
}
