package limit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sfItem is one member of a Structured Field List (RFC 9651), as parsed by parseSFList:
// only what the RateLimit fields use (a String, Token or Integer and its parameters).
type sfItem struct {
	value  any // string (sf-string), sfToken or int64
	params []sfParam
}

type sfToken string

type sfParam struct {
	key   string
	value any // int64, string, sfToken or bool
}

func (it sfItem) param(key string) (any, bool) {
	for _, p := range it.params {
		if p.key == key {
			return p.value, true
		}
	}
	return nil, false
}

// parseSFList parses a field value as a Structured Field List of Items, following the
// algorithms of RFC 9651 section 4.2 (inner lists, decimals, byte sequences, dates and
// display strings are rejected: the RateLimit fields have none).
func parseSFList(s string) ([]sfItem, error) {
	p := &sfParser{s: strings.TrimLeft(s, " ")}
	var items []sfItem
	for p.i < len(p.s) {
		it, err := p.item()
		if err != nil {
			return nil, err
		}
		items = append(items, it)
		p.ows()
		if p.i == len(p.s) {
			return items, nil
		}
		if p.s[p.i] != ',' {
			return nil, fmt.Errorf("at %d: want ',' after a member, got %q", p.i, p.s[p.i])
		}
		p.i++
		p.ows()
		if p.i == len(p.s) {
			return nil, errors.New("trailing comma")
		}
	}
	return items, nil
}

type sfParser struct {
	s string
	i int
}

func (p *sfParser) ows() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *sfParser) item() (sfItem, error) {
	v, err := p.bareItem()
	if err != nil {
		return sfItem{}, err
	}
	it := sfItem{value: v}
	for p.i < len(p.s) && p.s[p.i] == ';' {
		p.i++
		for p.i < len(p.s) && p.s[p.i] == ' ' {
			p.i++
		}
		key, err := p.key()
		if err != nil {
			return sfItem{}, err
		}
		var pv any = true
		if p.i < len(p.s) && p.s[p.i] == '=' {
			p.i++
			if pv, err = p.bareItem(); err != nil {
				return sfItem{}, err
			}
		}
		it.params = append(it.params, sfParam{key, pv})
	}
	return it, nil
}

func (p *sfParser) key() (string, error) {
	start := p.i
	if p.i == len(p.s) || !(p.s[p.i] == '*' || (p.s[p.i] >= 'a' && p.s[p.i] <= 'z')) {
		return "", fmt.Errorf("at %d: a key must start with a lowercase letter or '*'", p.i)
	}
	for p.i < len(p.s) {
		c := p.s[p.i]
		if !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && !strings.ContainsRune("_-.*", rune(c)) {
			break
		}
		p.i++
	}
	return p.s[start:p.i], nil
}

func (p *sfParser) bareItem() (any, error) {
	if p.i == len(p.s) {
		return nil, errors.New("unexpected end: want an item")
	}
	switch c := p.s[p.i]; {
	case c == '-' || (c >= '0' && c <= '9'):
		return p.integer()
	case c == '"':
		return p.str()
	case c == '*' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'):
		start := p.i
		p.i++
		for p.i < len(p.s) && p.s[p.i] > ' ' && p.s[p.i] < 0x7f && !strings.ContainsRune(`"(),;<=>?@[\]{}`, rune(p.s[p.i])) {
			p.i++
		}
		return sfToken(p.s[start:p.i]), nil
	case c == '?':
		if p.i+1 < len(p.s) && (p.s[p.i+1] == '0' || p.s[p.i+1] == '1') {
			p.i += 2
			return p.s[p.i-1] == '1', nil
		}
	}
	return nil, fmt.Errorf("at %d: unsupported or invalid item starting %q", p.i, p.s[p.i])
}

func (p *sfParser) integer() (int64, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	switch {
	case p.i == digits:
		return 0, fmt.Errorf("at %d: '-' without digits", start)
	case p.i-digits > 15:
		return 0, fmt.Errorf("at %d: integer of more than 15 digits", start)
	case p.i < len(p.s) && p.s[p.i] == '.':
		return 0, fmt.Errorf("at %d: decimal where an integer is wanted", start)
	}
	return strconv.ParseInt(p.s[start:p.i], 10, 64)
}

func (p *sfParser) str() (string, error) {
	var b strings.Builder
	for p.i++; p.i < len(p.s); p.i++ {
		c := p.s[p.i]
		switch {
		case c == '\\':
			p.i++
			if p.i == len(p.s) || (p.s[p.i] != '"' && p.s[p.i] != '\\') {
				return "", fmt.Errorf("at %d: bad escape in string", p.i)
			}
			b.WriteByte(p.s[p.i])
		case c == '"':
			p.i++
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return "", fmt.Errorf("at %d: byte %#x not allowed in a string", p.i, c)
		default:
			b.WriteByte(c)
		}
	}
	return "", errors.New("unterminated string")
}

