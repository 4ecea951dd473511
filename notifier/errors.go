package notifier

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DeliveryError is what a Channel returns when an attempt failed: what was attempted (with
// secrets removed), the HTTP status if there was one, and whether trying again may help.
// The Queue reads it through Classify; channels build it with Permanent, Retryable and
// checkResponse.
type DeliveryError struct {
	// Op says what was attempted, free of secrets: "POST https://hooks.slack.com/services/[redacted]".
	Op string
	// StatusCode is the HTTP status of the answer, or 0 when there was none.
	StatusCode int
	// Retryable is true when another attempt may succeed (network errors, timeouts, 408,
	// 429, 5xx, SMTP 4xx).
	Retryable bool
	// RetryAfter is how long the receiver asked to wait (Retry-After), or 0.
	RetryAfter time.Duration
	// Err is the cause.
	Err error
}

// Error returns "<op>: <cause>".
func (e *DeliveryError) Error() string {
	switch {
	case e.Op == "":
		return e.Err.Error()
	case e.Err == nil:
		return e.Op
	}
	return e.Op + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *DeliveryError) Unwrap() error { return e.Err }

// Permanent marks err as not worth retrying (a 4xx answer, a bad configuration).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &DeliveryError{Err: err}
}

// Retryable marks err as worth retrying, after at least retryAfter when it is positive.
func Retryable(err error, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	return &DeliveryError{Err: err, Retryable: true, RetryAfter: retryAfter}
}

// Classify tells the Queue whether a failed attempt is worth repeating, and how long the
// receiver asked to wait. A DeliveryError says so itself; TLS certificate errors are
// permanent (a configuration problem); anything else (network errors, timeouts, errors a
// channel did not classify) is retryable, since giving up loses an alert.
func Classify(err error) (retryable bool, retryAfter time.Duration) {
	if err == nil {
		return false, 0
	}
	if de, ok := errors.AsType[*DeliveryError](err); ok {
		return de.Retryable, de.RetryAfter
	}
	if isCertificateError(err) {
		return false, 0
	}
	return true, 0
}

func isCertificateError(err error) bool {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
	)
	return errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &verify)
}

// retryableStatus reports whether an HTTP status is worth retrying: 408, 425, 429 and 5xx.
func retryableStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooEarly ||
		code == http.StatusTooManyRequests || code >= 500
}

// parseRetryAfter reads a Retry-After header value: delay-seconds or an HTTP date. It
// returns 0 when the value is absent, malformed or in the past.
func parseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(value, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		const maxSecs = int64(365 * 24 * 3600) // caps the conversion, the Queue caps the wait
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(value); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// maxErrorBody is how much of an error answer's body goes into the error text.
const maxErrorBody = 200

// checkResponse turns an HTTP answer into nil (2xx) or a DeliveryError carrying the status,
// its class, Retry-After and the start of the body. Redirects are not followed (a 3xx is a
// permanent failure: the configured URL is wrong). op must already be free of secrets; the
// body is not, so the caller scrubs the returned error.
func checkResponse(op string, resp *http.Response, now time.Time) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4*maxErrorBody))
	msg := resp.Status
	if snippet := bodySnippet(body); snippet != "" {
		msg += ": " + snippet
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		msg += " (redirects are not followed; set the final URL)"
	}
	return &DeliveryError{
		Op:         op,
		StatusCode: resp.StatusCode,
		Retryable:  retryableStatus(resp.StatusCode),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now),
		Err:        errors.New(msg),
	}
}

// bodySnippet returns the start of an answer body on one line, printable and bounded.
func bodySnippet(body []byte) string {
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(body), "?")), " ")
	if len(s) <= maxErrorBody {
		return s
	}
	cut := maxErrorBody
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// transportError turns what http.Client.Do returned into a DeliveryError: the url.Error
// wrapper (whose text holds the full URL, secrets included) is replaced by op, and a
// timeout says after how long.
func transportError(ctx context.Context, op string, err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	if ctx.Err() != nil {
		cause := context.Cause(ctx)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			cause = errors.New("no answer before the attempt timeout")
		}
		if inner := err.Error(); inner != ctx.Err().Error() && inner != context.Cause(ctx).Error() {
			cause = fmt.Errorf("%w (%s)", cause, inner) // says where it stopped: lookup, dial, TLS
		}
		err = cause
	}
	return &DeliveryError{Op: op, Retryable: !isCertificateError(err), Err: err}
}

// redactURL returns u as it may be shown in logs and errors: user info and query removed,
// and the path too when hidePath is set (the path of a Slack webhook URL is its secret).
func redactURL(u *url.URL, hidePath bool) string {
	if u == nil {
		return ""
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	s := r.String()
	if hidePath && u.Path != "" && u.Path != "/" {
		s = (&url.URL{Scheme: u.Scheme, Host: u.Host}).String() + "/" + redacted
	}
	if u.User != nil {
		s = strings.Replace(s, "://", "://"+redacted+"@", 1)
	}
	if u.RawQuery != "" {
		s += "?" + redacted
	}
	return s
}

// scrubber removes known secret values from texts.
type scrubber struct {
	r *strings.Replacer
}

// newScrubber returns a scrubber for the given secret values (empty ones are ignored).
func newScrubber(secrets ...string) scrubber {
	secrets = slices.DeleteFunc(slices.Clone(secrets), func(s string) bool { return s == "" })
	// Longest first, so that a secret containing another is removed whole.
	slices.SortFunc(secrets, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	secrets = slices.Compact(secrets)
	var pairs []string
	for _, s := range secrets {
		pairs = append(pairs, s, redacted)
	}
	if len(pairs) == 0 {
		return scrubber{}
	}
	return scrubber{r: strings.NewReplacer(pairs...)}
}

// String removes the secrets from s.
func (sc scrubber) String(s string) string {
	if sc.r == nil {
		return s
	}
	return sc.r.Replace(s)
}

// Error returns err with the secrets removed from its text; Classify sees through it.
func (sc scrubber) Error(err error) error {
	if err == nil || sc.r == nil {
		return err
	}
	msg := sc.r.Replace(err.Error())
	if msg == err.Error() {
		return err
	}
	return &textError{msg: msg, err: err}
}

// wrapDelivery prefixes err's text with context; Classify still sees through it.
func wrapDelivery(err error, context string) error {
	return &textError{msg: context + ": " + err.Error(), err: err}
}

// textError replaces the text of an error (secrets removed, context added) and keeps the
// error for errors.As.
type textError struct {
	msg string
	err error
}

func (e *textError) Error() string { return e.msg }
func (e *textError) Unwrap() error { return e.err }
