// Package endpoint groups the calls of the gateway by endpoint.
//
// A request path becomes an endpoint in one of two ways. If it matches one of the route
// templates the site configured (see [Compile]), the endpoint is that template's text,
// exactly as configured. Otherwise the path is normalised: segments that look like
// identifiers become "{id}", so that "/users/42/orders" and "/users/43/orders" count as
// the same endpoint "/users/{id}/orders". The gateway interns endpoints in a table that
// bounds how many distinct ones are kept (max_series), folding the overflow into [Other].
//
// # Normalisation
//
// [Normalize] and [Templates.Endpoint] apply these rules, in this order:
//
//   - The query string and fragment (from the first '?' or '#') are never part of the
//     endpoint. A path that does not start with '/' is read as if it did.
//   - Repeated slashes collapse to one and a trailing slash is dropped; an empty path
//     becomes "/". The path is not decoded: give the escaped path (r.URL.EscapedPath()).
//   - Bytes outside printable ASCII (0x21 to 0x7E) are written percent-encoded ("%C3%A9"),
//     and the rules below see the segment in that encoded form.
//   - A segment becomes "{id}" when it is
//     (1) all digits ("42");
//     (2) a UUID in any case ("123e4567-E89B-12d3-a456-426614174000");
//     (3) hex of 16 or more characters, or of 8 or more characters with both a digit and
//     a letter ("5f3c9a1b", but not "deadbeef" or "facade");
//     (4) token-like: 20 or more characters from [A-Za-z0-9_.~-] with at least one digit
//     ("sk_live_4eC39HqLyjWDarjtT1zdp7dc");
//     (5) made of parts, split on '-', '_', '.' and ':', one of which is a number of 2 or
//     more digits ("u-42", "order_123", "2026-11-24", "v1.10"; but not "v1", "page-1");
//     (6) an e-mail or anything with '@';
//     (7) percent-encoded ('%' present) and longer than 16 bytes.
//     Everything else is kept as it is: "v1", "v2", "oauth2", "base64", "s3", "users",
//     "me", "{id}".
//   - At most [MaxSegments] segments: a longer path keeps its first 15 segments and the
//     rest become one "{rest}" segment.
//   - At most [MaxLen] bytes: when the result would be longer, the segments that do not
//     fit, and as many before them as needed to make room, are replaced by "{rest}".
//
// The result always starts with '/', is at most [MaxLen] bytes and normalising it again
// gives it back unchanged.
package endpoint

const (
	// MaxSegments is the most segments a normalised path has; the ones past the 15th
	// are folded into one "{rest}" segment.
	MaxSegments = 16
	// MaxLen is the most bytes a normalised path has.
	MaxLen = 256
	// ID replaces a path segment that is an identifier.
	ID = "{id}"
	// Rest replaces the segments of a path past [MaxSegments] or [MaxLen].
	Rest = "{rest}"
)

const restSuffix = "/" + Rest

// Normalize returns the normalised form of the request path (see the package
// documentation for the rules). It allocates the result; on the request path use
// [AppendNormalized] or [Templates.Endpoint] with a reused buffer.
func Normalize(path string) string {
	var buf [MaxLen]byte
	return string(AppendNormalized(buf[:0], path))
}

// cutPath returns path without its query string or fragment.
func cutPath(path string) string {
	for i := 0; i < len(path); i++ {
		if path[i] == '?' || path[i] == '#' {
			return path[:i]
		}
	}
	return path
}

// nextSegment returns the first non-empty segment of path at or after i and the index
// just past it; seg is empty when there is none.
func nextSegment(path string, i int) (seg string, next int) {
	for i < len(path) && path[i] == '/' {
		i++
	}
	j := i
	for j < len(path) && path[j] != '/' {
		j++
	}
	return path[i:j], j
}

