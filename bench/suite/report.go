//go:build linux

package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
)

// table builds a Markdown table.
type table struct {
	b strings.Builder
}

func newTable(cols ...string) *table {
	t := &table{}
	t.b.WriteString("| " + strings.Join(cols, " | ") + " |\n|")
	for range cols {
		t.b.WriteString("---|")
	}
	t.b.WriteString("\n")
	return t
}

func (t *table) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = strings.ReplaceAll(fmt.Sprint(c), "|", "\\|")
	}
	t.b.WriteString("| " + strings.Join(s, " | ") + " |\n")
}

func (t *table) String() string { return t.b.String() + "\n" }

// verdict is PASS or MISS in bold.
func verdict(ok bool) string {
	if ok {
		return "**PASS**"
	}
	return "**MISS**"
}

// ms formats a duration in milliseconds with one decimal.
func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// mb formats bytes in MB (10^6 bytes, the unit of the targets).
func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

// failures formats the non-zero failure kinds of a result, or "0".
func failures(f loadgen.FailureCounts) string {
	if f.Total() == 0 {
		return "0"
	}
	var parts []string
	for _, k := range loadgen.Kinds {
		if n := f.Get(k); n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	return fmt.Sprintf("%d (%s)", f.Total(), strings.Join(parts, ", "))
}

// examples lists the first example error of each kind.
func examples(r *loadgen.Result) string {
	var b strings.Builder
	for _, k := range loadgen.Kinds {
		for _, e := range r.Examples[k] {
			fmt.Fprintf(&b, "  - %s at %s (reused connection: %v): `%s`\n", k, e.At.Round(time.Millisecond), e.Reused, oneLine(e.Error))
			break
		}
	}
	return b.String()
}
