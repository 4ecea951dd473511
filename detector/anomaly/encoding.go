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
	encodingVersion = 5
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
	for _, f := range []*float64{&d.dt, &d.level, &d.trend, &d.accepted, &d.long, &d.sigma, &d.devSigma, &d.mag, &d.silent, &d.slow, &d.peak} {
		c.f64(f)
	}
	c.i32(&d.run)
	c.u32(&d.accept)
	c.u32(&d.held)
	c.u32(&d.calm)
	c.u8(&d.season)
	for k := range d.sbase {
		c.f64(&d.sbase[k])
		c.f64(&d.serr[k])
	}
	c.f64(&d.gateTime)
	d.values.fields(c)
	d.slowRange.fields(c)
	for i := range d.tails {
		d.tails[i].fields(c)
	}
	d.ctxs.fields(c)
	d.ctxTail.fields(c)
	for i := range d.dayTail {
		d.dayTail[i].fields(c)
	}
	c.f64(&d.dayScale)
	c.u32(&d.daySteps)
	for i := range d.yday {
		b := uint8(d.yday[i])
		c.u8(&b)
		d.yday[i] = int8(b)
	}
	c.f32s(d.daily[:])
	c.f32s(d.weekly[:])
	c.f64(&d.cusum[0])
	c.f64(&d.cusum[1])
	c.f64(&d.cusSum)
	for i := range d.cusTail {
		d.cusTail[i].fields(c)
	}
}

func (r *records) fields(c codec) {
	for k := range 2 {
		c.f64(&r.now[k])
		c.f64(&r.before[k])
	}
	c.u32(&r.n)
	c.u32(&r.seen)
	for k := range 2 {
		c.f64(&r.gap[k])
		c.f64(&r.k[k])
	}
}

func (t *tail) fields(c codec) {
	c.f64(&t.rate)
	c.f64(&t.run)
	nk := [2]float32{t.n, t.k}
	c.f32s(nk[:])
	t.n, t.k = nk[0], nk[1]
	c.f32s(t.beyond[:])
}