// AppendNormalized appends the normalised form of the request path to dst and returns
// the extended buffer. It does not allocate when dst has room for [MaxLen] more bytes.
func AppendNormalized(dst []byte, path string) []byte {
	path = cutPath(path)
	start := len(dst)
	safe := start // end of the last segment after which "/{rest}" still fits
	seg, next := nextSegment(path, 0)
	for n := 0; seg != ""; n++ {
		following, after := nextSegment(path, next)
		if n == MaxSegments-1 && following != "" {
			if len(dst)-start+len(restSuffix) > MaxLen {
				dst = dst[:safe]
			}
			return append(dst, restSuffix...)
		}
		dst = appendSegment(dst, seg)
		switch size := len(dst) - start; {
		case size > MaxLen:
			return append(dst[:safe], restSuffix...)
		case size+len(restSuffix) <= MaxLen:
			safe = len(dst)
		}
		seg, next = following, after
	}
	if len(dst) == start {
		dst = append(dst, '/')
	}
	return dst
}

// appendSegment appends '/' and the normalised segment to dst.
func appendSegment(dst []byte, seg string) []byte {
	dst = append(dst, '/')
	if isIdentifier(seg) {
		return append(dst, ID...)
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if printable(c) {
			dst = append(dst, c)
			continue
		}
		const hexDigits = "0123456789ABCDEF"
		dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&15])
	}
	return dst
}

// Byte classes, looked up in one table read per byte.
const (
	classPrintable = 1 << iota // 0x21 to 0x7E
	classDigit
	classHexLetter
	classToken     // [A-Za-z0-9_.~-]
	classSeparator // '-', '_', '.', ':'
)

var classes = func() (t [256]uint8) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] |= classPrintable
	}
	for c := '0'; c <= '9'; c++ {
		t[c] |= classDigit | classToken
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] |= classToken
		t[c-'a'+'A'] |= classToken
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] |= classHexLetter
		t[c-'a'+'A'] |= classHexLetter
	}
	for _, c := range "_.~-" {
		t[c] |= classToken
	}
	for _, c := range "-_.:" {
		t[c] |= classSeparator
	}
	return t
}()

func printable(c byte) bool { return classes[c]&classPrintable != 0 }

func isDigit(c byte) bool { return classes[c]&classDigit != 0 }

func isHex(c byte) bool { return classes[c]&(classDigit|classHexLetter) != 0 }

// isIdentifier reports whether a path segment is an identifier by rules (1) to (7) of
// the package documentation. Bytes outside printable ASCII count as their "%XX" form.
func isIdentifier(seg string) bool {
	if isUUID(seg) {
		return true
	}
	var (
		allDigits  = true
		allHex     = true
		allToken   = true
		hasDigit   bool
		hasLetter  bool // a hex letter
		hasPercent bool
		escLen     int
		partDigits int    // digits in the current part
		partNum    = true // the current part is all digits so far
	)
	for i := 0; i <= len(seg); i++ {
		if i == len(seg) || classes[seg[i]]&classSeparator != 0 {
			if partNum && partDigits >= 2 {
				return true // rule 5
			}
			partDigits, partNum = 0, true
			if i == len(seg) {
				break
			}
		}
		c := seg[i]
		class := classes[c]
		escLen++
		switch {
		case class&classDigit != 0:
			hasDigit = true
			partDigits++
			continue
		case c == '@':
			return true // rule 6
		case c == '%':
			hasPercent = true
		case class&classPrintable == 0:
			hasPercent = true
			escLen += 2
		}
		allDigits = false
		partNum = class&classSeparator != 0
		if class&classHexLetter != 0 {
			hasLetter = true
		} else {
			allHex = false
		}
		if class&classToken == 0 {
			allToken = false
		}
	}
	switch {
	case allDigits && len(seg) > 0: // rule 1
		return true
	case allHex && (len(seg) >= 16 || (len(seg) >= 8 && hasDigit && hasLetter)): // rule 3
		return true
	case allToken && len(seg) >= 20 && hasDigit: // rule 4
		return true
	case hasPercent && escLen > 16: // rule 7
		return true
	}
	return false
}

// isUUID reports whether s is a UUID in its 8-4-4-4-12 hex form, in any case.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

// Other is the endpoint of calls to endpoints not seen before the cap on distinct
// endpoints was reached: they are counted under it.
const Other = "other"
