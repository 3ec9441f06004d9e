package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Flags win over environment variables, which win over the config file,
// which wins over the defaults.
func TestLayering(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(file, []byte(`{"workers": 1, "timeout": "7s", "listen": ["a=127.0.0.1:1", "127.0.0.1:2"],
		"ready-when": "ready", "prefix": true, "env": ["A=1"], "backoff": null}`), 0o644)
	env := map[string]string{"RECLUSTER_CONFIG": file}
	getenv := func(k string) string { return env[k] }
	parse := func(args ...string) *runConfig {
		t.Helper()
		cfg, err := parseRun(append(args, "--", "prog"), getenv)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	cfg := parse()
	if cfg.workers != 1 || cfg.timeout != 7*time.Second || !cfg.timeoutSet || cfg.readyWhen != "ready" || !cfg.prefix ||
		!slices.Equal(cfg.listen, []string{"a=127.0.0.1:1", "127.0.0.1:2"}) || !slices.Equal(cfg.env, []string{"A=1"}) || cfg.backoff != 0 {
		t.Errorf("from the file: %+v", cfg)
	}
	env["RECLUSTER_WORKERS"] = "2"
	env["RECLUSTER_LISTEN"] = "127.0.0.1:3, 127.0.0.1:4"
	env["RECLUSTER_PREFIX"] = "false"
	cfg = parse()
	if cfg.workers != 2 || cfg.prefix || !slices.Equal(cfg.listen, []string{"127.0.0.1:3", "127.0.0.1:4"}) || cfg.timeout != 7*time.Second {
		t.Errorf("environment over file: %+v", cfg)
	}
	cfg = parse("-w", "3", "--listen", "127.0.0.1:5", "--timeout", "0s")
	if cfg.workers != 3 || !slices.Equal(cfg.listen, []string{"127.0.0.1:5"}) || cfg.timeout != 0 || !cfg.timeoutSet {
		t.Errorf("flags over environment: %+v", cfg)
	}
	cfg, err := parseRun([]string{"--", "prog", "--flag", "x"}, func(string) string { return "" })
	if err != nil || cfg.workers != 0 || cfg.timeoutSet || cfg.readyWhen != "listening" || cfg.stopSignal != "TERM" ||
		cfg.program != "prog" || !slices.Equal(cfg.args, []string{"--flag", "x"}) {
		t.Errorf("defaults: %+v %v", cfg, err)
	}
}

func TestParseListen(t *testing.T) {
	for in, want := range map[string][3]string{
		"127.0.0.1:80":         {"", "tcp", "127.0.0.1:80"},
		":8080":                {"", "tcp", ":8080"},
		"http=[::1]:80":        {"http", "tcp", "[::1]:80"},
		"tcp6:[::]:80":         {"", "tcp6", "[::]:80"},
		"unix:/run/app.sock":   {"", "unix", "/run/app.sock"},
		"api=/run/a=b.sock":    {"api", "unix", "/run/a=b.sock"},
		"/run/app.sock":        {"", "unix", "/run/app.sock"},
		"localhost:0":          {"", "tcp", "localhost:0"},
		"metrics=unix:@ab":     {"metrics", "unix", "@ab"},
		"web=tcp4:0.0.0.0:443": {"web", "tcp4", "0.0.0.0:443"},
	} {
		spec, err := parseListen(in)
		if err != nil || spec.sock.Name != want[0] || spec.sock.Network != want[1] || spec.sock.Address != want[2] || spec.named != (want[0] != "") {
			t.Errorf("%q: %+v %v, want %v", in, spec, err, want)
		}
	}
	for _, bad := range []string{"", "80", "host", "unix:", "a:b=1", "x=127.0.0.1:99999", "=:80"} {
		if _, err := parseListen(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// Handoff is on unless --no-handoff (or its variable) turns it off.
func TestNoHandoff(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		off  bool
	}{{nil, "", false}, {[]string{"--no-handoff"}, "", true}, {nil, "true", true}} {
		cfg, err := parseRun(append(tc.args, "--", "/bin/true"), func(k string) string {
			if k == "RECLUSTER_NO_HANDOFF" {
				return tc.env
			}
			return ""
		})
		if err != nil {
			t.Fatal(err)
		}
		_, o, _, err := cfg.options(nil)
		if err != nil || o.DisableHandoff != tc.off {
			t.Errorf("args %v, RECLUSTER_NO_HANDOFF=%q: DisableHandoff %v (error %v), want %v", tc.args, tc.env, o.DisableHandoff, err, tc.off)
		}
	}
}
