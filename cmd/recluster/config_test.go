package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The same settings written as JSON, YAML and TOML.
var sameConfig = map[string]string{
	"json": `{"workers": 3, "timeout": "7s", "listen": ["http=127.0.0.1:1", "127.0.0.1:2"],
	"ready-when": "ready", "prefix": true, "env": ["A=1", "B=two words"], "max-rss": "512M",
	"respawn": "250ms", "log-format": "json"}`,
	"yaml": `# the same in YAML
workers: 3
timeout: 7s
listen:
  - http=127.0.0.1:1
  - 127.0.0.1:2
ready-when: ready
prefix: true
env: ["A=1", "B=two words"]
max-rss: 512M
respawn: 250ms
log-format: json
`,
	"toml": `# the same in TOML
workers = 3
timeout = "7s"
listen = ["http=127.0.0.1:1", "127.0.0.1:2"]
ready-when = "ready"
prefix = true
env = ["A=1", "B=two words"]
max-rss = "512M"
respawn = "250ms"
log-format = "json"
`,
}

func parseWithConfig(t *testing.T, path string) (*runConfig, error) {
	t.Helper()
	return parseRun([]string{"--config", path, "--", "prog"}, func(string) string { return "" })
}

func TestConfigFormatsAgree(t *testing.T) {
	dir := t.TempDir()
	var want string
	for _, ext := range []string{"json", "yaml", "yml", "toml"} {
		body := sameConfig[ext]
		if ext == "yml" {
			body = sameConfig["yaml"]
		}
		path := filepath.Join(dir, "recluster."+ext)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := parseWithConfig(t, path)
		if err != nil {
			t.Fatalf("%s: %v", ext, err)
		}
		cfg.configPath = ""
		got := fmt.Sprintf("%+v", *cfg)
		if cfg.workers != 3 || cfg.maxRSS != 512<<20 || !cfg.prefix || len(cfg.env) != 2 || cfg.env[1] != "B=two words" {
			t.Fatalf("%s: settings not read: %s", ext, got)
		}
		if want == "" {
			want = got
		} else if got != want {
			t.Fatalf("%s gives other settings than JSON:\n%s\nwant\n%s", ext, got, want)
		}
	}
}

// A bad key, a bad value and a list for a single value give the same error
// in every format, up to the file's name.
func TestConfigFormatsFailAlike(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]map[string]string{
		"unknown key": {
			"json": `{"wokers": 3}`, "yaml": "wokers: 3\n", "toml": "wokers = 3\n",
		},
		"bad value": {
			"json": `{"workers": "many"}`, "yaml": "workers: many\n", "toml": `workers = "many"` + "\n",
		},
		"list for one value": {
			"json": `{"dir": ["/a", "/b"]}`, "yaml": "dir: [/a, /b]\n", "toml": `dir = ["/a", "/b"]` + "\n",
		},
	}
	for name, byFormat := range cases {
		var want string
		for _, ext := range []string{"json", "yaml", "toml"} {
			path := filepath.Join(dir, "c."+ext)
			if err := os.WriteFile(path, []byte(byFormat[ext]), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := parseWithConfig(t, path)
			if err == nil {
				t.Fatalf("%s in %s: no error", name, ext)
			}
			got := strings.ReplaceAll(err.Error(), path, "FILE")
			if want == "" {
				want = got
			} else if got != want {
				t.Errorf("%s: %s says %q, JSON says %q", name, ext, got, want)
			}
		}
		if name == "unknown key" && !strings.Contains(want, `unknown key "wokers"; did you mean "workers"?`) {
			t.Errorf("unknown key: %q has no suggestion", want)
		}
	}
	for ext, body := range map[string]string{"yaml": "workers: [1\n", "toml": "workers = = 3\n", "ini": "workers=3\n"} {
		path := filepath.Join(dir, "broken."+ext)
		os.WriteFile(path, []byte(body), 0o644)
		if _, err := parseWithConfig(t, path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("malformed %s: %v", ext, err)
		}
	}
	os.WriteFile(filepath.Join(dir, "dup.yaml"), []byte("workers: 1\nworkers: 2\n"), 0o644)
	if _, err := parseWithConfig(t, filepath.Join(dir, "dup.yaml")); err == nil || !strings.Contains(err.Error(), "already defined") {
		t.Errorf("a YAML key given twice: %v", err)
	}
}
