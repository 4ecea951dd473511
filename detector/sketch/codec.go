package sketch

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// decodable is a sketch with a binary encoding: a version byte, then what decode reads.
type decodable interface {
	Reset()
	decode(r *decoder) error
}

// unmarshal replaces s with the sketch encoded in b, which must start with version and
// end where s.decode stops. On failure it leaves s empty and names the sketch in the error.
func unmarshal(s decodable, name string, version byte, b []byte) error {
	s.Reset()
	r := decoder{b: b}
	var err error
	switch v := r.byte(); {
	case r.err != nil:
		err = r.err
	case v != version:
		err = fmt.Errorf("unknown version %d", v)
	default:
		if err = s.decode(&r); err == nil {
			err = r.end()
		}
	}
	if err != nil {
		s.Reset()
		return fmt.Errorf("sketch: decode %s: %w", name, err)
	}
	return nil
}

// errTruncated is the error of a decoder that ran out of input.
var errTruncated = errors.New("truncated input")

// decoder reads the fields of a binary encoding from b. The first failure is kept in err;
// reads after it return zero values, so a decode loop checks err once per record.
type decoder struct {
	b   []byte
	err error
}

// byte reads one byte.
func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail(errTruncated)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// uvarint reads a uvarint.
func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.fail(errTruncated)
		return 0
	case n < 0:
		d.fail(errors.New("uvarint overflows uint64"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes reads the next n bytes.
func (d *decoder) bytes(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.fail(errTruncated)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// end returns the first failure, or an error if input is left over.
func (d *decoder) end() error {
	if d.err == nil && len(d.b) > 0 {
		d.fail(fmt.Errorf("%d bytes after the end", len(d.b)))
	}
	return d.err
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}
