package detector

import (
	"fmt"
	"strconv"
	"strings"
)

// Filter selects calls. The zero Filter matches every call. Text fields match exactly,
// except Endpoint, which is a glob where "*" matches any run of characters (slashes
// included), so "/users/*" matches "/users/{id}" and "/users/{id}/orders".
type Filter struct {
	// Endpoint is a glob over endpoints.
	Endpoint string `json:"endpoint,omitempty"`
	// Method is an HTTP method ("GET").
	Method string `json:"method,omitempty"`
	// Status matches status codes: a code ("401"), a class ("4xx") or a comma-separated
	// list of both ("400,404,405" or "5xx,429").
	Status string `json:"status,omitempty"`
	// User, Company, Key and Upstream match the call's caller and upstream. Key is the
	// key id ("key:3f2a9c1e").
	User     string `json:"user,omitempty"`
	Company  string `json:"company,omitempty"`
	Key      string `json:"key,omitempty"`
	Upstream string `json:"upstream,omitempty"`
	// Blocked, when set, keeps only blocked calls (true) or only calls that were not
	// blocked (false).
	Blocked *bool `json:"blocked,omitempty"`
	// Limited, when set, keeps only calls refused by a rate limit or quota (true) or only
	// calls that were not (false).
	Limited *bool `json:"limited,omitempty"`
}

// Dims returns the dimensions the filter constrains.
func (f *Filter) Dims() DimSet {
	var s DimSet
	if f.Endpoint != "" && f.Endpoint != "*" {
		s |= 1 << DimEndpoint
	}
	if f.Method != "" {
		s |= 1 << DimMethod
	}
	if f.Status != "" {
		s |= 1 << DimStatus
	}
	if f.User != "" {
		s |= 1 << DimUser
	}
	if f.Company != "" {
		s |= 1 << DimCompany
	}
	if f.Key != "" {
		s |= 1 << DimKey
	}
	if f.Upstream != "" {
		s |= 1 << DimUpstream
	}
	if f.Blocked != nil {
		s |= 1 << DimBlocked
	}
	if f.Limited != nil {
		s |= 1 << DimLimited
	}
	return s
}

// Compile checks the filter and returns a matcher for it. Errors name the field.
func (f *Filter) Compile() (*Matcher, error) {
	m := &Matcher{f: *f, dims: f.Dims()}
	if f.Status != "" {
		st, err := ParseStatusSet(f.Status)
		if err != nil {
			return nil, &FieldError{Field: "status", Err: err}
		}
		m.status = st
	}
	if f.Endpoint != "" && !strings.HasPrefix(f.Endpoint, "/") && !strings.HasPrefix(f.Endpoint, "*") && f.Endpoint != Other {
		return nil, &FieldError{Field: "endpoint", Err: fmt.Errorf("%q must start with / or *", f.Endpoint)}
	}
	if f.Method != "" && f.Method != strings.ToUpper(f.Method) {
		m.f.Method = strings.ToUpper(f.Method)
	}
	return m, nil
}

// Matcher is a compiled Filter.
type Matcher struct {
	f      Filter
	dims   DimSet
	status StatusSet
}

// Filter returns the filter the matcher was compiled from.
func (m *Matcher) Filter() Filter { return m.f }

// Dims returns the dimensions the filter constrains.
func (m *Matcher) Dims() DimSet { return m.dims }

// Match reports whether labels match the filter on the dimensions in dims; dimensions not
// in dims are ignored (the caller checks that the series carries what the filter needs).
func (m *Matcher) Match(l *Labels, dims DimSet) bool {
	d := m.dims & dims
	if d == 0 {
		return true
	}
	if d.Has(DimEndpoint) && !Glob(m.f.Endpoint, l.Endpoint) {
		return false
	}
	if d.Has(DimMethod) && m.f.Method != l.Method {
		return false
	}
	if d.Has(DimStatus) && !m.status.Has(int(l.Status)) {
		return false
	}
	if d.Has(DimUpstream) && m.f.Upstream != l.Upstream {
		return false
	}
	if d.Has(DimUser) && m.f.User != l.User {
		return false
	}
	if d.Has(DimCompany) && m.f.Company != l.Company {
		return false
	}
	if d.Has(DimKey) && m.f.Key != l.Key {
		return false
	}
	if d.Has(DimBlocked) && *m.f.Blocked != l.Blocked {
		return false
	}
	if d.Has(DimLimited) && *m.f.Limited != l.Limited {
		return false
	}
	return true
}

// MatchCall reports whether a call matches the filter.
func (m *Matcher) MatchCall(c *Call) bool {
	l := LabelsOf(c)
	return m.Match(&l, m.dims)
}

// StatusSet is a set of HTTP status codes (0 to 999).
type StatusSet struct {
	bits [16]uint64
	text string
}

// ParseStatusSet parses "401", "4xx", "400,404,405" or "5xx,429" (spaces allowed). The
// class 5xx also holds status 0: a call that got no answer at all.
func ParseStatusSet(s string) (StatusSet, error) {
	var st StatusSet
	st.text = s
	if strings.TrimSpace(s) == "" {
		return st, fmt.Errorf("empty status")
	}
	for _, part := range strings.Split(s, ",") {
		p := strings.ToLower(strings.TrimSpace(part))
		switch {
		case len(p) == 3 && p[0] >= '1' && p[0] <= '5' && p[1:] == "xx":
			base := int(p[0]-'0') * 100
			for c := base; c < base+100; c++ {
				st.add(c)
			}
			if base == 500 {
				st.add(0) // a call that got no answer at all failed like a 5xx
			}
		default:
			c, err := strconv.Atoi(p)
			if err != nil || c < 100 || c > 999 {
				return st, fmt.Errorf("%q is not a status code (100-999) or class (1xx-5xx)", part)
			}
			st.add(c)
		}
	}
	return st, nil
}

func (s *StatusSet) add(c int) { s.bits[c>>6] |= 1 << (c & 63) }

// Has reports whether code is in the set.
func (s *StatusSet) Has(code int) bool {
	if code < 0 || code > 999 {
		return false
	}
	return s.bits[code>>6]&(1<<(code&63)) != 0
}

// String returns the text the set was parsed from.
func (s StatusSet) String() string { return s.text }

// Glob reports whether name matches pattern, where "*" matches any run of characters.
func Glob(pattern, name string) bool {
	// Iterative wildcard match with single backtracking point (linear in practice).
	px, nx := 0, 0
	nextPx, nextNx := -1, -1
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			c := pattern[px]
			if c == '*' {
				nextPx, nextNx = px, nx+1
				px++
				continue
			}
			if nx < len(name) && name[nx] == c {
				px++
				nx++
				continue
			}
		}
		if nextPx >= 0 && nextNx <= len(name) {
			px, nx = nextPx, nextNx
			continue
		}
		return false
	}
	return true
}

// FieldError is a validation error that names the field it is about, so that the admin
// API can answer {"error": ..., "field": ...}.
type FieldError struct {
	Field string
	Err   error
}

// Error names the field and says what is wrong with it.
func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *FieldError) Unwrap() error { return e.Err }
