package detector

import (
	"github.com/vigilgw/vigil/detector/sketch"
)

// bucket aggregates the calls of one series in one time slot of one resolution.
type bucket struct {
	slot     int64 // start of the bucket in units of the ring's resolution since the Unix epoch
	n        uint32
	n2xx     uint32 // 1xx to 3xx: answered successfully
	n4xx     uint32
	n5xx     uint32 // 5xx, and calls that got no status at all
	blocked  uint32
	limited  uint32
	fails    [numFailKinds]uint32 // upstream failures by kind (connect, timeout, tls, other)
	bytesIn  uint64
	bytesOut uint64
	latSum   float64 // microseconds
	lat      sketch.Histogram
	callers  sketch.HLL
}

// point is what Record adds to a bucket: the parts of a call the buckets keep, computed
// once per call.
type point struct {
	status     int
	blocked    bool
	limited    bool
	bytesIn    uint64
	bytesOut   uint64
	latency    float64 // microseconds
	endpoint   string  // for callers' top failing endpoints
	failure    Failure
	bin        sketch.Bin
	callerHash uint64
}

func (b *bucket) add(p *point) {
	b.n++
	switch {
	case p.status >= 500 || p.status < 100:
		b.n5xx++
	case p.status >= 400:
		b.n4xx++
	default:
		b.n2xx++
	}
	if p.blocked {
		b.blocked++
	}
	if p.limited {
		b.limited++
	}
	if p.failure > FailureStatus {
		b.fails[failKind(p.failure)]++
	}
	b.bytesIn += p.bytesIn
	b.bytesOut += p.bytesOut
	b.latSum += p.latency
	b.lat.AddBin(p.bin)
	b.callers.Add(p.callerHash)
}

func (b *bucket) reset(slot int64) {
	lat, callers := b.lat, b.callers
	lat.Reset()
	callers.Reset()
	*b = bucket{slot: slot, lat: lat, callers: callers}
}
