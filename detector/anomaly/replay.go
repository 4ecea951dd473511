package anomaly

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// ReplayOptions configure Replay. The zero value replays continuous values at Moderate
// for both directions.
type ReplayOptions struct {
	// Kind is the metric: Count ("count") or Continuous ("latency"). Default Continuous.
	Kind Kind
	// Sensitivity of the alert column. Default Moderate.
	Sensitivity Sensitivity
	// Direction of the alert column: Up, Down or Both. None (the zero value) means Both.
	Direction Direction
}

// timeLayouts are the time stamp forms Replay reads: NAB's, with or without a fraction of
// a second, and RFC 3339. Time stamps without an offset are UTC.
var timeLayouts = []string{
	"2006-01-02 15:04:05",
	"2006-01-02 15:04:05.999999999",
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04",
}

func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// Replay runs a detector over a CSV series and writes its verdicts, as the command
// "caddy vigil replay" does (SPEC section 8).
//
// The input has a header line naming the columns timestamp and value (other columns are
// ignored), then one row per point in time order. Time stamps are "2014-04-01 00:00:00"
// (optionally with a fraction of a second) or RFC 3339; without an offset they are UTC,
// and the daily and weekly cycles follow the wall clock of each time stamp's offset.
// The output has the header timestamp,value,anomaly_score,alert and one row per input
// row, in the same order, with the time stamp and value exactly as they came in.
// anomaly_score is the detector's Result.Onset: its Score on the rows where an anomaly
// starts or clearly grows, 0 on the rest of the episode; alert is 1 only on the row where the alert at opts.Sensitivity and
// opts.Direction starts firing, and 0 while it stays firing. Both count one incident once. Rows are read, scored and written one at a time: the score of
// a row never depends on later rows, and the file is never held in memory.
//
// An error names the line and column of the bad input, as in
// `line 17, column value: "abc" is not a number`; the rows before it have been written.
func Replay(in io.Reader, out io.Writer, opts ReplayOptions) error {
	if opts.Kind > Count {
		return fmt.Errorf("replay: unknown metric kind %d", opts.Kind)
	}
	if opts.Sensitivity > Severe {
		return fmt.Errorf("replay: unknown sensitivity %d", opts.Sensitivity)
	}
	r := csv.NewReader(bufio.NewReaderSize(in, 64<<10))
	r.ReuseRecord = true
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err == io.EOF {
		return errors.New("line 1: empty input, want a header line timestamp,value")
	}
	if err != nil {
		return csvError(err)
	}
	ti, vi := -1, -1
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		switch {
		case h == "timestamp" && ti < 0:
			ti = i
		case h == "value" && vi < 0:
			vi = i
		}
	}
	if ti < 0 || vi < 0 {
		return fmt.Errorf("line 1: header %q must name the columns timestamp and value", strings.Join(header, ","))
	}
	need := max(ti, vi) + 1

	bw := bufio.NewWriterSize(out, 64<<10)
	w := csv.NewWriter(bw)
	if err := w.Write([]string{"timestamp", "value", "anomaly_score", "alert"}); err != nil {
		return err
	}
	det := New(Config{Kind: opts.Kind, Sensitivity: opts.Sensitivity})
	alerter := NewAlerter(opts.Sensitivity, opts.Direction)
	row := make([]string, 4)
	var scoreBuf []byte
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			w.Flush()
			_ = bw.Flush()
			return csvError(err)
		}
		line, _ := r.FieldPos(0)
		if len(rec) < need {
			w.Flush()
			_ = bw.Flush()
			return fmt.Errorf("line %d: %d fields, want at least %d (timestamp and value)", line, len(rec), need)
		}
		ts, vs := rec[ti], rec[vi]
		t, ok := parseTime(ts)
		if !ok {
			w.Flush()
			_ = bw.Flush()
			return fmt.Errorf("line %d, column timestamp: %q is not a time stamp (want 2014-04-01 00:00:00 or RFC 3339)", line, ts)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(vs), 64)
		switch {
		case err != nil:
			err = fmt.Errorf("line %d, column value: %q is not a number", line, vs)
		case math.IsNaN(v) || math.IsInf(v, 0):
			err = fmt.Errorf("line %d, column value: %q is not a finite number", line, vs)
		case opts.Kind == Count && v < 0:
			err = fmt.Errorf("line %d, column value: %q is not a count (counts are never negative)", line, vs)
		}
		if err != nil {
			w.Flush()
			_ = bw.Flush()
			return err
		}
		res := det.Observe(t, v)
		alert := "0"
		if alerter.Observe(res) == Fired {
			alert = "1"
		}
		scoreBuf = strconv.AppendFloat(scoreBuf[:0], res.Onset, 'f', 6, 64)
		row[0], row[1], row[2], row[3] = ts, vs, string(scoreBuf), alert
		if err := w.Write(row); err != nil {
			return err
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	return bw.Flush()
}

func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		if pe.Column > 0 {
			return fmt.Errorf("line %d, column %d: %v", pe.Line, pe.Column, pe.Err)
		}
		return fmt.Errorf("line %d: %v", pe.Line, pe.Err)
	}
	return err
}
