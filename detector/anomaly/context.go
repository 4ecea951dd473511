package anomaly

import (
	"math"
	"math/bits"
)

// Context novelty constants (see the package documentation).
const (
	ctxBins   = 12    // levels the range of the deseasonalised values is cut into
	ctxLen    = 4     // a context is the last ctxLen levels, in order
	ctxMod    = 20736 // ctxBins^ctxLen: the number of contexts
	ctxWords  = 48    // 64-bit words of each generation of the filter (3072 bits)
	ctxGen    = 2000  // steps a generation of the filter takes in before it becomes the old one
	ctxWindow = 20    // steps over which new contexts are counted (at most 64)
	ctxMemory = 2000  // steps the usual share of new contexts is averaged over
	ctxAfter  = 300   // steps of contexts before novelty is measured
)

// contexts measures the novelty of short sequences of quantised values, in constant
// memory, after CAD OSE (NAB's Contextual Anomaly Detector). It takes a level every step
// (5 minutes, or a point of a coarser series): a context, the last ctxLen levels in
// order, is known if its bit is set in one of two generations of a filter, each holding
// the contexts of ctxGen steps, so that it keeps learning and forgets after ctxGen to
// 2*ctxGen steps. The statistic is the number k of new contexts among the last ctxWindow
// steps against the number expected from their usual share p, on the Anscombe scale
// 2(sqrt(k+3/8) - sqrt(p·ctxWindow+3/8)), where Poisson counts have unit noise; its tail
// is learnt like the others, so that a series whose normal life is novel learns that it
// is.
type contexts struct {
	cur, old [ctxWords]uint64 // the filter: contexts of this and of the last generation
	hist     uint64           // new (1) or known (0) context of each of the last 64 steps
	ctx      uint32           // the last ctxLen levels, base ctxBins
	fill     uint32           // steps in the current generation
	seen     uint32           // steps since the contexts started, capped at ctxMemory
	usual    float64          // usual share of new contexts
	sum      float64          // sum of the values since the last step
	cnt      float64          // points since the last step
	secs     float64          // seconds since the last step
}

func newContexts() contexts { return contexts{usual: 0.5} }

// ctxBit is the filter word and bit of a context.
func ctxBit(ctx uint32) (int, uint64) {
	b := int((ctx*2654435761)>>8) % (ctxWords * 64)
	return b / 64, 1 << (b % 64)
}

// observe takes the level q (0 to ctxBins-1) of one more step and returns the novelty
// statistic, in sigmas (0 until the contexts have warmed up).
func (c *contexts) observe(q int) float64 {
	c.ctx = (c.ctx*ctxBins + uint32(q)) % ctxMod
	c.seen = min(c.seen+1, ctxMemory)
	if c.seen < ctxLen {
		return 0
	}
	w, bit := ctxBit(c.ctx)
	isNew := uint64(0)
	if c.cur[w]&bit == 0 && c.old[w]&bit == 0 {
		isNew = 1
	}
	c.cur[w] |= bit
	if c.fill++; c.fill >= ctxGen {
		c.old, c.cur, c.fill = c.cur, [ctxWords]uint64{}, 0
	}
	c.hist = c.hist<<1 | isNew
	x := 0.0
	if c.seen > ctxAfter {
		k := float64(bits.OnesCount64(c.hist & (1<<ctxWindow - 1)))
		x = 2 * (math.Sqrt(k+0.375) - math.Sqrt(c.usual*ctxWindow+0.375))
	}
	c.usual += (float64(isNew) - c.usual) / min(float64(c.seen), ctxMemory)
	return x
}

// ctxLevel quantises v into one of ctxBins levels of the range [lo, hi], taken at least
// minSpan wide.
func ctxLevel(v, lo, hi, minSpan float64) int {
	return int(min(max(math.Floor((v-lo)/max(hi-lo, minSpan)*ctxBins), 0), ctxBins-1))
}
