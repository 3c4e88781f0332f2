package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress reports a long step on stderr: a redrawn bar on a terminal,
// plain lines otherwise (logs, CI), so output stays readable in both.
type progress struct {
	w     io.Writer
	label string
	total int
	tty   bool
	start time.Time
	last  int
}

func newProgress(w io.Writer, label string, total int) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, label: label, total: total, tty: tty, start: time.Now()}
}

// Set reports that n of total units are done.
func (p *progress) Set(n int) {
	if n == p.last || p.total <= 0 {
		return
	}
	p.last = n
	elapsed := time.Since(p.start).Round(time.Millisecond)
	if !p.tty {
		fmt.Fprintf(p.w, "%s %d/%d (%s)\n", p.label, n, p.total, elapsed)
		return
	}
	const width = 30
	filled := width * n / p.total
	fmt.Fprintf(p.w, "\r%s [%s%s] %d/%d %s", p.label, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), n, p.total, elapsed)
}

// Done ends the bar's line on a terminal.
func (p *progress) Done() {
	if p.tty && p.last > 0 {
		fmt.Fprintln(p.w)
	}
}
