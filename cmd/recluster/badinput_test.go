package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every wrong input gets one line that names the problem and a non-zero
// exit status, never a stack trace.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := write("plain", "not a program", 0o644)
	malformed := write("malformed.json", `{"workers": 2,`, 0o644)
	unknownKey := write("unknown.json", `{"wokers": 2}`, 0o644)
	badValue := write("badvalue.json", `{"workers": "many"}`, 0o644)
	listValue := write("list.json", `{"dir": ["/a", "/b"]}`, 0o644)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	w := sdworkerBin

	cases := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"no command", nil, nil, 2, "Usage: recluster COMMAND"},
		{"unknown command", nil, []string{"frob"}, 2, `unknown command "frob"`},
		{"flag before command", nil, []string{"--workers", "2"}, 2, "--workers is not a command"},
		{"unknown flag", nil, []string{"run", "--bogus", "--", w}, 2, "unknown flag --bogus"},
		{"flag without value", nil, []string{"run", "--workers"}, 2, "flag needs an argument: --workers"},
		{"bad duration", nil, []string{"run", "--timeout", "5", "--", w}, 2, `invalid value "5" for flag --timeout`},
		{"negative duration", nil, []string{"run", "--ready-timeout", "-1s", "--", w}, 2, "--ready-timeout"},
		{"workers 0", nil, []string{"run", "-w", "0", "--", w}, 2, `invalid value "0" for flag -w`},
		{"workers -1", nil, []string{"run", "--workers", "-1", "--", w}, 2, `invalid value "-1" for flag --workers`},
		{"workers abc", nil, []string{"run", "--workers=abc", "--", w}, 2, "want a whole number"},
		{"missing program", nil, []string{"run", "-w", "1", "--"}, 2, "no program given"},
		{"missing --", nil, []string{"run", "-w", "1", w}, 2, "put -- before the program"},
		{"program not found", nil, []string{"run", "--", filepath.Join(dir, "nope")}, 2, "does not exist"},
		{"program not in PATH", nil, []string{"run", "--", "no-such-program-xyz"}, 2, "not found in $PATH"},
		{"program not executable", nil, []string{"run", "--", plain}, 2, "is not executable"},
		{"program is a directory", nil, []string{"run", "--", dir}, 2, "is a directory"},
		{"port in use", nil, []string{"run", "--listen", busy.Addr().String(), "--control", filepath.Join(dir, "c1.sock"), "--", w}, 1, "already in use"},
		{"listen without port", nil, []string{"run", "--listen", "127.0.0.1", "--", w}, 2, "is not an address"},
		{"listen bare port", nil, []string{"run", "--listen", "8080", "--", w}, 2, "did you mean :8080"},
		{"listen port out of range", nil, []string{"run", "--listen", "127.0.0.1:70000", "--", w}, 2, "not a number from 0 to 65535"},
		{"listen bad name", nil, []string{"run", "--listen", "a b=127.0.0.1:0", "--", w}, 2, "socket name"},
		{"listen twice", nil, []string{"run", "--listen", "127.0.0.1:1234", "--listen", "127.0.0.1:1234", "--", w}, 2, "given twice"},
		{"bad ready-when", nil, []string{"run", "--ready-when", "soon", "--", w}, 2, "want one of listening, started, ready"},
		{"bad stop signal", nil, []string{"run", "--stop-signal", "KILL", "--", w}, 2, "--stop-signal"},
		{"bad log format", nil, []string{"run", "--log-format", "xml", "--", w}, 2, "want one of text, json"},
		{"bad env entry", nil, []string{"run", "--env", "FOO", "--", w}, 2, `"FOO" is not KEY=VALUE`},
		{"missing dir", nil, []string{"run", "--dir", filepath.Join(dir, "nope"), "--", w}, 2, "does not exist or is not a directory"},
		{"backoff below respawn", nil, []string{"run", "--backoff", "1ms", "--", w}, 2, "--backoff 1ms is below --respawn 1s"},
		{"bad environment variable", []string{"RECLUSTER_WORKERS=abc"}, []string{"run", "--", w}, 2, `RECLUSTER_WORKERS="abc"`},
		{"bad listen variable", []string{"RECLUSTER_LISTEN=127.0.0.1:80,nope"}, []string{"run", "--", w}, 2, "RECLUSTER_LISTEN"},
		{"config missing", nil, []string{"run", "--config", filepath.Join(dir, "none.json"), "--", w}, 2, "does not exist"},
		{"config malformed", nil, []string{"run", "--config", malformed, "--", w}, 2, "is not a JSON object"},
		{"config unknown key", nil, []string{"run", "--config", unknownKey, "--", w}, 2, `unknown key "wokers"`},
		{"config bad value", nil, []string{"run", "--config", badValue, "--", w}, 2, `"workers": want a whole number`},
		{"config list for a single value", nil, []string{"run", "--config", listValue, "--", w}, 2, `"dir": takes one value`},
		{"config from variable missing", []string{"RECLUSTER_CONFIG=" + filepath.Join(dir, "x.json")}, []string{"run", "--", w}, 2, "does not exist"},
		{"control dir missing", nil, []string{"run", "--control", filepath.Join(dir, "nodir", "c.sock"), "--", w}, 1, "does not exist"},
		{"control path not a socket", nil, []string{"run", "--control", plain, "--", w}, 1, "is not a socket"},
		{"no master", nil, []string{"status", "--control", filepath.Join(dir, "none.sock")}, 1, "no recluster master at"},
		{"no master for reload", []string{"RECLUSTER_CONTROL=" + filepath.Join(dir, "none.sock")}, []string{"reload"}, 1, "no recluster master at"},
		{"status argument", nil, []string{"status", "extra"}, 2, `unexpected argument "extra"`},
		{"status unknown flag", nil, []string{"status", "--yaml"}, 2, "unknown flag --yaml"},
		{"scale 0", nil, []string{"scale", "0"}, 2, "cannot scale to 0 workers"},
		{"scale abc", nil, []string{"scale", "abc"}, 2, `"abc" is not a number of workers`},
		{"scale nothing", nil, []string{"scale"}, 2, "give a number of workers"},
		{"scale +0", nil, []string{"scale", "+0"}, 2, "changes nothing"},
		{"help for unknown", nil, []string{"help", "frob"}, 2, `no help for "frob"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, code := cli(t, c.env, c.args...)
			if code != c.code {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, c.code, stderr)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
				t.Fatalf("stack trace:\n%s", stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			if c.args == nil {
				last = lines[0]
			} else if code == 2 && len(lines) != 1 {
				t.Errorf("want one line, got:\n%s", stderr)
			}
			if !strings.Contains(last, c.want) {
				t.Errorf("want a line with %q, got:\n%s", c.want, stderr)
			}
			if c.args != nil && !strings.HasPrefix(last, "recluster: ") {
				t.Errorf("the line does not start with recluster: %q", last)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}} {
		out, _, code := cli(t, nil, args...)
		if code != 0 || !strings.HasPrefix(out, "Usage: recluster COMMAND") {
			t.Errorf("%v: %d %q", args, code, out)
		}
	}
	for _, cmd := range []string{"run", "reload", "restart", "status", "top", "scale", "stop", "completion", "man", "unit"} {
		for _, args := range [][]string{{"help", cmd}, {cmd, "--help"}, {cmd, "-h"}} {
			out, _, code := cli(t, nil, args...)
			if code != 0 || !strings.HasPrefix(out, "Usage: recluster "+cmd) {
				t.Errorf("%v: %d %q", args, code, out)
			}
		}
	}
	out, _, _ := cli(t, nil, "help", "run")
	for _, l := range strings.Split(out, "\n") {
		if len(l) > 80 {
			t.Errorf("help line longer than 80 columns: %q", l)
		}
	}
}
