package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// root may operate the master of another user through a socket that user
// owns in a directory no third user can write to, as with
// `sudo recluster reload --control /run/app/control.sock`.
func TestRootOperatesAnotherUsersMaster(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux) to start a master as another user")
	}
	base, err := os.MkdirTemp("", "recluster-root-test-") // t.TempDir is not reachable by other users
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	dir := filepath.Join(base, "app")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	// The binaries must be reachable by that user.
	os.Chmod(filepath.Dir(reclusterBin), 0o755)
	ctl := filepath.Join(dir, "ctl.sock")
	m := startProcess(t, ctl, []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		reclusterBin, "run", "--control", ctl, "-w", "1", "--ready-when", "started", "--", "/bin/sleep", "60"}, nil)
	m.waitControl()
	out, errOut, code := cli(t, nil, "status", "--control", ctl)
	if code != 0 || !strings.Contains(out, "active") {
		t.Fatalf("root's status of a nobody master: exit %d: %s %s", code, out, errOut)
	}
	if _, errOut, code := cli(t, nil, "stop", "--control", ctl); code != 0 {
		t.Fatalf("root's stop of a nobody master: exit %d: %s", code, errOut)
	}
	if code := m.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("the master exited %d", code)
	}
}
