// Package limit enforces rate limits (token buckets) and calendar quotas (per day or
// per month), and writes the IETF RateLimit-Policy and RateLimit header fields.
//
// The state lives behind two small interfaces, [Limiter] and [QuotaCounter], joined in
// [Store] with [Store.Check], which a gateway calls once per request for all of its
// quotas and buckets, all or nothing. They take plain string keys, the time passed in
// and give plain values out, so that a shared store (Redis, for a fleet of gateways) can
// implement them as well as the in-process [Memory].
//
// # Token buckets
//
// A [Policy] allows Rate.Events calls per Rate.Per on average, and bursts of up to Burst
// calls. Each caller key has its own bucket: it starts full (Burst tokens), refills
// continuously at the rate, and every allowed call takes one token.
//
// # Quotas
//
// A [Quota] allows Limit calls per calendar day or month in a given time zone. A day is
// 23 or 25 hours long on daylight-saving changes; a month is 28 to 31 days long. Usage
// starts at zero when a new period starts.
package limit

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Rate is an average rate of events: Events per Per.
type Rate struct {
	// Events is how many events are allowed per Per; more than zero.
	Events int64
	// Per is the length of the window in which Events are allowed; more than zero.
	Per time.Duration
}

// ParseRate parses a rate written as EVENTS/WINDOW: "100/s", "1000/m", "10/h",
// "5000/d", or with a duration as the window: "100/10s", "30/1m30s", "7/2d". The
// duration is a Go duration ("1m30s", "500ms"), which may start with a whole number of
// days ("1d12h"). Both parts must be more than zero.
func ParseRate(s string) (Rate, error) {
	events, window, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want EVENTS/WINDOW such as 100/s or 30/1m30s", s)
	}
	n, err := strconv.ParseInt(events, 10, 64)
	if err != nil || n <= 0 {
		return Rate{}, fmt.Errorf("rate %q: events %q: want a whole number more than zero", s, events)
	}
	per, err := parseWindow(window)
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: window %q: %w", s, window, err)
	}
	return Rate{Events: n, Per: per}, nil
}

// parseWindow parses the window of a rate: a unit alone, or a duration with days.
func parseWindow(s string) (time.Duration, error) {
	switch s {
	case "s":
		return time.Second, nil
	case "m":
		return time.Minute, nil
	case "h":
		return time.Hour, nil
	case "d":
		return 24 * time.Hour, nil
	case "":
		return 0, errors.New("empty: want s, m, h, d or a duration such as 10s")
	}
	var days time.Duration
	if before, after, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.ParseInt(before, 10, 64)
		if err != nil || n < 0 || n > 100000 {
			return 0, errors.New("want a whole number of days before 'd', such as 2d or 1d12h")
		}
		days, s = time.Duration(n)*24*time.Hour, after
	}
	var d time.Duration
	if s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, errors.New("want s, m, h, d or a duration such as 10s, 1m30s or 1d12h")
		}
	}
	if d+days <= 0 {
		return 0, errors.New("must be more than zero")
	}
	return d + days, nil
}

// String returns the rate in the form [ParseRate] reads: "100/s", "30/1m30s", "7/2d".
func (r Rate) String() string {
	var window string
	switch {
	case r.Per == time.Second:
		window = "s"
	case r.Per == time.Minute:
		window = "m"
	case r.Per == time.Hour:
		window = "h"
	case r.Per == 24*time.Hour:
		window = "d"
	case r.Per > 0 && r.Per%(24*time.Hour) == 0:
		window = strconv.FormatInt(int64(r.Per/(24*time.Hour)), 10) + "d"
	case r.Per > 0 && r.Per%time.Hour == 0:
		window = strconv.FormatInt(int64(r.Per/time.Hour), 10) + "h"
	case r.Per > 0 && r.Per%time.Minute == 0:
		window = strconv.FormatInt(int64(r.Per/time.Minute), 10) + "m"
	default:
		window = r.Per.String()
	}
	return strconv.FormatInt(r.Events, 10) + "/" + window
}

// IsZero reports whether r is the zero Rate (no rate set).
func (r Rate) IsZero() bool { return r == Rate{} }

// MarshalText writes the rate as [Rate.String] does.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a rate as [ParseRate] does.
func (r *Rate) UnmarshalText(b []byte) error {
	parsed, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = parsed
	return nil
}

// validate says what is wrong with a rate that did not come from ParseRate.
func (r Rate) validate() error {
	if r.Events <= 0 || r.Per <= 0 {
		return fmt.Errorf("rate %d per %v: events and window must be more than zero", r.Events, r.Per)
	}
	return nil
}

// PolicyParams returns the q and w parameters of the RateLimit-Policy field for a token
// bucket of this rate: w is the window in whole seconds, rounded up and at least 1, and
// q the events allowed per w seconds, rounded down (so that it never overstates the
// rate). For a window of whole seconds q is Events: 100/s gives q=100, w=1; 1000/m gives
// q=1000, w=60; 10/500ms gives q=20, w=1.
func (r Rate) PolicyParams() (q, w int64) {
	if r.Events <= 0 || r.Per <= 0 {
		return 0, 1
	}
	w = max(1, ceilSeconds(r.Per))
	if r.Per == time.Duration(w)*time.Second {
		return r.Events, w
	}
	hi, lo := bits.Mul64(uint64(r.Events), uint64(w)*uint64(time.Second))
	if hi >= uint64(r.Per) {
		return maxSFInteger, w
	}
	quo, _ := bits.Div64(hi, lo, uint64(r.Per))
	return int64(min(quo, maxSFInteger)), w
}

// Policy is a token-bucket rate limit.
type Policy struct {
	// Name names the policy in the RateLimit-Policy and RateLimit header fields, such as
	// "user" or "ip".
	Name string `json:"name"`
	// Rate is how fast the bucket refills: the average rate allowed.
	Rate Rate `json:"rate"`
	// Burst is how many tokens the bucket holds: the most calls allowed at once after a
	// quiet time. Zero means Rate.Events.
	Burst int64 `json:"burst,omitempty"`
}

// Capacity returns the number of tokens the policy's bucket holds: Burst, or
// Rate.Events when Burst is zero.
func (p Policy) Capacity() int64 {
	if p.Burst > 0 {
		return p.Burst
	}
	return p.Rate.Events
}

// Validate says what is wrong with the policy, if anything.
func (p Policy) Validate() error {
	if err := CheckName(p.Name); err != nil {
		return fmt.Errorf("rate-limit policy: %w", err)
	}
	if err := p.Rate.validate(); err != nil {
		return fmt.Errorf("rate-limit policy %q: %w", p.Name, err)
	}
	if p.Burst < 0 {
		return fmt.Errorf("rate-limit policy %q: burst %d: must not be negative", p.Name, p.Burst)
	}
	return nil
}

// ceilSeconds returns d in whole seconds, rounded up; zero or less gives 0.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}
