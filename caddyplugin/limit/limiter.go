package limit

import (
	"context"
	"time"
)

// Limiter keeps token buckets. Implementations are safe for concurrent use, never keep
// the slices they are given, and hand back plain values only.
type Limiter interface {
	// Take takes one token from the bucket of each request and reports whether every
	// one of them had a token. out[i] receives the decision for reqs[i]; out must be at
	// least as long as reqs. If any request is denied, no token is taken at all: tokens
	// already taken for the other requests of the call are given back, and the requests
	// after the first denied one are only looked at, as Peek does. An error (a store that
	// cannot be reached) leaves out undefined; the caller decides whether to fail open.
	Take(ctx context.Context, reqs []Request, now time.Time, out []Decision) (bool, error)
	// Peek fills out[i] with the state of the bucket of reqs[i] without taking a token:
	// Allowed says whether a call now would be allowed by that bucket alone. A bucket
	// that is not kept (never used, or evicted) is full.
	Peek(ctx context.Context, reqs []Request, now time.Time, out []Decision) error
}

// QuotaCounter keeps calendar quota counters. Implementations are safe for concurrent
// use and hand back plain values only.
type QuotaCounter interface {
	// AddQuota counts n calls of the caller key against quota q of the policy in the
	// period that contains now in the time zone loc (UTC when nil). With n > 0 the calls
	// are allowed, and counted, only if used+n <= q.Limit; denied calls are not counted.
	// With n == 0 nothing is counted and Allowed says whether one more call fits. With
	// n < 0, -n calls are given back (down to zero), for calls that were counted and then
	// refused by another limit (Store.Check counts all of a call's limits at once and
	// does not need this). A counter keeps the period it was started in until that
	// period ends, so give a policy a new id when its period or time zone changes.
	AddQuota(ctx context.Context, policyID, key string, q Quota, loc *time.Location, now time.Time, n int64) (QuotaDecision, error)
	// QuotaUsage returns the usage of the caller key in the period that contains now.
	QuotaUsage(ctx context.Context, policyID, key string, q Quota, loc *time.Location, now time.Time) (QuotaUsage, error)
}

// Store keeps both token buckets and quota counters, as [Memory] does.
type Store interface {
	Limiter
	QuotaCounter
	// Check is what a gateway asks for each call: it counts the call against every
	// quota of quotas and takes one token from the bucket of each of reqs, all or
	// nothing. When every quota has room and every bucket a token, it counts and takes
	// them, fills qout[i] and out[i] with the state after, and returns true. Otherwise
	// it counts and takes nothing (and keeps nothing new), and qout[i] and out[i]
	// describe the state without this call, Allowed saying whether that quota or bucket
	// alone had room. qout and out must be at least as long as quotas and reqs. One call
	// asks for all of a request's limits at once, so that an implementation can look
	// them up together: in memory, while their cache misses overlap; in a shared store,
	// in one round trip. An error leaves qout and out undefined; the caller decides
	// whether to fail open.
	Check(ctx context.Context, quotas []QuotaRequest, reqs []Request, now time.Time, qout []QuotaDecision, out []Decision) (bool, error)
}

// QuotaRequest asks to count one call against a calendar quota for one caller.
type QuotaRequest struct {
	// PolicyID names the quota stably across config reloads, as [Request.PolicyID] does
	// for a token bucket.
	PolicyID string
	// Key names the caller. It is kept as long as the counter is, so it must not be a
	// string that is later overwritten.
	Key string
	// Quota is the limit per period.
	Quota Quota
	// Loc is the time zone of the period's calendar; nil means UTC.
	Loc *time.Location
}

// Request asks for one token of a token-bucket policy for one caller.
type Request struct {
	// PolicyID names the policy stably across config reloads, such as
	// "api.example.com/user": buckets are kept per policy id and key, and a reload that
	// changes the rate or burst of a policy id keeps its tokens (clamped to the new burst).
	PolicyID string
	// Key names the caller, such as a user id, a key id or an IP address. It is kept as
	// long as the bucket is, so it must not be a string that is later overwritten.
	Key string
	// Rate is the policy's refill rate. The zero Rate means no limit: the request is
	// always allowed and nothing is kept.
	Rate Rate
	// Burst is the policy's bucket size; zero means Rate.Events.
	Burst int64
}

// capacity returns the request's bucket size.
func (r Request) capacity() int64 {
	if r.Burst > 0 {
		return r.Burst
	}
	return r.Rate.Events
}

// Decision is the state of one token bucket after a call to Take or Peek.
type Decision struct {
	// Allowed says whether the bucket had a token for this call.
	Allowed bool
	// Remaining is the number of whole tokens left in the bucket.
	Remaining int64
	// Reset is the time until the bucket holds at least one more whole token than
	// Remaining; zero when the bucket is full.
	Reset time.Duration
	// RetryAfter, when the call was denied, is the time until the bucket holds a token.
	// It is zero when the call was allowed.
	RetryAfter time.Duration
}

// RateLimitParams returns the r and t parameters of the RateLimit field for the
// bucket: r is Remaining and t is Reset in seconds, rounded up (0 for a full bucket).
// For a denied call r is 0 and t is RetryAfter in seconds rounded up, which is also the
// value of the Retry-After field ([Decision.RetryAfterSeconds]), so the two agree.
func (d Decision) RateLimitParams() (r, t int64) {
	if !d.Allowed {
		return 0, d.RetryAfterSeconds()
	}
	return d.Remaining, ceilSeconds(d.Reset)
}

// RetryAfterSeconds returns the value of the Retry-After field for a denied call:
// RetryAfter in whole seconds, rounded up and at least 1. It is 0 for an allowed call.
func (d Decision) RetryAfterSeconds() int64 {
	if d.Allowed {
		return 0
	}
	return max(1, ceilSeconds(d.RetryAfter))
}

// QuotaUsage is the usage of a quota by one caller in the current period.
type QuotaUsage struct {
	// Used is how many calls were counted in the period.
	Used int64 `json:"used"`
	// Remaining is how many more calls the period allows: Limit - Used, at least 0.
	Remaining int64 `json:"remaining"`
	// Limit is the quota's limit per period.
	Limit int64 `json:"limit"`
	// Start is the first instant of the period.
	Start time.Time `json:"start"`
	// ResetsAt is the end of the period, when usage starts again from zero.
	ResetsAt time.Time `json:"resets_at"`
}

// PolicyParams returns the q and w parameters of the RateLimit-Policy field for the
// quota: q is Limit and w the length of the current period in seconds (86400 for most
// days, 2592000 for a 30-day month).
func (u QuotaUsage) PolicyParams() (q, w int64) {
	return u.Limit, max(1, ceilSeconds(u.ResetsAt.Sub(u.Start)))
}

// RateLimitParams returns the r and t parameters of the RateLimit field for the quota:
// r is Remaining and t the seconds until the period ends, rounded up. When the quota is
// used up, t is also the value to give Retry-After.
func (u QuotaUsage) RateLimitParams(now time.Time) (r, t int64) {
	return u.Remaining, ceilSeconds(u.ResetsAt.Sub(now))
}

// QuotaDecision is the outcome of AddQuota: whether the calls were allowed, and the
// usage after counting them.
type QuotaDecision struct {
	// Allowed says whether the calls fit in the quota (and were counted).
	Allowed bool
	QuotaUsage
}
