package intern

import "unsafe"

// unsafeData returns where the bytes of s live, to tell an interned string from a copy.
func unsafeData(s string) *byte { return unsafe.StringData(s) }
