package recluster_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/testbin"
)

// A deploy that leaves a program the system cannot execute aborts the
// reload with an error that names the cause and the fix, whether the
// worker is executed directly (a channel worker) or through the
// trampoline that sets LISTEN_PID (inherited sockets); the old generation
// serves on and no request fails.
func TestReloadNamesWhyTheProgramCannotBeExecuted(t *testing.T) {
	binary, err := os.ReadFile(serverBin)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name    string
		sockets []recluster.Socket
	}{
		{"direct exec", nil},
		{"trampoline", []recluster.Socket{{Name: "http", Address: "127.0.0.1:0"}}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			program := filepath.Join(dir, "server")
			deploy := func(content []byte, perm os.FileMode) {
				t.Helper()
				tmp := program + ".new"
				if err := os.WriteFile(tmp, content, perm); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(tmp, perm); err != nil { // past the umask
					t.Fatal(err)
				}
				if err := os.Rename(tmp, program); err != nil {
					t.Fatal(err)
				}
			}
			deploy(binary, 0o755)
			rec := newRecorder()
			var log testbin.Buffer
			c := recluster.New(program, recluster.Options{
				Workers: 2, Respawn: 20 * time.Millisecond, Timeout: 3 * time.Second,
				Sockets: mode.sockets, OnEvent: rec.add,
				Logger: slog.New(slog.NewTextHandler(&log, nil)),
			})
			if err := c.Run(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c.Terminate(ctx)
			})
			rec.waitN(t, 2, 10*time.Second, kind(recluster.EventActive))
			before := pids(c.ActiveWorkers())
			l := startLoad("http://"+c.Addrs()[0].String(), 4, false, "/")

			for _, bad := range []struct {
				name   string
				deploy func()
				errno  syscall.Errno
				hint   string
			}{
				{"not a program", func() { deploy([]byte("\x7fELF but not really\n"), 0o755) }, syscall.ENOEXEC, "is not a program this system can run"},
				{"not executable", func() { deploy(binary, 0o644) }, syscall.EACCES, "is not executable (mode 0644); make it so with chmod +x"},
				{"missing interpreter", func() { deploy([]byte("#!/no/such/interpreter\n"), 0o755) }, syscall.ENOENT, "the interpreter /no/such/interpreter named on the #! line"},
				{"deleted", func() { os.Remove(program) }, syscall.ENOENT, program + " does not exist; deploy the program there"},
			} {
				bad.deploy()
				l.progress(t, 10)
				err := c.Reload(context.Background())
				if !errors.Is(err, bad.errno) || !strings.Contains(err.Error(), bad.errno.Error()+": ") || !strings.Contains(err.Error(), bad.hint) {
					t.Fatalf("%s: reload gave %v; want %q (%v) and %q", bad.name, err, bad.errno.Error(), bad.errno, bad.hint)
				}
				t.Logf("%s: %v", bad.name, err)
			}
			deploy(binary, 0o755)
			if err := c.Reload(context.Background()); err != nil {
				t.Fatalf("reload to the program put back: %v", err)
			}
			l.progress(t, 10)
			ok, failures := l.finish()
			if len(failures) > 0 {
				t.Fatalf("%d of %d requests failed across the bad deploys: %v", len(failures), ok+len(failures), failures[:min(5, len(failures))])
			}
			if after := pids(c.ActiveWorkers()); equalMaps(before, after) {
				t.Fatalf("the good reload left the workers %v", after)
			}
			// A failed exec is a start that failed, not a worker that ran and
			// exited: no exit code 127, no exited event.
			if s := log.String(); strings.Contains(s, "code 127") {
				t.Fatalf("a failed exec was reported as an exit:\n%s", s)
			}
			for _, e := range rec.all() {
				if e.Kind == recluster.EventExited && e.ExitCode == 127 {
					t.Fatalf("a failed exec made an exited event: %v", e)
				}
			}
		})
	}
}
