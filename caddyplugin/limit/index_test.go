package limit

import (
	"math/rand/v2"
	"testing"
)

// TestHashIndex checks the open-addressing index against a map over random sets,
// gets and deletes, with hashes drawn from a small set so that probes run long and
// wrap around the table, and deletes shift back across them.
func TestHashIndex(t *testing.T) {
	for _, universe := range []int{4, 40, 4000} {
		r := rand.New(rand.NewPCG(1, uint64(universe)))
		hashes := make([]uint64, universe)
		for i := range hashes {
			hashes[i] = r.Uint64()
			if i%3 == 0 && i > 0 {
				hashes[i] = hashes[i-1] ^ 1<<40 // same low bits, near in the table
			}
		}
		var x hashIndex
		want := map[uint64]int32{}
		for op := range 20000 {
			h := hashes[r.IntN(universe)]
			switch r.IntN(3) {
			case 0:
				pos := int32(r.IntN(1 << 20))
				x.set(h, pos)
				want[h] = pos
			case 1:
				x.delete(h)
				delete(want, h)
			}
			got, ok := x.get(h)
			if w, wok := want[h]; ok != wok || got != w {
				t.Fatalf("universe %d, op %d: get(%x) = %d, %v; want %d, %v", universe, op, h, got, ok, w, wok)
			}
			if x.len() != len(want) {
				t.Fatalf("universe %d, op %d: len = %d, want %d", universe, op, x.len(), len(want))
			}
		}
		for _, h := range hashes {
			got, ok := x.get(h)
			if w, wok := want[h]; ok != wok || got != w {
				t.Fatalf("universe %d at the end: get(%x) = %d, %v; want %d, %v", universe, h, got, ok, w, wok)
			}
		}
	}
}
