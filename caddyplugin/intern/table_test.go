package intern

import (
	"strconv"
	"sync"
	"testing"
)

func TestTableIntern(t *testing.T) {
	tab := NewTable(3)
	steps := []struct {
		in       string
		want     string
		wantOK   bool
		wantLen  int
		overflow uint64
	}{
		{"/a", "/a", true, 1, 0},
		{"/b", "/b", true, 2, 0},
		{"/a", "/a", true, 2, 0},
		{"/c", "/c", true, 3, 0},
		{"/d", "", false, 3, 1},
		{"/b", "/b", true, 3, 1},
		{"/e", "", false, 3, 2},
		{"/c", "/c", true, 3, 2},
	}
	for i, s := range steps {
		got, ok := tab.Intern([]byte(s.in))
		if got != s.want || ok != s.wantOK || tab.Len() != s.wantLen || tab.Overflow() != s.overflow {
			t.Errorf("step %d: Intern(%q) = %q, %v, Len %d, Overflow %d; want %q, %v, %d, %d",
				i, s.in, got, ok, tab.Len(), tab.Overflow(), s.want, s.wantOK, s.wantLen, s.overflow)
		}
	}
}

func TestTableInternSharesString(t *testing.T) {
	tab := NewTable(10)
	first, _ := tab.Intern([]byte("/users/{id}"))
	for range 100 { // enough lookups to move the entry to the lock-free map
		tab.Intern([]byte("/users/{id}"))
	}
	if got, _ := tab.Intern([]byte("/users/{id}")); got != first || unsafeData(got) != unsafeData(first) {
		t.Errorf("Intern returned a new copy of %q, want the interned string", got)
	}
}

func TestTableInternAllocs(t *testing.T) {
	tab := NewTable(1000)
	keys := make([][]byte, 100)
	for i := range keys {
		keys[i] = []byte("/endpoint/" + strconv.Itoa(i))
		tab.Intern(keys[i])
	}
	for range 10 { // promote everything to the read map
		for _, k := range keys {
			tab.Intern(k)
		}
	}
	i := 0
	if n := testing.AllocsPerRun(1000, func() { tab.Intern(keys[i%len(keys)]); i++ }); n != 0 {
		t.Errorf("Intern of a known endpoint allocates %v times per call, want 0", n)
	}
	full := NewTable(1)
	full.Intern([]byte("/a"))
	b := []byte("/new")
	if n := testing.AllocsPerRun(100, func() { full.Intern(b) }); n != 0 {
		t.Errorf("Intern on a full table allocates %v times per call, want 0", n)
	}
}

func TestTableConcurrent(t *testing.T) {
	const maxEndpoints, workers, perWorker = 500, 8, 2000
	tab := NewTable(maxEndpoints)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 32)
			for i := range perWorker {
				buf = strconv.AppendInt(append(buf[:0], "/e/"...), int64((i*7+w)%1000), 10)
				got, ok := tab.Intern(buf)
				if ok != (got != "") || (ok && got != string(buf)) {
					t.Errorf("Intern(%q) = %q, %v", buf, got, ok)
					return
				}
			}
		}()
	}
	wg.Wait()
	if tab.Len() != maxEndpoints {
		t.Errorf("Len = %d, want %d", tab.Len(), maxEndpoints)
	}
	if tab.Overflow() == 0 {
		t.Errorf("Overflow = 0, want more than 0 after 1000 distinct endpoints into %d", maxEndpoints)
	}
}

func BenchmarkTableIntern(b *testing.B) {
	tab := NewTable(10000)
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = []byte("/v1/endpoint/" + strconv.Itoa(i) + "/{id}")
	}
	for range 20 {
		for _, k := range keys {
			tab.Intern(k)
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tab.Intern(keys[i%len(keys)])
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				tab.Intern(keys[i%len(keys)])
				i++
			}
		})
	})
	b.Run("full-parallel", func(b *testing.B) {
		full := NewTable(1)
		full.Intern([]byte("/a"))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			k := []byte("/never/seen")
			for pb.Next() {
				full.Intern(k)
			}
		})
	})
}
