package limit

import (
	"fmt"
	"strconv"
)

// The names of the IETF header fields (draft-ietf-httpapi-ratelimit-headers-10 and -11).
const (
	// PolicyField describes the policies: "RateLimit-Policy".
	PolicyField = "RateLimit-Policy"
	// StateField gives the current state of each policy: "RateLimit".
	StateField = "RateLimit"
)

// maxSFInteger is the largest Structured Field Integer (RFC 9651, 15 digits); larger
// values are written as this.
const maxSFInteger = 999_999_999_999_999

// AppendPolicy appends one item of the RateLimit-Policy field to dst, such as
//
//	"user";q=100;w=1;vigil-burst=200
//
// name is the policy's name (an sf-string, see [CheckName]), q the quota per window, w
// the window in seconds (at least 1) and burst the bucket size, written as the vendor
// parameter vigil-burst only when it is more than zero and differs from q. For a token
// bucket take q and w from [Rate.PolicyParams], for a quota from
// [QuotaUsage.PolicyParams] (with burst 0). When dst is not empty, ", " is written
// first, so that successive calls build one List.
func AppendPolicy(dst []byte, name string, q, w, burst int64) []byte {
	dst = appendName(dst, name)
	dst = appendParam(dst, "q", q)
	dst = appendParam(dst, "w", max(w, 1))
	if burst > 0 && burst != q {
		dst = appendParam(dst, "vigil-burst", burst)
	}
	return dst
}

// AppendRateLimit appends one item of the RateLimit field to dst, such as
//
//	"user";r=187;t=1
//
// name is the policy's name, r the units left and t the seconds until more are
// available. For a token bucket take them from [Decision.RateLimitParams], for a quota
// from [QuotaUsage.RateLimitParams]. When dst is not empty, ", " is written first, so that
// successive calls build one List.
func AppendRateLimit(dst []byte, name string, r, t int64) []byte {
	dst = appendName(dst, name)
	dst = appendParam(dst, "r", r)
	return appendParam(dst, "t", t)
}

// appendName starts a List member: the separator if needed and the name as an sf-string.
// Bytes outside printable ASCII are written as '?'.
func appendName(dst []byte, name string) []byte {
	if len(dst) > 0 {
		dst = append(dst, ", "...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20 || c > 0x7e:
			dst = append(dst, '?')
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// appendParam appends ;key=v with v clamped to the sf-integer range [0, 999999999999999].
func appendParam(dst []byte, key string, v int64) []byte {
	dst = append(dst, ';')
	dst = append(dst, key...)
	dst = append(dst, '=')
	return strconv.AppendInt(dst, min(max(v, 0), maxSFInteger), 10)
}

// CheckName says what is wrong with a policy name for the RateLimit header fields, if
// anything: it must not be empty and must be printable ASCII (space to '~'), since it is
// written as a Structured Field String.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("policy name: empty")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("policy name %q: byte %d (%#x) is not printable ASCII", name, i, c)
		}
	}
	return nil
}
