package cli

import (
	"encoding/json"
	"testing"
	"time"
)

func TestFormats(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Number(20), "20"}, {Number(0.5), "0.5"}, {Number(12.3456), "12.35"}, {Number(-3), "-3"},
		{Millis(0.84), "0.8ms"}, {Millis(12.4), "12ms"}, {Millis(1350), "1.35s"},
		{formatDuration(5 * time.Minute), "5m"}, {formatDuration(90 * time.Minute), "1h30m"},
		{formatDuration(2 * time.Hour), "2h"}, {formatDuration(7 * 24 * time.Hour), "7d"},
		{formatDuration(45 * time.Second), "45s"},
		{Group(map[string]string{"user": "u-1", "company": "acme"}), "company=acme,user=u-1"},
		{cell(" a\tb\x1b[31m\n"), "a b [31m"}, {cell(""), "-"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	var d struct {
		A, B, C Duration
		T, U    Text
	}
	if err := json.Unmarshal([]byte(`{"A": "15m", "B": 86400, "C": null, "T": 20, "U": "> 20"}`), &d); err != nil {
		t.Fatal(err)
	}
	if d.A != "15m" || d.B != "1d" || d.C != "" || d.T != "20" || d.U != "> 20" {
		t.Errorf("decoded %+v", d)
	}
}
