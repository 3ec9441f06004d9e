package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// needTool returns the path of a program the test needs; outside CI a
// missing one skips the test, under CI (which installs it) it fails.
func needTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; .ci/run installs the Debian package %s", name, debianPackage)
	}
	t.Skipf("%s is not installed (apt-get install %s)", name, debianPackage)
	return ""
}

func writeCompletion(t *testing.T, shell string) string {
	t.Helper()
	out, errOut, code := cli(t, nil, "completion", shell)
	if code != 0 || out == "" {
		t.Fatalf("completion %s: %d %q", shell, code, errOut)
	}
	path := filepath.Join(t.TempDir(), "recluster."+shell)
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The bash script parses, registers itself, and completes commands, flags
// and flag values as the help texts describe them.
func TestBashCompletion(t *testing.T) {
	bash := needTool(t, "bash", "bash")
	script := writeCompletion(t, "bash")
	if out, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	complete := func(words ...string) []string {
		t.Helper()
		// COMP_WORDS as bash would split the line; the last word is the
		// one being completed.
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		prog := "source " + script + "\ncomplete -p recluster || exit 9\n" +
			"COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=" + strconv.Itoa(len(words)-1) + "\n" +
			`_recluster; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command(bash, "--norc", "--noprofile", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("completing %q: %v\n%s", words, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if !strings.HasPrefix(lines[0], "complete -F _recluster recluster") {
			t.Fatalf("complete -p recluster said %q", lines[0])
		}
		return lines[1:]
	}
	cases := []struct {
		words []string
		want  []string
	}{
		{[]string{"recluster", "re"}, []string{"reload", "restart"}},
		{[]string{"recluster", "s"}, []string{"scale", "status", "stop"}},
		{[]string{"recluster", "run", "--ready-"}, []string{"--ready-timeout", "--ready-when"}},
		{[]string{"recluster", "run", "--ready-when", "st"}, []string{"started"}},
		{[]string{"recluster", "run", "--log-level", "w"}, []string{"warn"}},
		{[]string{"recluster", "status", "--"}, []string{"--control", "--help", "--json"}},
		{[]string{"recluster", "reload", "--no"}, []string{"--no-wait"}},
		{[]string{"recluster", "completion", "f"}, []string{"fish"}},
		{[]string{"recluster", "help", "sc"}, []string{"scale"}},
		{[]string{"recluster", "run", "-w", ""}, nil},
	}
	for _, c := range cases {
		got := complete(c.words...)
		if len(got) == 1 && got[0] == "" {
			got = nil
		}
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("completing %q: got %q, want %q", c.words, got, c.want)
		}
	}
	// Every flag of run in its help is offered.
	got := complete("recluster", "run", "-")
	for _, f := range commandFlags("run") {
		if !slices.Contains(got, "--"+f.long) {
			t.Errorf("run's completion lacks --%s", f.long)
		}
	}
}

func TestZshAndFishCompletionParse(t *testing.T) {
	zsh := needTool(t, "zsh", "zsh")
	if out, err := exec.Command(zsh, "-n", writeCompletion(t, "zsh")).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	// Loaded into a real completion system, it registers itself.
	prog := "autoload -Uz compinit && compinit -u -D && source " + writeCompletion(t, "zsh") + ` && print -r -- $_comps[recluster]`
	if out, err := exec.Command(zsh, "-f", "-c", prog).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "_recluster" {
		t.Fatalf("zsh: compdef did not register _recluster: %v\n%s", err, out)
	}
	fish := needTool(t, "fish", "fish")
	script := writeCompletion(t, "fish")
	if out, err := exec.Command(fish, "--no-execute", script).CombinedOutput(); err != nil {
		t.Fatalf("fish --no-execute: %v\n%s", err, out)
	}
	out, err := exec.Command(fish, "--no-config", "-c", "source "+script+"; complete -C 'recluster run --ready-when '").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "listening") || !strings.Contains(string(out), "started") {
		t.Fatalf("fish: completing --ready-when: %v\n%s", err, out)
	}
	out, err = exec.Command(fish, "--no-config", "-c", "source "+script+"; complete -C 'recluster re'").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "restart") || !strings.Contains(string(out), "reload") {
		t.Fatalf("fish: completing commands: %v\n%s", err, out)
	}
}

// The man page is recluster help: every line of every command's help is
// in the rendered page, and groff finds nothing to warn about.
func TestManPageIsTheHelp(t *testing.T) {
	nroff := needTool(t, "groff", "groff-base")
	page, _, code := cli(t, nil, "man")
	if code != 0 {
		t.Fatalf("man: exit status %d", code)
	}
	cmd := exec.Command(nroff, "-man", "-Tutf8", "-ww", "-rLL=100n")
	cmd.Stdin = strings.NewReader(page)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("groff: %v\n%s", err, stderr.String())
	}
	// groff overstrikes for bold; drop it, and compare words only.
	rendered := strings.Join(strings.Fields(stripOverstrike(string(out))), " ")
	texts := map[string]string{"": mainUsage}
	for name, text := range commandUsage {
		texts[name] = text
	}
	for name, text := range texts {
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimPrefix(line, "Usage: ") // the synopsis says it
			if line = strings.Join(strings.Fields(line), " "); line != "" && !strings.Contains(rendered, line) {
				t.Errorf("the man page lacks the line %q of the help of %q", line, name)
			}
		}
	}
}

func stripOverstrike(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i := 0; i < len(r); i++ {
		if i+1 < len(r) && r[i+1] == '\b' {
			i++
			continue
		}
		b.WriteRune(r[i])
	}
	return b.String()
}
