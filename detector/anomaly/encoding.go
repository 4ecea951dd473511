package anomaly

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The binary form of a Detector: the magic "VGAD", a version byte, then the configuration
// and the state as fixed-size little-endian fields in the order of Detector.fields.
const (
	encodingMagic   = "VGAD"
	encodingVersion = 1
)

// codec visits every field of a Detector's state, in a fixed order, to encode or decode it.
type codec interface {
	u8(*uint8)
	u32(*uint32)
	i32(*int32)
	u64(*uint64)
	i64(*int64)
	f64(*float64)
	f32s([]float32)
}

func (d *Detector) fields(c codec) {
	c.u8((*uint8)(&d.cfg.Kind))
	c.u8((*uint8)(&d.cfg.Sensitivity))
	c.u64(&d.n)
	c.i64(&d.t0)
	c.i64(&d.tl)
	for _, f := range []*float64{&d.dt, &d.level, &d.trend, &d.accepted, &d.long, &d.sigma, &d.devSigma, &d.mag, &d.silent} {
		c.f64(f)
	}
	c.i32(&d.run)
	c.u32(&d.accept)
	c.u32(&d.held)
	c.u8(&d.season)
	for k := range d.sbase {
		c.f64(&d.sbase[k])
		c.f64(&d.serr[k])
	}
	c.f64(&d.gateTime)
	for k := range 2 {
		c.f64(&d.values.now[k])
		c.f64(&d.values.before[k])
	}
	c.u32(&d.values.n)
	for k := range 2 {
		c.f64(&d.values.gap[k])
		c.f64(&d.values.k[k])
	}
	for i := range d.tails {
		t := &d.tails[i]
		for _, f := range []*float64{&t.rate, &t.n, &t.k, &t.run} {
			c.f64(f)
		}
		for j := range t.beyond {
			c.f64(&t.beyond[j])
		}
	}
	c.f32s(d.daily[:])
	c.f32s(d.weekly[:])
}

type encoder struct{ b []byte }

func (e *encoder) u8(v *uint8)   { e.b = append(e.b, *v) }
func (e *encoder) u32(v *uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, *v) }
func (e *encoder) i32(v *int32)  { e.b = binary.LittleEndian.AppendUint32(e.b, uint32(*v)) }
func (e *encoder) u64(v *uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, *v) }
func (e *encoder) i64(v *int64)  { e.b = binary.LittleEndian.AppendUint64(e.b, uint64(*v)) }
func (e *encoder) f64(v *float64) {
	e.b = binary.LittleEndian.AppendUint64(e.b, math.Float64bits(*v))
}
func (e *encoder) f32s(v []float32) {
	for _, x := range v {
		e.b = binary.LittleEndian.AppendUint32(e.b, math.Float32bits(x))
	}
}

// decoder reads fields in order; past the end of its input it reads zeros and remembers
// that the input was short.
type decoder struct {
	b     []byte
	short bool
}

func (d *decoder) next(n int) []byte {
	if len(d.b) < n {
		d.short = true
		d.b = nil
		return make([]byte, n)
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8(v *uint8)    { *v = d.next(1)[0] }
func (d *decoder) u32(v *uint32)  { *v = binary.LittleEndian.Uint32(d.next(4)) }
func (d *decoder) i32(v *int32)   { *v = int32(binary.LittleEndian.Uint32(d.next(4))) }
func (d *decoder) u64(v *uint64)  { *v = binary.LittleEndian.Uint64(d.next(8)) }
func (d *decoder) i64(v *int64)   { *v = int64(binary.LittleEndian.Uint64(d.next(8))) }
func (d *decoder) f64(v *float64) { *v = math.Float64frombits(binary.LittleEndian.Uint64(d.next(8))) }
func (d *decoder) f32s(v []float32) {
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(d.next(4)))
	}
}

// floatChecker checks that every float field is finite.
type floatChecker struct{ bad bool }

func (c *floatChecker) u8(*uint8)   {}
func (c *floatChecker) u32(*uint32) {}
func (c *floatChecker) i32(*int32)  {}
func (c *floatChecker) u64(*uint64) {}
func (c *floatChecker) i64(*int64)  {}
func (c *floatChecker) f64(v *float64) {
	c.bad = c.bad || math.IsNaN(*v) || math.IsInf(*v, 0)
}
func (c *floatChecker) f32s(v []float32) {
	for _, x := range v {
		c.bad = c.bad || math.IsNaN(float64(x)) || math.IsInf(float64(x), 0)
	}
}

// AppendBinary appends the detector's configuration and state to b, in a versioned binary
// form that UnmarshalBinary reads back (about 2.4 KB). It implements
// encoding.BinaryAppender.
func (d *Detector) AppendBinary(b []byte) ([]byte, error) {
	e := encoder{b: append(b, encodingMagic...)}
	e.b = append(e.b, encodingVersion)
	d.fields(&e)
	return e.b, nil
}

// MarshalBinary returns the detector's state; see AppendBinary.
func (d *Detector) MarshalBinary() ([]byte, error) { return d.AppendBinary(nil) }

// UnmarshalBinary replaces the detector's configuration and state with those encoded by
// AppendBinary. It checks the magic, the version, the length and every field, and leaves
// the detector unchanged on error; it never panics, whatever the input.
func (d *Detector) UnmarshalBinary(data []byte) error {
	if len(data) < len(encodingMagic)+1 || string(data[:len(encodingMagic)]) != encodingMagic {
		return errors.New("anomaly: not a detector state (bad magic)")
	}
	if v := data[len(encodingMagic)]; v != encodingVersion {
		return fmt.Errorf("anomaly: detector state version %d, want %d", v, encodingVersion)
	}
	var nd Detector
	dec := decoder{b: data[len(encodingMagic)+1:]}
	nd.fields(&dec)
	switch {
	case dec.short:
		return errors.New("anomaly: detector state is truncated")
	case len(dec.b) > 0:
		return fmt.Errorf("anomaly: detector state has %d bytes too many", len(dec.b))
	}
	if err := nd.validate(); err != nil {
		return err
	}
	*d = nd
	return nil
}

// validate checks a decoded state.
func (d *Detector) validate() error {
	if err := d.cfg.validate(); err != nil {
		return err
	}
	var fc floatChecker
	d.fields(&fc)
	if fc.bad {
		return errors.New("anomaly: detector state holds a NaN or infinite number")
	}
	switch {
	case d.season > 2:
		return fmt.Errorf("anomaly: detector state: unknown seasonal model %d", d.season)
	case d.tl < d.t0:
		return errors.New("anomaly: detector state: last time before first time")
	case d.dt < 0 || d.sigma < 0 || d.devSigma < 0 || d.mag < 0 || d.gateTime < 0 || d.silent < 0:
		return errors.New("anomaly: detector state: negative scale")
	}
	for _, t := range d.tails {
		if !(t.rate > 0 && t.rate <= 1 && t.run >= 0 && t.n >= 0 && t.n <= tailMemory && t.k >= 0 && t.k <= peakMemory) {
			return errors.New("anomaly: detector state: tail model out of range")
		}
		for j, b := range t.beyond {
			if !(b >= 0 && b <= 1) || (j > 0 && b > t.beyond[j-1]) {
				return errors.New("anomaly: detector state: tail model out of range")
			}
		}
	}
	for _, e := range d.serr {
		if e < 0 {
			return errors.New("anomaly: detector state: negative error")
		}
	}
	return nil
}
