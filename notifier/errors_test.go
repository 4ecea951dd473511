package notifier

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		value string
		want  time.Duration
	}{
		{name: "seconds", value: "120", want: 2 * time.Minute},
		{name: "spaces", value: " 3 ", want: 3 * time.Second},
		{name: "HTTP date", value: now.Add(90 * time.Second).Format(http.TimeFormat), want: 90 * time.Second},
		{name: "date in the past", value: now.Add(-time.Minute).Format(http.TimeFormat), want: 0},
		{name: "absent", value: "", want: 0},
		{name: "negative", value: "-5", want: 0},
		{name: "garbage", value: "soon", want: 0},
		{name: "huge", value: "99999999999999", want: 365 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseRetryAfter(tt.value, now); got != tt.want {
				t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.value, got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	resp := func(code int, retryAfter string) error {
		r := &http.Response{StatusCode: code, Status: fmt.Sprintf("%d %s", code, http.StatusText(code)),
			Header: http.Header{}, Body: http.NoBody}
		if retryAfter != "" {
			r.Header.Set("Retry-After", retryAfter)
		}
		return checkResponse("POST https://h/x", r, time.Now())
	}
	tests := []struct {
		name      string
		err       error
		wantRetry bool
		wantAfter time.Duration
	}{
		{name: "network", err: errors.New("connection refused"), wantRetry: true},
		{name: "408", err: resp(408, ""), wantRetry: true},
		{name: "429 with Retry-After", err: resp(429, "7"), wantRetry: true, wantAfter: 7 * time.Second},
		{name: "503", err: resp(503, ""), wantRetry: true},
		{name: "400", err: resp(400, ""), wantRetry: false},
		{name: "401", err: resp(401, ""), wantRetry: false},
		{name: "404", err: resp(404, ""), wantRetry: false},
		{name: "410", err: resp(410, ""), wantRetry: false},
		{name: "3xx", err: resp(302, ""), wantRetry: false},
		{name: "Permanent", err: Permanent(errors.New("bad config")), wantRetry: false},
		{name: "wrapped Retryable", err: fmt.Errorf("ctx: %w", Retryable(errors.New("x"), time.Second)), wantRetry: true, wantAfter: time.Second},
		{name: "scrubbed keeps the class", err: newScrubber("k").Error(Permanent(errors.New("k"))), wantRetry: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			retry, after := Classify(tt.err)
			if retry != tt.wantRetry || after != tt.wantAfter {
				t.Errorf("Classify(%v) = %v, %s; want %v, %s", tt.err, retry, after, tt.wantRetry, tt.wantAfter)
			}
		})
	}
	if err := resp(204, ""); err != nil {
		t.Errorf("204: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		hidePath bool
		want     string
	}{
		{name: "plain", raw: "https://h.example.com/in", want: "https://h.example.com/in"},
		{name: "credentials and query", raw: "https://u:p@h.example.com/in?token=x", want: "https://[redacted]@h.example.com/in?[redacted]"},
		{name: "hidden path", raw: "https://hooks.slack.com/services/T/B/X", hidePath: true, want: "https://hooks.slack.com/[redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, _ := url.Parse(tt.raw)
			if got := redactURL(u, tt.hidePath); got != tt.want {
				t.Errorf("redactURL = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTransportErrorHidesURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	err := transportError(ctx, "POST https://hooks.slack.com/[redacted]",
		&url.Error{Op: "Post", URL: "https://hooks.slack.com/services/T/B/SECRET", Err: context.DeadlineExceeded})
	if strings.Contains(err.Error(), "SECRET") || !strings.Contains(err.Error(), "attempt timeout") {
		t.Errorf("error %q", err)
	}
	if retry, _ := Classify(err); !retry {
		t.Error("a timeout must be retryable")
	}
}
