package identity

import "unsafe"

// stringBytes returns the bytes of s without copying them, so that hashing a long key
// does not allocate (a []byte(s) conversion copies to the heap past 32 bytes). The result
// must never be written to.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
