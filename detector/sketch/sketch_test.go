package sketch

import "testing"

// decodeAgain decodes data into a new sketch and, if data is a valid encoding, checks that
// the sketch's own encoding decodes to an equal sketch (by same). It returns the sketch,
// or nil if data is not valid.
func decodeAgain[T any, P interface {
	*T
	AppendBinary([]byte) []byte
	UnmarshalBinary([]byte) error
}](t *testing.T, data []byte, same func(a, b P) bool) P {
	s := P(new(T))
	if s.UnmarshalBinary(data) != nil {
		return nil
	}
	back := P(new(T))
	if err := back.UnmarshalBinary(s.AppendBinary(nil)); err != nil {
		t.Fatalf("decoding the encoding of a decoded %T: %v", s, err)
	}
	if !same(back, s) {
		t.Fatalf("decode(encode(%T)) differs from the %[1]T decoded from % x", s, data)
	}
	return s
}

func TestCloneSharesNothing(t *testing.T) {
	tests := []struct {
		name string
		same func() bool // whether a clone is unchanged by an Add to the original
	}{
		{"Histogram", func() bool {
			h := histogramOf(1, 2, 3)
			c := h.Clone()
			h.Add(4)
			return sameHistogram(c, histogramOf(1, 2, 3))
		}},
		{"HLL", func() bool {
			s := hllOf(1, 2, 3)
			c := s.Clone()
			s.Add(4)
			return sameHLL(c, hllOf(1, 2, 3))
		}},
	}
	for _, tt := range tests {
		if !tt.same() {
			t.Errorf("%s: the clone changed with the original", tt.name)
		}
	}
}
