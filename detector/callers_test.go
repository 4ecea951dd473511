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
