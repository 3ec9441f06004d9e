package main

import (
	"regexp"
	"slices"
	"strings"
)

// The help texts (mainUsage and commandUsage) are the one description of
// the command line: completion scripts and the man page are derived from
// them, so none of the three can tell another story.

// cliFlag is a flag as its command's help text describes it.
type cliFlag struct {
	long, short string
	arg         string // its metavariable (N, DUR, FILE), or "" for a switch
}

var flagLine = regexp.MustCompile(`^\s{2,}(?:-([A-Za-z]), )?--([a-z][a-z0-9-]*)(?: (\[?[A-Z][A-Z=_\]]*))?`)

// commandFlags returns the flags of a command, from its help text.
func commandFlags(cmd string) []cliFlag {
	var flags []cliFlag
	inFlags := false
	for _, line := range strings.Split(commandUsage[cmd], "\n") {
		if strings.HasPrefix(line, "Flags:") {
			inFlags = true
			continue
		}
		if !inFlags {
			continue
		}
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flags = append(flags, cliFlag{long: m[2], short: m[1], arg: m[3]})
		}
	}
	return flags
}

// commandNames returns every command, help included, in order.
func commandNames() []string {
	names := []string{"help"}
	for name := range commandUsage {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// commandSummary is the command's line in mainUsage's command list.
func commandSummary(cmd string) string {
	lines := strings.Split(mainUsage, "\n")
	for i, line := range lines {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != cmd || !strings.HasPrefix(line, "  ") || strings.HasPrefix(line, "   ") {
			continue
		}
		// The summary follows the synopsis after two spaces, or starts on
		// the next line when the synopsis is long, and may go on over the
		// next indented lines.
		text := ""
		if col := strings.Index(line[2:], "  "); col >= 0 {
			text = strings.TrimSpace(line[2+col:])
		}
		for _, more := range lines[i+1:] {
			if !strings.HasPrefix(more, "    ") || strings.TrimSpace(more) == "" {
				break
			}
			text += " " + strings.TrimSpace(more)
		}
		return strings.TrimSpace(text)
	}
	return ""
}

// flagChoices lists the values a flag takes, for completion, where they
// are a fixed set.
var flagChoices = map[string][]string{
	"ready-when":  {"listening", "started", "ready"},
	"log-format":  {"text", "json"},
	"output":      outputFormats,
	"log-level":   {"debug", "info", "warn", "error"},
	"stop-signal": {"TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "WINCH", "none"},
}

// argIsFile reports whether a flag's value is a path, for completion.
func argIsFile(arg string) bool {
	return arg == "FILE" || arg == "DIR" || arg == "PATH"
}
