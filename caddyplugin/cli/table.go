package cli

import (
	"io"
	"strings"
	"text/tabwriter"
	"unicode"
)

// Table is a text table: a header and rows, written with columns aligned.
type Table struct {
	header []string
	rows   [][]string
}

// NewTable returns an empty table with that header.
func NewTable(header ...string) *Table { return &Table{header: header} }

// Row adds a row. Cells are shown on one line: tabs, line breaks and other control
// characters (which a rule name or a block reason could hold) become spaces, and an empty
// cell shows as "-".
func (t *Table) Row(cells ...string) {
	row := make([]string, len(cells))
	for i, c := range cells {
		row[i] = cell(c)
	}
	t.rows = append(t.rows, row)
}

// Len returns the number of rows.
func (t *Table) Len() int { return len(t.rows) }

// WriteTo writes the header and the rows, columns separated by at least two spaces.
func (t *Table) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	tw := tabwriter.NewWriter(cw, 0, 0, 2, ' ', 0)
	for _, r := range append([][]string{t.header}, t.rows...) {
		if _, err := io.WriteString(tw, strings.Join(r, "\t")+"\n"); err != nil {
			return cw.n, err
		}
	}
	err := tw.Flush()
	return cw.n, err
}

func cell(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if s = strings.TrimSpace(s); s == "" {
		return "-"
	}
	return s
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
