package anomaly

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// nabCSV is a NAB-style series: flat noise-free values with a jump at row jump.
func nabCSV(rows, jump int) string {
	var b strings.Builder
	b.WriteString("timestamp,value\n")
	at := time.Date(2014, 4, 1, 0, 0, 0, 0, time.UTC)
	for i := range rows {
		v := 20.0 + float64(i%7)*0.5
		if i >= jump {
			v += 200
		}
		fmt.Fprintf(&b, "%s,%g\n", at.Add(time.Duration(i)*5*time.Minute).Format("2006-01-02 15:04:05"), v)
	}
	return b.String()
}

func TestReplay(t *testing.T) {
	in := nabCSV(600, 500)
	var out bytes.Buffer
	if err := Replay(strings.NewReader(in), &out, ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	inLines := strings.Split(strings.TrimSpace(in), "\n")
	outLines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if outLines[0] != "timestamp,value,anomaly_score,alert" {
		t.Errorf("header %q", outLines[0])
	}
	if len(outLines) != len(inLines) {
		t.Fatalf("%d output lines for %d input lines", len(outLines), len(inLines))
	}
	var alerts []int
	for i := 1; i < len(inLines); i++ {
		f := strings.Split(outLines[i], ",")
		if len(f) != 4 || f[0]+","+f[1] != inLines[i] {
			t.Fatalf("line %d: %q does not start with the input %q", i+1, outLines[i], inLines[i])
		}
		if f[3] == "1" {
			alerts = append(alerts, i-1)
		} else if f[3] != "0" {
			t.Fatalf("line %d: alert %q", i+1, f[3])
		}
	}
	if len(alerts) != 1 || alerts[0] != 500 {
		t.Errorf("alerts on rows %v, want only 500 (the jump; 0 while it stays firing)", alerts)
	}
}

func TestReplayFormats(t *testing.T) {
	in := "\ufeffvalue,timestamp,host\n" + // BOM, other order, extra column
		"1,2014-04-01T00:00:00Z,a\n" +
		"2,2014-04-01T00:01:00+02:00,a\n" +
		"3,2014-04-01 00:02:00.5,a\n" +
		"\n" + // blank lines are skipped
		"4,2014-04-01 00:03:00,a\n"
	var out bytes.Buffer
	if err := Replay(strings.NewReader(in), &out, ReplayOptions{Kind: Count, Sensitivity: Severe, Direction: Up}); err != nil {
		t.Fatal(err)
	}
	want := "timestamp,value,anomaly_score,alert\n" +
		"2014-04-01T00:00:00Z,1,0.000000,0\n" +
		"2014-04-01T00:01:00+02:00,2,0.000000,0\n" +
		"2014-04-01 00:02:00.5,3,0.000000,0\n" +
		"2014-04-01 00:03:00,4,0.000000,0\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

func TestReplayErrors(t *testing.T) {
	const head = "timestamp,value\n"
	const row = "2014-04-01 00:00:00,1\n"
	tests := []struct {
		name, in string
		opts     ReplayOptions
		want     string
	}{
		{"empty", "", ReplayOptions{}, "line 1: empty input"},
		{"bad header", "time,val\n" + row, ReplayOptions{}, `line 1: header "time,val" must name the columns timestamp and value`},
		{"not a number", head + row + row + "2014-04-01 00:10:00,abc\n", ReplayOptions{}, `line 4, column value: "abc" is not a number`},
		{"NaN", head + "2014-04-01 00:10:00,NaN\n", ReplayOptions{}, `line 2, column value: "NaN" is not a finite number`},
		{"negative count", head + "2014-04-01 00:10:00,-2\n", ReplayOptions{Kind: Count}, `line 2, column value: "-2" is not a count`},
		{"bad time", head + row + "yesterday,1\n", ReplayOptions{}, `line 3, column timestamp: "yesterday" is not a time stamp`},
		{"missing field", head + row + "2014-04-01 00:10:00\n", ReplayOptions{}, "line 3: 1 fields, want at least 2"},
		{"bad quote", head + row + "\"2014,1\n", ReplayOptions{}, "line 3"},
		{"bad kind", head + row, ReplayOptions{Kind: 7}, "unknown metric kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Replay(strings.NewReader(tt.in), io.Discard, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// Replay streams: rows come out while the input is still open.
func TestReplayStreams(t *testing.T) {
	pr, pw := io.Pipe()
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- Replay(pr, out, ReplayOptions{}) }()
	fmt.Fprint(pw, "timestamp,value\n")
	for i := range 50_000 {
		fmt.Fprintf(pw, "2014-04-01 00:00:00,%d\n", i%3)
	}
	if out.Len() == 0 {
		t.Error("no output after 50,000 rows of an input still open")
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 50_001 {
		t.Errorf("%d lines out, want 50001", n)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func BenchmarkReplay(b *testing.B) {
	in := nabCSV(4000, 3000)
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if err := Replay(strings.NewReader(in), io.Discard, ReplayOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
