//go:build linux

package main

import (
	"fmt"
	"strings"
	"time"
)

// renderedSection is one scenario's part of the report, its "## " line
// included.
type renderedSection struct {
	title string
	text  string
}

// updateReport replaces, in report, the sections whose titles match those
// of fresh (by their number, "5." of "5. Reload time", so that a renamed
// section still replaces its old self), and adds a row to the header's
// table that names them with the date and the command. The rest of the
// report, with its own date, stays as it was measured.
func updateReport(report string, fresh []renderedSection, took time.Duration) (string, error) {
	head, body, ok := strings.Cut(report, "\n## ")
	if !ok {
		return "", fmt.Errorf("the report has no sections to update; run the whole suite")
	}
	parts := strings.Split("## "+body, "\n## ")
	for i := 1; i < len(parts); i++ {
		parts[i] = "## " + parts[i]
	}
	var names []string
	for _, f := range fresh {
		found := false
		for i, p := range parts {
			if sectionKey(p) == sectionKey(f.text) {
				parts[i] = strings.TrimRight(f.text, "\n") + "\n"
				found = true
				break
			}
		}
		if !found {
			return "", fmt.Errorf("the report has no section %q to replace; run the whole suite", f.title)
		}
		names = append(names, f.title)
	}
	row := fmt.Sprintf("| Rerun on %s | %s, by `%s`, in %s |\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		strings.Join(names, "; "), commandLine(), took.Round(time.Second))
	i := strings.Index(head, "| Suite run time |")
	if i < 0 {
		return "", fmt.Errorf("the report's header has no suite run time row; run the whole suite")
	}
	end := i + strings.IndexByte(head[i:], '\n') + 1
	// Rows of earlier reruns stay, after the suite's own.
	for strings.HasPrefix(head[end:], "| Rerun on ") {
		end += strings.IndexByte(head[end:], '\n') + 1
	}
	head = head[:end] + row + head[end:]
	return head + "\n" + strings.Join(parts, "\n"), nil
}

// sectionKey is what identifies a section: the number before the first
// dot of its title, or the whole title line if it has none.
func sectionKey(section string) string {
	line, _, _ := strings.Cut(strings.TrimPrefix(section, "## "), "\n")
	if n, _, ok := strings.Cut(line, "."); ok && n != "" && strings.Trim(n, "0123456789") == "" {
		return n
	}
	return line
}
