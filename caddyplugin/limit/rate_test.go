package limit

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the DST cases must not depend on the machine's zoneinfo
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    Rate
		wantErr string
	}{
		{in: "100/s", want: Rate{100, time.Second}},
		{in: "1000/m", want: Rate{1000, time.Minute}},
		{in: "10/h", want: Rate{10, time.Hour}},
		{in: "5000/d", want: Rate{5000, 24 * time.Hour}},
		{in: "100/10s", want: Rate{100, 10 * time.Second}},
		{in: "30/1m30s", want: Rate{30, 90 * time.Second}},
		{in: "10/500ms", want: Rate{10, 500 * time.Millisecond}},
		{in: "7/2d", want: Rate{7, 48 * time.Hour}},
		{in: "7/1d12h", want: Rate{7, 36 * time.Hour}},
		{in: "1/1s", want: Rate{1, time.Second}},
		{in: "100", wantErr: `rate "100": want EVENTS/WINDOW`},
		{in: "0/s", wantErr: `rate "0/s": events "0": want a whole number more than zero`},
		{in: "-5/s", wantErr: `events "-5"`},
		{in: "x/s", wantErr: `events "x"`},
		{in: "1.5/s", wantErr: `events "1.5"`},
		{in: "100/", wantErr: `rate "100/": window "": empty`},
		{in: "100/0s", wantErr: `window "0s": must be more than zero`},
		{in: "100/-1s", wantErr: `window "-1s": must be more than zero`},
		{in: "100/0d", wantErr: `window "0d": must be more than zero`},
		{in: "100/week", wantErr: `window "week": want s, m, h, d or a duration`},
		{in: "100/1.5d", wantErr: `want a whole number of days`},
		{in: "100/s/s", wantErr: `window "s/s"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRate(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseRate(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			back, err := ParseRate(got.String())
			if err != nil || back != got {
				t.Errorf("ParseRate(%q.String() = %q) = %v, %v; want %v", tt.in, got.String(), back, err, got)
			}
		})
	}
}

func TestRateString(t *testing.T) {
	tests := []struct {
		r    Rate
		want string
	}{
		{Rate{100, time.Second}, "100/s"},
		{Rate{1000, time.Minute}, "1000/m"},
		{Rate{10, time.Hour}, "10/h"},
		{Rate{5000, 24 * time.Hour}, "5000/d"},
		{Rate{7, 48 * time.Hour}, "7/2d"},
		{Rate{7, 2 * time.Hour}, "7/2h"},
		{Rate{30, 90 * time.Second}, "30/1m30s"},
		{Rate{30, 5 * time.Minute}, "30/5m"},
		{Rate{10, 500 * time.Millisecond}, "10/500ms"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.r, got, tt.want)
		}
	}
}

func TestRatePolicyParams(t *testing.T) {
	tests := []struct {
		r            Rate
		wantQ, wantW int64
	}{
		{Rate{100, time.Second}, 100, 1},
		{Rate{1000, time.Minute}, 1000, 60},
		{Rate{5000, 24 * time.Hour}, 5000, 86400},
		{Rate{10, 500 * time.Millisecond}, 20, 1},
		{Rate{3, 1500 * time.Millisecond}, 4, 2},
		{Rate{1, 3 * time.Second}, 1, 3},
		{Rate{7, 2500 * time.Millisecond}, 8, 3}, // 8.4 rounded down
		{Rate{1 << 62, time.Nanosecond}, maxSFInteger, 1},
	}
	for _, tt := range tests {
		q, w := tt.r.PolicyParams()
		if q != tt.wantQ || w != tt.wantW {
			t.Errorf("%v.PolicyParams() = q=%d w=%d, want q=%d w=%d", tt.r, q, w, tt.wantQ, tt.wantW)
		}
	}
}

func TestParseQuota(t *testing.T) {
	tests := []struct {
		in      string
		want    Quota
		wantErr string
	}{
		{in: "1000/day", want: Quota{1000, Day}},
		{in: "1000/d", want: Quota{1000, Day}},
		{in: "100000/month", want: Quota{100000, Month}},
		{in: "100000/mo", want: Quota{100000, Month}},
		{in: "5/Month", want: Quota{5, Month}},
		{in: "1000", wantErr: `quota "1000": want LIMIT/PERIOD`},
		{in: "0/day", wantErr: `quota "0/day": limit "0": want a whole number more than zero`},
		{in: "-1/day", wantErr: `limit "-1"`},
		{in: "10/week", wantErr: `quota "10/week": quota period "week": want day, d, month or mo`},
		{in: "10/m", wantErr: `quota period "m"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseQuota(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseQuota(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseQuota(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if back, err := ParseQuota(got.String()); err != nil || back != got {
				t.Errorf("ParseQuota(%q) = %v, %v; want %v", got.String(), back, err, got)
			}
		})
	}
}

func TestTextMarshaling(t *testing.T) {
	type config struct {
		Rate   Rate   `json:"rate"`
		Quota  Quota  `json:"quota"`
		Period Period `json:"period"`
	}
	in := config{Rate{30, 90 * time.Second}, Quota{1000, Day}, Month}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"rate":"30/1m30s","quota":"1000/day","period":"month"}`; string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	var out config
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("json round trip = %+v, %v; want %+v", out, err, in)
	}
	if err := json.Unmarshal([]byte(`{"rate":"0/s"}`), &out); err == nil || !strings.Contains(err.Error(), `rate "0/s"`) {
		t.Errorf("unmarshal of a bad rate: error %v, want one naming the rate", err)
	}
}

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestPeriodBounds(t *testing.T) {
	paris := mustLoad(t, "Europe/Paris")
	saoPaulo := mustLoad(t, "America/Sao_Paulo")
	newYork := mustLoad(t, "America/New_York")
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name               string
		period             Period
		now                string
		loc                *time.Location
		wantStart, wantEnd string
		wantLen            time.Duration
	}{
		{"day in utc", Day, "2026-11-24T10:30:00Z", nil, "2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z", 24 * time.Hour},
		{"day at its first instant", Day, "2026-11-24T00:00:00Z", time.UTC, "2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z", 24 * time.Hour},
		{"day at its last instant", Day, "2026-11-24T23:59:59.999999999Z", time.UTC, "2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z", 24 * time.Hour},
		{"day in paris is the utc evening before", Day, "2026-11-23T23:30:00Z", paris, "2026-11-23T23:00:00Z", "2026-11-24T23:00:00Z", 24 * time.Hour},
		{"paris spring forward is 23 hours", Day, "2026-03-29T12:00:00Z", paris, "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 23 * time.Hour},
		{"paris fall back is 25 hours", Day, "2026-10-25T12:00:00Z", paris, "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 25 * time.Hour},
		{"new york spring forward", Day, "2026-03-08T12:00:00Z", newYork, "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", 23 * time.Hour},
		{"sao paulo day whose midnight does not exist", Day, "2018-11-04T12:00:00Z", saoPaulo, "2018-11-04T03:00:00Z", "2018-11-05T02:00:00Z", 23 * time.Hour},
		{"sao paulo day before a missing midnight", Day, "2018-11-04T02:30:00Z", saoPaulo, "2018-11-03T03:00:00Z", "2018-11-04T03:00:00Z", 24 * time.Hour},
		{"month of 30 days", Month, "2026-11-24T10:00:00Z", nil, "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", 30 * 24 * time.Hour},
		{"month end", Month, "2026-01-31T23:59:59Z", time.UTC, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", 31 * 24 * time.Hour},
		{"february", Month, "2026-02-14T00:00:00Z", time.UTC, "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", 28 * 24 * time.Hour},
		{"february of a leap year", Month, "2028-02-29T12:00:00Z", time.UTC, "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z", 29 * 24 * time.Hour},
		{"leap day", Day, "2028-02-29T12:00:00Z", time.UTC, "2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z", 24 * time.Hour},
		{"2100 is not a leap year", Month, "2100-02-10T00:00:00Z", time.UTC, "2100-02-01T00:00:00Z", "2100-03-01T00:00:00Z", 28 * 24 * time.Hour},
		{"year end day", Day, "2026-12-31T18:00:00Z", time.UTC, "2026-12-31T00:00:00Z", "2027-01-01T00:00:00Z", 24 * time.Hour},
		{"year end month", Month, "2026-12-31T23:59:59Z", time.UTC, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", 31 * 24 * time.Hour},
		{"new year in paris while utc is still in december", Month, "2026-12-31T23:30:00Z", paris, "2026-12-31T23:00:00Z", "2027-01-31T23:00:00Z", 31 * 24 * time.Hour},
		{"paris march holds the spring forward", Month, "2026-03-15T12:00:00Z", paris, "2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z", 31*24*time.Hour - time.Hour},
		{"paris october holds the fall back", Month, "2026-10-15T12:00:00Z", paris, "2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z", 31*24*time.Hour + time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := utc(tt.now)
			start, end := tt.period.Bounds(now, tt.loc)
			if !start.Equal(utc(tt.wantStart)) || !end.Equal(utc(tt.wantEnd)) {
				t.Errorf("%v.Bounds(%s) = %s, %s; want %s, %s", tt.period, tt.now,
					start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), tt.wantStart, tt.wantEnd)
			}
			if got := end.Sub(start); got != tt.wantLen {
				t.Errorf("%v.Bounds(%s) is %v long, want %v", tt.period, tt.now, got, tt.wantLen)
			}
			if now.Before(start) || !now.Before(end) {
				t.Errorf("%v.Bounds(%s) = [%s, %s) does not hold now", tt.period, tt.now, start, end)
			}
		})
	}
}

// TestPeriodBoundsTile walks a DST year in steps and checks that consecutive periods
// meet exactly: the end of one is the start of the next.
func TestPeriodBoundsTile(t *testing.T) {
	for _, name := range []string{"Europe/Paris", "America/Sao_Paulo", "Australia/Lord_Howe", "Pacific/Apia"} {
		loc := mustLoad(t, name)
		for _, p := range []Period{Day, Month} {
			now := time.Date(2011, 1, 1, 0, 0, 0, 0, time.UTC)
			start, end := p.Bounds(now, loc)
			for range 400 {
				if now.Before(start) || !now.Before(end) {
					t.Fatalf("%s %v: Bounds(%s) = [%s, %s) does not hold now", name, p, now, start, end)
				}
				nextStart, nextEnd := p.Bounds(end, loc)
				if !nextStart.Equal(end) {
					t.Fatalf("%s %v: period after [%s, %s) starts at %s", name, p, start, end, nextStart)
				}
				now, start, end = end.Add(time.Hour), nextStart, nextEnd
				if !now.Before(end) {
					now = start
				}
			}
		}
	}
}
