package detector

import (
	"net/netip"
	"time"
)

// Call is one API call as the gateway saw it. Record copies what it keeps; the caller may
// reuse the Call afterwards.
type Call struct {
	// Time is when the call started.
	Time time.Time
	// Method is the HTTP method; methods outside the standard set are recorded as "OTHER".
	Method string
	// Endpoint is the route template or normalised path ("/users/{id}/orders").
	Endpoint string
	// Path is the raw request path, kept only in the bounded ring of recent calls.
	Path string
	// Status is the response status code (0 when the connection was lost before a status).
	Status int
	// Latency is the time from the start of the call to the end of the response.
	Latency time.Duration
	// BytesIn and BytesOut are the request and response body sizes.
	BytesIn, BytesOut int64
	// User, Company and Key identify the caller; empty or "anonymous" when unknown. Key is
	// already the short hash of the API key ("key:3f2a9c1e"), never the key itself.
	User, Company, Key string
	// IP is the client IP (trusted-proxy aware).
	IP netip.Addr
	// Upstream names where the call went (the upstream's host:port or a configured name);
	// empty when it did not reach an upstream.
	Upstream string
	// Failure says why an upstream call failed when it did.
	Failure Failure
	// RequestID correlates the call with the access log; may be empty.
	RequestID string
	// Blocked is true when the block list refused the call.
	Blocked bool
	// Limited is true when a rate limit or quota refused the call.
	Limited bool
}

// Failure classifies an upstream failure.
type Failure uint8

// Upstream failure kinds.
const (
	FailureNone    Failure = iota // the call did not fail on the way to the upstream
	FailureStatus                 // the upstream answered with a 5xx status
	FailureConnect                // the upstream could not be reached (refused, unreachable, DNS)
	FailureTimeout                // the upstream did not answer in time
	FailureTLS                    // the TLS handshake with the upstream failed
	FailureOther                  // any other proxy error
	numFailures
)

// numFailKinds is the number of failure kinds kept in buckets: the ones beyond
// FailureStatus (a 5xx is already counted by its status).
const numFailKinds = int(numFailures - FailureConnect)

func failKind(f Failure) int { return int(f - FailureConnect) }

var failureNames = [numFailures]string{"", "status", "connect", "timeout", "tls", "other"}

// String returns the failure's name ("connect", "timeout", ...), or "" for FailureNone.
func (f Failure) String() string {
	if f < numFailures {
		return failureNames[f]
	}
	return "other"
}

// Anonymous is the identity of a caller that gave no user, company or key.
const Anonymous = "anonymous"

// Other is the value that overflow is folded into when a cap is reached.
const Other = "other"

// Standard HTTP methods keep their name; any other method is recorded as MethodOther, so
// that a client inventing methods cannot create series.
const MethodOther = "OTHER"

// CanonicalMethod returns m when it is a standard HTTP method, else MethodOther.
func CanonicalMethod(m string) string {
	switch m {
	case "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE":
		return m
	}
	return MethodOther
}
