package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The units shipped in deploy/ are the generator's output for the command
// they document: one source, the templates in units/.
func TestShippedUnitsAreGenerated(t *testing.T) {
	documented := func(control string) []string {
		return []string{"--bin", "/usr/local/bin/recluster",
			"--workers", "4", "--listen", "http=:8080", "--ready-when", "listening",
			"--ready-timeout", "30s", "--timeout", "30s", "--control", control,
			"--metrics", "127.0.0.1:9100", "--log-format", "json", "--", "/usr/local/bin/your-server"}
	}
	for _, c := range []struct {
		socket bool
		files  []string
	}{
		{false, []string{"recluster.service"}},
		{true, []string{"recluster.socket", "recluster-socket.service"}},
	} {
		dir := t.TempDir()
		args := documented("/run/recluster/control.sock")
		if c.socket {
			args = append([]string{"--socket"}, documented("/run/recluster-socket/control.sock")...)
		}
		if _, errOut, code := cli(t, nil, append([]string{"unit", "--output-dir", dir}, args...)...); code != 0 {
			t.Fatalf("unit %v: %d %s", args, code, errOut)
		}
		for _, name := range c.files {
			shipped, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
			if err != nil {
				t.Fatal(err)
			}
			generated, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(shipped, generated) {
				t.Errorf("deploy/%s differs from recluster unit's output for the command it documents; change cmd/recluster/units/ and regenerate it with:\n  recluster unit %s", name, strings.Join(args, " "))
			}
		}
	}
}

// What recluster unit prints for other commands passes systemd-analyze
// verify, and a bad run flag is refused before any unit is written.
func TestGeneratedUnitsVerify(t *testing.T) {
	analyze := needTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	out, errOut, code := cli(t, nil, "unit", "--output-dir", dir, "--name", "myapp", "--bin", reclusterBin,
		"-w", "2", "--listen", "web=127.0.0.1:9000", "--ready-when", "ready", "--env", "GREETING=hello world",
		"--env", "RATE=100%", "--", sdworkerBin, "--flag", "two words")
	if code != 0 {
		t.Fatalf("unit: %d %s", code, errOut)
	}
	service := filepath.Join(dir, "myapp.service")
	if strings.TrimSpace(out) != service {
		t.Fatalf("unit --output-dir printed %q, want %q", out, service)
	}
	dir2 := t.TempDir()
	if _, errOut, code := cli(t, nil, "unit", "--socket", "--output-dir", dir2, "--name", "myapp", "--bin", reclusterBin,
		"--listen", "web=127.0.0.1:9000", "--", sdworkerBin); code != 0 {
		t.Fatalf("unit --socket: %d %s", code, errOut)
	}
	for _, d := range []string{dir, dir2} {
		entries, _ := os.ReadDir(d)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, names...)...)
		cmd.Dir = d
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %v: %v\n%s", names, err, out)
		}
	}
	text, _ := os.ReadFile(service)
	for _, want := range []string{
		"    --workers 2 \\\n", `    --env "GREETING=hello world" \`, "    --env RATE=100%% \\\n",
		"    --control /run/myapp/control.sock \\\n", `"two words"`, "RuntimeDirectory=myapp\n",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("myapp.service lacks %q:\n%s", want, text)
		}
	}
	socket, _ := os.ReadFile(filepath.Join(dir2, "myapp.socket"))
	if !strings.Contains(string(socket), "ListenStream=127.0.0.1:9000\nFileDescriptorName=web\nService=myapp-socket.service\n") {
		t.Errorf("myapp.socket:\n%s", socket)
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"unit", "--wokers", "2", "--", sdworkerBin}, "wokers"},
		{[]string{"unit", "--socket", "--", sdworkerBin}, "exactly one --listen"},
		{[]string{"unit", "--socket", "--listen", "127.0.0.1:1", "--", sdworkerBin}, "named --listen"},
		{[]string{"unit", "--", "no-such-program-here"}, "cannot find the program"},
	} {
		if _, errOut, code := cli(t, nil, bad.args...); code != 2 || !strings.Contains(errOut, bad.want) {
			t.Errorf("%v: status %d, stderr %q, want %q", bad.args, code, errOut, bad.want)
		}
	}
}
