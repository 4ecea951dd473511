package detector

import (
	"bytes"
	"testing"
	"time"
)

func TestTopFailures(t *testing.T) {
	s := New(Config{})
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	rec := func(ep string, status, n int) {
		for i := 0; i < n; i++ {
			s.Record(&Call{Time: at, Method: "POST", Endpoint: ep, Status: status, User: "u-1"})
		}
	}
	rec("/orders", 400, 50)
	rec("/orders", 200, 500) // successes are not failures
	rec("/users/{id}", 404, 20)
	rec("/login", 401, 10)
	rec("/pay", 502, 5)
	rec("/noise", 405, 1) // a fifth pair: replaces the smallest
	h, ok := s.Caller(DimUser, "u-1")
	if !ok || len(h.TopFailing) != 4 {
		t.Fatalf("top failing %+v", h.TopFailing)
	}
	if f := h.TopFailing[0]; f.Endpoint != "/orders" || f.Status != 400 || f.Count != 50 {
		t.Fatalf("most failing %+v, want /orders 400 x50", f)
	}
	if f := h.TopFailing[1]; f.Endpoint != "/users/{id}" || f.Count != 20 {
		t.Fatalf("second %+v", f)
	}
	// The snapshot keeps them.
	var buf bytes.Buffer
	if err := s.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	s2 := New(Config{})
	if _, err := s2.ReadSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	h2, _ := s2.Caller(DimUser, "u-1")
	if len(h2.TopFailing) != 4 || h2.TopFailing[0] != h.TopFailing[0] || h2.TopFailing[3] != h.TopFailing[3] {
		t.Fatalf("after a snapshot %+v, want %+v", h2.TopFailing, h.TopFailing)
	}
}

func TestCallerCounter(t *testing.T) {
	s := New(Config{})
	m, _ := (&Filter{Status: "400,404,405"}).Compile()
	cc := s.CountCallers(DimUser, m)
	end := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for d := 0; d < 10; d++ {
		at := end.Add(-time.Duration(d)*24*time.Hour - time.Hour)
		for _, st := range []int{400, 404, 405, 401, 200, 400} {
			s.Record(&Call{Time: at, Method: "GET", Endpoint: "/x", Status: st, User: "u-1"})
		}
	}
	if got := cc.Count("u-1", 7*24*time.Hour, end).Calls; got != 4*7 {
		t.Fatalf("400/404/405 over 7 days: %d, want 28", got)
	}
	if got := cc.Count("u-1", 30*24*time.Hour, end).Calls; got != 40 {
		t.Fatalf("over 30 days: %d, want 40", got)
	}
	if got := s.CallerCount(DimUser, "u-1", 7*24*time.Hour, end).Calls; got != 42 {
		t.Fatalf("all calls over 7 days: %d, want 42", got)
	}
	if got := cc.Count("nobody", 7*24*time.Hour, end).Calls; got != 0 {
		t.Fatalf("unknown user: %d", got)
	}
	cc.Release()
	s.Record(&Call{Time: end, Method: "GET", Endpoint: "/x", Status: 400, User: "u-1"})
	if got := cc.Count("u-1", 7*24*time.Hour, end.Add(time.Minute)).Calls; got != 28 {
		t.Fatalf("a released counter still counts: %d", got)
	}
}