func TestSFParser(t *testing.T) {
	tests := []struct {
		in    string
		valid bool
	}{
		{`"a";q=1, "b";r=2;t=3`, true},
		{`a;q=1`, true},
		{`"a";q=1,`, false},
		{`"a";Q=1`, false},
		{`"a\x";q=1`, false},
		{`"a";q=1.5`, false},
		{`"a";q=1234567890123456`, false},
		{`"a" "b"`, false},
		{`"unterminated`, false},
	}
	for _, tt := range tests {
		if _, err := parseSFList(tt.in); (err == nil) != tt.valid {
			t.Errorf("parseSFList(%q) error = %v, want valid %v", tt.in, err, tt.valid)
		}
	}
}

type wantItem struct {
	name   string
	params map[string]int64
}

func checkList(t *testing.T, field string, got []byte, want []wantItem) {
	t.Helper()
	items, err := parseSFList(string(got))
	if err != nil {
		t.Fatalf("%s: %q is not a Structured Field List: %v", field, got, err)
	}
	if len(items) != len(want) {
		t.Fatalf("%s: %q has %d members, want %d", field, got, len(items), len(want))
	}
	for i, it := range items {
		name, ok := it.value.(string)
		if !ok || name != want[i].name {
			t.Errorf("%s: member %d of %q is %#v, want the sf-string %q", field, i, got, it.value, want[i].name)
		}
		if len(it.params) != len(want[i].params) {
			t.Errorf("%s: member %d of %q has params %v, want %v", field, i, got, it.params, want[i].params)
		}
		for k, v := range want[i].params {
			if pv, ok := it.param(k); !ok || pv != v {
				t.Errorf("%s: member %d of %q: %s = %#v, want %d", field, i, got, k, pv, v)
			}
		}
	}
}