func (x *contexts) fields(c codec) {
	for _, g := range []*[ctxWords]uint64{&x.cur, &x.old} {
		for j := range g {
			c.u64(&g[j])
		}
	}
	c.u64(&x.hist)
	c.u32(&x.ctx)
	c.u32(&x.fill)
	c.u32(&x.seen)
	for _, f := range []*float64{&x.usual, &x.sum, &x.cnt, &x.secs} {
		c.f64(f)
	}
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
// form that UnmarshalBinary reads back (4032 bytes). It implements
// encoding.BinaryAppender.
func (d *Detector) AppendBinary(b []byte) ([]byte, error) {
	return encode(b, encodingMagic, encodingVersion, func(e *encoder) { d.fields(e) }), nil
}

// MarshalBinary returns the detector's state; see AppendBinary.
func (d *Detector) MarshalBinary() ([]byte, error) { return d.AppendBinary(nil) }

// UnmarshalBinary replaces the detector's configuration and state with those encoded by
// AppendBinary. It checks the magic, the version, the length and every field, and leaves
// the detector unchanged on error; it never panics, whatever the input.
func (d *Detector) UnmarshalBinary(data []byte) error {
	var nd Detector
	if err := decode(data, encodingMagic, encodingVersion, "detector", func(c *decoder) { nd.fields(c) }); err != nil {
		return err
	}
	if err := nd.validate(); err != nil {
		return err
	}
	*d = nd
	return nil
}

// encode appends the magic, the version and what fields writes to b.
func encode(b []byte, magic string, version byte, fields func(*encoder)) []byte {
	e := encoder{b: append(append(b, magic...), version)}
	fields(&e)
	return e.b
}

// decode checks the magic and the version at the start of data, and reads the rest with
// fields, which must consume it exactly. what names the state in errors.
func decode(data []byte, magic string, version byte, what string, fields func(*decoder)) error {
	if len(data) < len(magic)+1 || string(data[:len(magic)]) != magic {
		return fmt.Errorf("anomaly: not a %s state (bad magic)", what)
	}
	if v := data[len(magic)]; v != version {
		return fmt.Errorf("anomaly: %s state version %d, want %d", what, v, version)
	}
	dec := decoder{b: data[len(magic)+1:]}
	fields(&dec)
	switch {
	case dec.short:
		return fmt.Errorf("anomaly: %s state is truncated", what)
	case len(dec.b) > 0:
		return fmt.Errorf("anomaly: %s state has %d bytes too many", what, len(dec.b))
	}
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
	case d.peak < 0 || d.peak > 1:
		return errors.New("anomaly: detector state: episode peak out of range")
	}
	for _, r := range []*records{&d.values, &d.slowRange} {
		if r.n >= recordBlock || r.seen > 2*recordBlock || (r.seen > 0 && (r.gap[0] <= 0 || r.gap[1] <= 0)) ||
			r.k[0] < 0 || r.k[1] < 0 || r.k[0] > recordMemory || r.k[1] > recordMemory {
			return errors.New("anomaly: detector state: record range out of range")
		}
	}
	if x := d.ctxs; x.ctx >= ctxMod || x.fill >= ctxGen || x.seen > ctxMemory || !(x.usual >= 0 && x.usual <= 1) || x.cnt < 0 || x.secs < 0 {
		return errors.New("anomaly: detector state: contexts out of range")
	}
	if !(d.dayScale >= 0) || d.daySteps > dayStepsCap {
		return errors.New("anomaly: detector state: daily change out of range")
	}
	if !(d.cusum[0] >= 0 && d.cusum[1] >= 0) {
		return errors.New("anomaly: detector state: negative CUSUM")
	}
	for _, t := range append(d.tails[:], d.ctxTail, d.dayTail[0], d.dayTail[1], d.cusTail[0], d.cusTail[1]) {
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

// The binary form of an Alerter: the magic "VGAA", a version byte, then its settings and
// state as fixed-size little-endian fields in the order of Alerter.fields.
const (
	alerterMagic   = "VGAA"
	alerterVersion = 1
)

type alerterCodec interface {
	u8(*uint8)
	i32(*int32)
	f64(*float64)
}

func (a *Alerter) fields(c alerterCodec) {
	c.f64(&a.Threshold)
	c.f64(&a.Clear)
	ints := [4]int32{int32(a.ResolveAfter), int32(a.HoldOff), int32(a.quiet), int32(a.since)}
	for i := range ints {
		c.i32(&ints[i])
	}
	a.ResolveAfter, a.HoldOff, a.quiet, a.since = int(ints[0]), int(ints[1]), int(ints[2]), int(ints[3])
	firing := uint8(0)
	if a.firing {
		firing = 1
	}
	c.u8((*uint8)(&a.Direction))
	c.u8(&firing)
	a.firing = firing == 1
}

// AppendBinary appends the alerter's settings and state (firing or not, quiet points,
// hold-off) to b, in a versioned binary form of 39 bytes that UnmarshalBinary reads back,
// so that the gateway can snapshot firing anomaly alerts. It implements
// encoding.BinaryAppender.
func (a *Alerter) AppendBinary(b []byte) ([]byte, error) {
	c := *a // fields writes back what it visits
	return encode(b, alerterMagic, alerterVersion, func(e *encoder) { c.fields(e) }), nil
}

// MarshalBinary returns the alerter's state; see AppendBinary.
func (a *Alerter) MarshalBinary() ([]byte, error) { return a.AppendBinary(nil) }

// UnmarshalBinary replaces the alerter's settings and state with those encoded by
// AppendBinary. It checks the magic, the version, the length and every field, and leaves
// the alerter unchanged on error.
func (a *Alerter) UnmarshalBinary(data []byte) error {
	var na Alerter
	if err := decode(data, alerterMagic, alerterVersion, "alerter", func(c *decoder) { na.fields(c) }); err != nil {
		return err
	}
	switch {
	case math.IsNaN(na.Threshold) || math.IsInf(na.Threshold, 0) || math.IsNaN(na.Clear) || math.IsInf(na.Clear, 0):
		return errors.New("anomaly: alerter state holds a NaN or infinite threshold")
	case na.Direction > Both || na.quiet < 0 || na.since < 0 || na.since > max(na.HoldOff, 0)+1:
		return errors.New("anomaly: alerter state out of range")
	}
	*a = na
	return nil
}
