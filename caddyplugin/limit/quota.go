package limit

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Period is the calendar period of a quota.
type Period uint8

const (
	// Day is a calendar day, from midnight to midnight in the quota's time zone.
	Day Period = iota + 1
	// Month is a calendar month, from midnight on its first day to midnight on the
	// first day of the next month, in the quota's time zone.
	Month
)

// String returns "day" or "month".
func (p Period) String() string {
	switch p {
	case Day:
		return "day"
	case Month:
		return "month"
	}
	return "Period(" + strconv.Itoa(int(p)) + ")"
}

// ParsePeriod reads a period: "day" or "d", "month" or "mo", in any case.
func ParsePeriod(s string) (Period, error) {
	switch strings.ToLower(s) {
	case "day", "d":
		return Day, nil
	case "month", "mo":
		return Month, nil
	}
	return 0, fmt.Errorf("quota period %q: want day, d, month or mo", s)
}

// MarshalText writes the period as [Period.String] does.
func (p Period) MarshalText() ([]byte, error) {
	if p != Day && p != Month {
		return nil, fmt.Errorf("quota period %d: not Day or Month", p)
	}
	return []byte(p.String()), nil
}

// UnmarshalText reads a period as [ParsePeriod] does.
func (p *Period) UnmarshalText(b []byte) error {
	parsed, err := ParsePeriod(string(b))
	if err != nil {
		return err
	}
	*p = parsed
	return nil
}

// Bounds returns the calendar day or month that contains now in the time zone loc (UTC
// when loc is nil): start is its first instant and end the first instant of the next
// one, so that start <= now < end. Days on which the clocks change are 23 or 25 hours
// long, and a day whose midnight does not exist (the clocks jump from 23:59:59 to
// 01:00) starts at the jump. Bounds of a Period that is neither Day nor Month are now,
// now.
func (p Period) Bounds(now time.Time, loc *time.Location) (start, end time.Time) {
	if loc == nil {
		loc = time.UTC
	}
	local := now.In(loc)
	y, m, d := local.Date()
	switch p {
	case Day:
		return firstInstant(y, m, d, loc), firstInstant(y, m, d+1, loc)
	case Month:
		return firstInstant(y, m, 1, loc), firstInstant(y, m+1, 1, loc)
	}
	return now, now
}

// firstInstant returns the first instant whose date in loc is y-m-d or later (m and d
// may be out of range, as for time.Date).
func firstInstant(y int, m time.Month, d int, loc *time.Location) time.Time {
	target := dateKey(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Date()) // normalised
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	if dateKey(t.Date()) == target && dateKey(t.Add(-1).Date()) < target {
		return t // midnight exists: the usual case
	}
	// Midnight falls in a daylight-saving gap and time.Date picked an instant on the
	// wrong side of it: search for the first instant of the day, to the nanosecond.
	lo, hi := t.Add(-48*time.Hour), t.Add(48*time.Hour)
	for hi.Sub(lo) > 1 {
		mid := lo.Add(hi.Sub(lo) / 2)
		if dateKey(mid.Date()) >= target {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

func dateKey(y int, m time.Month, d int) int { return y*10000 + int(m)*100 + d }

// Quota is a calendar quota: at most Limit calls per Period.
type Quota struct {
	// Limit is how many calls are allowed per period; more than zero.
	Limit int64
	// Period is the calendar period, Day or Month.
	Period Period
}

// ParseQuota parses a quota written as LIMIT/PERIOD, where PERIOD is day (or d) or
// month (or mo): "1000/day", "100000/month", "100000/mo". The limit must be more than
// zero.
func ParseQuota(s string) (Quota, error) {
	limit, period, ok := strings.Cut(s, "/")
	if !ok {
		return Quota{}, fmt.Errorf("quota %q: want LIMIT/PERIOD such as 1000/day or 100000/month", s)
	}
	n, err := strconv.ParseInt(limit, 10, 64)
	if err != nil || n <= 0 {
		return Quota{}, fmt.Errorf("quota %q: limit %q: want a whole number more than zero", s, limit)
	}
	p, err := ParsePeriod(period)
	if err != nil {
		return Quota{}, fmt.Errorf("quota %q: %w", s, err)
	}
	return Quota{Limit: n, Period: p}, nil
}

// String returns the quota in the form [ParseQuota] reads: "1000/day".
func (q Quota) String() string {
	return strconv.FormatInt(q.Limit, 10) + "/" + q.Period.String()
}

// MarshalText writes the quota as [Quota.String] does.
func (q Quota) MarshalText() ([]byte, error) {
	if err := q.validate(); err != nil {
		return nil, err
	}
	return []byte(q.String()), nil
}

// UnmarshalText reads a quota as [ParseQuota] does.
func (q *Quota) UnmarshalText(b []byte) error {
	parsed, err := ParseQuota(string(b))
	if err != nil {
		return err
	}
	*q = parsed
	return nil
}

func (q Quota) validate() error {
	if q.Limit <= 0 || (q.Period != Day && q.Period != Month) {
		return fmt.Errorf("quota %d per %v: limit must be more than zero and period day or month", q.Limit, q.Period)
	}
	return nil
}
