package detector

import (
	"fmt"
	"strconv"
	"strings"
)

// Dim is one dimension a call is described by, and that queries filter and group by.
type Dim uint8

// The dimensions of a call.
const (
	DimMethod Dim = iota
	DimEndpoint
	DimStatus
	DimUpstream
	DimUser
	DimCompany
	DimKey
	DimBlocked
	DimLimited
	numDims
)

var dimNames = [numDims]string{"method", "endpoint", "status", "upstream", "user", "company", "key", "blocked", "limited"}

// String returns the dimension's name as used in rules and query strings.
func (d Dim) String() string {
	if d < numDims {
		return dimNames[d]
	}
	return "dim(" + strconv.Itoa(int(d)) + ")"
}

// ParseDim parses a dimension name ("user", "endpoint", ...).
func ParseDim(s string) (Dim, error) {
	for i, n := range dimNames {
		if n == s {
			return Dim(i), nil
		}
	}
	return 0, fmt.Errorf("unknown dimension %q (want one of %s)", s, strings.Join(dimNames[:], ", "))
}

// DimSet is a set of dimensions.
type DimSet uint16

// Dims builds a set from dimensions.
func Dims(ds ...Dim) DimSet {
	var s DimSet
	for _, d := range ds {
		s |= 1 << d
	}
	return s
}

// Has reports whether d is in the set.
func (s DimSet) Has(d Dim) bool { return s&(1<<d) != 0 }

// Contains reports whether every dimension of o is in s.
func (s DimSet) Contains(o DimSet) bool { return s&o == o }

// List returns the dimensions of the set in order.
func (s DimSet) List() []Dim {
	var out []Dim
	for d := Dim(0); d < numDims; d++ {
		if s.Has(d) {
			out = append(out, d)
		}
	}
	return out
}

// String lists the set's dimension names, comma-separated.
func (s DimSet) String() string {
	var b strings.Builder
	for _, d := range s.List() {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(d.String())
	}
	return b.String()
}

// Route dimensions are those of the route view, which keeps every call at full resolution.
// Caller dimensions identify who called.
const (
	RouteDims  = DimSet(1<<DimMethod | 1<<DimEndpoint | 1<<DimStatus | 1<<DimUpstream | 1<<DimBlocked | 1<<DimLimited)
	CallerDims = DimSet(1<<DimUser | 1<<DimCompany | 1<<DimKey)
)

// Labels are the values of a call's dimensions, or of a series' dimensions (dimensions
// outside the series' view are zero).
type Labels struct {
	Method   string
	Endpoint string
	Upstream string
	User     string
	Company  string
	Key      string
	Status   uint16
	Blocked  bool
	Limited  bool
}

// LabelsOf returns the labels of a call.
func LabelsOf(c *Call) Labels {
	return Labels{
		Method:   c.Method,
		Endpoint: c.Endpoint,
		Upstream: c.Upstream,
		User:     c.User,
		Company:  c.Company,
		Key:      c.Key,
		Status:   uint16(c.Status),
		Blocked:  c.Blocked,
		Limited:  c.Limited,
	}
}

// Project keeps the dimensions in s and zeroes the others.
func (l Labels) Project(s DimSet) Labels {
	var p Labels
	if s.Has(DimMethod) {
		p.Method = l.Method
	}
	if s.Has(DimEndpoint) {
		p.Endpoint = l.Endpoint
	}
	if s.Has(DimStatus) {
		p.Status = l.Status
	}
	if s.Has(DimUpstream) {
		p.Upstream = l.Upstream
	}
	if s.Has(DimUser) {
		p.User = l.User
	}
	if s.Has(DimCompany) {
		p.Company = l.Company
	}
	if s.Has(DimKey) {
		p.Key = l.Key
	}
	if s.Has(DimBlocked) {
		p.Blocked = l.Blocked
	}
	if s.Has(DimLimited) {
		p.Limited = l.Limited
	}
	return p
}

// Get returns the value of one dimension as text.
func (l Labels) Get(d Dim) string {
	switch d {
	case DimMethod:
		return l.Method
	case DimEndpoint:
		return l.Endpoint
	case DimStatus:
		return strconv.Itoa(int(l.Status))
	case DimUpstream:
		return l.Upstream
	case DimUser:
		return l.User
	case DimCompany:
		return l.Company
	case DimKey:
		return l.Key
	case DimBlocked:
		return strconv.FormatBool(l.Blocked)
	case DimLimited:
		return strconv.FormatBool(l.Limited)
	}
	return ""
}

// Map returns the values of the dimensions in s as a map from dimension name to value.
func (l Labels) Map(s DimSet) map[string]string {
	if s == 0 {
		return map[string]string{}
	}
	m := make(map[string]string, 4)
	for _, d := range s.List() {
		m[d.String()] = l.Get(d)
	}
	return m
}