func TestAppendPolicy(t *testing.T) {
	tests := []struct {
		name   string
		build  func() []byte
		want   []wantItem
		wantIs string // also compared as text where the form is fixed
	}{
		{"bucket with burst", func() []byte { return AppendPolicy(nil, "user", 100, 1, 200) },
			[]wantItem{{"user", map[string]int64{"q": 100, "w": 1, "vigil-burst": 200}}}, `"user";q=100;w=1;vigil-burst=200`},
		{"burst equal to q omitted", func() []byte { return AppendPolicy(nil, "ip", 1000, 60, 1000) },
			[]wantItem{{"ip", map[string]int64{"q": 1000, "w": 60}}}, `"ip";q=1000;w=60`},
		{"quota without burst", func() []byte { return AppendPolicy(nil, "user-month", 100000, 2592000, 0) },
			[]wantItem{{"user-month", map[string]int64{"q": 100000, "w": 2592000}}}, ""},
		{"two joined", func() []byte {
			return AppendPolicy(AppendPolicy(nil, "user", 100, 1, 200), "user-month", 100000, 2592000, 0)
		}, []wantItem{{"user", map[string]int64{"q": 100, "w": 1, "vigil-burst": 200}}, {"user-month", map[string]int64{"q": 100000, "w": 2592000}}},
			`"user";q=100;w=1;vigil-burst=200, "user-month";q=100000;w=2592000`},
		{"escapes quote and backslash", func() []byte { return AppendPolicy(nil, `a"b\c`, 1, 1, 0) },
			[]wantItem{{`a"b\c`, map[string]int64{"q": 1, "w": 1}}}, `"a\"b\\c";q=1;w=1`},
		{"replaces non-ASCII", func() []byte { return AppendPolicy(nil, "caf\xc3\xa9\n", 1, 1, 0) },
			[]wantItem{{"caf???", map[string]int64{"q": 1, "w": 1}}}, ""},
		{"clamps to sf-integer range", func() []byte { return AppendPolicy(nil, "x", 1<<62, 0, -3) },
			[]wantItem{{"x", map[string]int64{"q": maxSFInteger, "w": 1}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.build()
			checkList(t, PolicyField, got, tt.want)
			if tt.wantIs != "" && string(got) != tt.wantIs {
				t.Errorf("got %q, want %q", got, tt.wantIs)
			}
		})
	}
}

// TestRateLimitHeaders builds both fields from real state, as the handler does, and
// checks them against the anchors' example (user 100/s burst 200, monthly quota).
func TestRateLimitHeaders(t *testing.T) {
	m := NewMemory(100)
	user := Policy{Name: "user", Rate: Rate{100, time.Second}, Burst: 200}
	req := Request{PolicyID: "site/user", Key: "u-42", Rate: user.Rate, Burst: user.Burst}
	out := make([]Decision, 1)
	for range 13 {
		m.Take(t.Context(), []Request{req}, t0, out)
	}
	q := Quota{100000, Month}
	qd, _ := m.AddQuota(t.Context(), "site/user-month", "u-42", q, nil, t0, 58750)

	var policy, state []byte
	pq, pw := user.Rate.PolicyParams()
	policy = AppendPolicy(policy, user.Name, pq, pw, user.Capacity())
	r, tt := out[0].RateLimitParams()
	state = AppendRateLimit(state, user.Name, r, tt)
	pq, pw = qd.PolicyParams()
	policy = AppendPolicy(policy, "user-month", pq, pw, 0)
	r, tt = qd.RateLimitParams(t0)
	state = AppendRateLimit(state, "user-month", r, tt)

	checkList(t, PolicyField, policy, []wantItem{
		{"user", map[string]int64{"q": 100, "w": 1, "vigil-burst": 200}},
		{"user-month", map[string]int64{"q": 100000, "w": 30 * 86400}},
	})
	checkList(t, StateField, state, []wantItem{
		{"user", map[string]int64{"r": 187, "t": 1}},
		{"user-month", map[string]int64{"r": 41250, "t": 6*86400 + 14*3600}},
	})

	// Denied: r=0 and t equal to Retry-After.
	empty := Request{PolicyID: "slow", Key: "u-42", Rate: Rate{1, 90 * time.Second}}
	m.Take(t.Context(), []Request{empty}, t0, out)
	m.Take(t.Context(), []Request{empty}, t0.Add(500*time.Millisecond), out)
	r, tt = out[0].RateLimitParams()
	if r != 0 || tt != 90 || out[0].RetryAfterSeconds() != 90 {
		t.Errorf("denied: r=%d t=%d Retry-After=%d, want r=0 t=90 Retry-After=90", r, tt, out[0].RetryAfterSeconds())
	}
}

func TestDecisionParams(t *testing.T) {
	tests := []struct {
		name      string
		d         Decision
		wantR     int64
		wantT     int64
		wantRetry int64
	}{
		{"full bucket", Decision{Allowed: true, Remaining: 200}, 200, 0, 0},
		{"refilling", Decision{Allowed: true, Remaining: 187, Reset: 10 * time.Millisecond}, 187, 1, 0},
		{"slow refill rounds up", Decision{Allowed: true, Remaining: 0, Reset: 59*time.Second + 1}, 0, 60, 0},
		{"denied", Decision{Reset: 1500 * time.Millisecond, RetryAfter: 1500 * time.Millisecond}, 0, 2, 2},
		{"denied for a moment", Decision{Reset: time.Nanosecond, RetryAfter: time.Nanosecond}, 0, 1, 1},
	}
	for _, tt := range tests {
		r, tsec := tt.d.RateLimitParams()
		if r != tt.wantR || tsec != tt.wantT || tt.d.RetryAfterSeconds() != tt.wantRetry {
			t.Errorf("%s: r=%d t=%d Retry-After=%d, want r=%d t=%d Retry-After=%d",
				tt.name, r, tsec, tt.d.RetryAfterSeconds(), tt.wantR, tt.wantT, tt.wantRetry)
		}
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string
	}{
		{"user", ""},
		{"user month", ""},
		{`a"b`, ""},
		{"", "policy name: empty"},
		{"caf\xc3\xa9", `policy name "café": byte 3 (0xc3) is not printable ASCII`},
	}
	for _, tt := range tests {
		err := CheckName(tt.name)
		if (tt.wantErr == "" && err != nil) || (tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr)) {
			t.Errorf("CheckName(%q) = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}

func FuzzAppendHeaders(f *testing.F) {
	f.Add("user", int64(100), int64(1), int64(200))
	f.Add(`a"\`, int64(-1), int64(0), int64(1<<62))
	f.Fuzz(func(t *testing.T, name string, a, b, c int64) {
		for _, field := range [][]byte{
			AppendPolicy(AppendPolicy(nil, name, a, b, c), name, c, a, b),
			AppendRateLimit(AppendRateLimit(nil, name, a, b), name, b, c),
		} {
			items, err := parseSFList(string(field))
			if err != nil || len(items) != 2 {
				t.Fatalf("%q: %d members, %v; want a List of 2", field, len(items), err)
			}
		}
	})
}

func BenchmarkAppendHeaders(b *testing.B) {
	policy := make([]byte, 0, 256)
	state := make([]byte, 0, 256)
	d := Decision{Allowed: true, Remaining: 187, Reset: 10 * time.Millisecond}
	rate := Rate{100, time.Second}
	b.ReportAllocs()
	for b.Loop() {
		q, w := rate.PolicyParams()
		policy = AppendPolicy(policy[:0], "user", q, w, 200)
		policy = AppendPolicy(policy, "user-month", 100000, 2592000, 0)
		r, t := d.RateLimitParams()
		state = AppendRateLimit(state[:0], "user", r, t)
		state = AppendRateLimit(state, "user-month", 41250, 604800)
	}
}
