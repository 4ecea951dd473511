package notifier

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/vigilgw/vigil/detector/alert"
)

func TestSMSRequests(t *testing.T) {
	unicodeRule := firingEvent("ev_u")
	unicodeRule.RuleName = "Ошибки авторизации у партнёра"
	tests := []struct {
		name     string
		to       []string
		batch    alert.Batch
		wantBody string // substring
		maxUnits int    // 160 septets, or 70 UTF-16 units
	}{
		{name: "one event", to: []string{"+15550002222"}, batch: batchOf("sms", firingEvent("ev_1")),
			wantBody: "Vigil FIRING: 401 storm 31 (threshold > 20) user=u-42", maxUnits: 160},
		{name: "two recipients", to: []string{"+15550002222", "+15550003333"}, batch: batchOf("sms", resolvedEvent("ev_1")),
			wantBody: "Vigil RESOLVED: 401 storm", maxUnits: 160},
		{name: "several events", to: []string{"+15550002222"}, batch: batchOf("sms", firingEvent("ev_1"), resolvedEvent("ev_2")),
			wantBody: "2 alerts: 1 firing, 1 resolved", maxUnits: 160},
		{name: "needs UCS-2", to: []string{"+15550002222"}, batch: batchOf("sms", unicodeRule), wantBody: "Ошибки", maxUnits: 70},
		{name: "test notification", to: []string{"+15550002222"}, batch: TestBatch("sms", t0), wantBody: "Vigil TEST", maxUnits: 160},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, status(201, `{"sid":"SM1","status":"queued","error_code":null}`))
			got := sendThrough(t, rc, Config{Name: "sms", Type: TypeSMS, URL: rc.URL, Account: "AC123", Token: "tok-secret",
				From: "+15550001111", To: tt.to}, Options{}, tt.batch, len(tt.to)) // one request per recipient
			for i, req := range got {
				if req.Method != "POST" || req.Path != "/2010-04-01/Accounts/AC123/Messages.json" {
					t.Errorf("request %d: %s %s", i, req.Method, req.Path)
				}
				if ct := req.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
					t.Errorf("Content-Type %q", ct)
				}
				if u, p, ok := parseBasic(req.Header.Get("Authorization")); !ok || u != "AC123" || p != "tok-secret" {
					t.Errorf("basic auth %q/%q, want AC123 and the token", u, p)
				}
				form, err := url.ParseQuery(string(req.Body))
				if err != nil {
					t.Fatal(err)
				}
				if form.Get("To") != tt.to[i] || form.Get("From") != "+15550001111" {
					t.Errorf("To %q From %q", form.Get("To"), form.Get("From"))
				}
				body := form.Get("Body")
				if !strings.Contains(body, tt.wantBody) {
					t.Errorf("Body %q lacks %q", body, tt.wantBody)
				}
				if n := smsUnits(body); n > tt.maxUnits {
					t.Errorf("Body %q takes %d units, want at most %d (one segment)", body, n, tt.maxUnits)
				}
				if strings.Contains(body, "/users/42/orders") {
					t.Error("an SMS must not carry samples")
				}
			}
		})
	}
}

// parseBasic decodes an HTTP Basic Authorization header.
func parseBasic(h string) (string, string, bool) {
	r := &http.Request{Header: http.Header{"Authorization": {h}}}
	return r.BasicAuth()
}

// smsUnits counts GSM-7 septets, or UTF-16 units when the text needs UCS-2.
func smsUnits(s string) int {
	if n, ok := gsmSeptets(s); ok {
		return n
	}
	return len(utf16.Encode([]rune(s)))
}

func TestFitSegment(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   string // exact, when set
		maxLen int    // in units
	}{
		{name: "short GSM kept", in: "Vigil FIRING: 401 storm", want: "Vigil FIRING: 401 storm"},
		{name: "160 GSM kept", in: strings.Repeat("a", 160), want: strings.Repeat("a", 160)},
		{name: "161 GSM cut", in: strings.Repeat("a", 161), want: strings.Repeat("a", 157) + "..."},
		{name: "extension characters count two", in: strings.Repeat("{", 81), maxLen: 160},
		{name: "UCS-2 kept at 70", in: strings.Repeat("ж", 70), want: strings.Repeat("ж", 70)},
		{name: "UCS-2 cut", in: strings.Repeat("ж", 71), want: strings.Repeat("ж", 69) + "…"},
		{name: "surrogate pairs not split", in: strings.Repeat("🔥", 40), maxLen: 70},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fitSegment(tt.in)
			if tt.want != "" && got != tt.want {
				t.Errorf("fitSegment = %q, want %q", got, tt.want)
			}
			limit := 160
			if _, gsm := gsmSeptets(tt.in); !gsm {
				limit = 70
			}
			if n := smsUnits(got); n > limit {
				t.Errorf("%q takes %d units, want at most %d", got, n, limit)
			}
			if strings.ContainsRune(got, '\uFFFD') {
				t.Errorf("%q holds a broken character", got)
			}
		})
	}
}
