package recluster

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
)

// The decision to start a worker with passed sockets without the exec
// trampoline, driven through the fake system: the supervisor passes the
// program file that a worker's declaration vouched for, and the fake starts
// directly only when it is still the file on its disk, by the rule the real
// system applies (programFile.same).

var (
	fileA = programFile{fileID: fileID{dev: 8, ino: 100, size: 4 << 20, mtimeNano: 1, ctimeNano: 1}}
	fileB = programFile{fileID: fileID{dev: 8, ino: 101, size: 4 << 20, mtimeNano: 2, ctimeNano: 2}}
)

func newSocketsHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, Options{Workers: 2, Sockets: []Socket{{Name: "http", Address: "127.0.0.1:0"}}})
	t.Cleanup(func() { h.s.sockets.closeAll() })
	h.sys.program = fileA
	return h
}

// listening has w say that it listens on its passed socket, declaring
// that it needs no LISTEN_PID when optional is set.
func (h *harness) listening(w *Worker, optional bool) {
	h.t.Helper()
	m := proto.Message{Cmd: proto.CmdListening, Network: "tcp", Address: h.s.sockets.addrs()[0].String()}
	if optional {
		m.ListenPID = proto.ListenPIDOptional
	}
	proc(w).hooks.message(m, -1)
	h.settle()
}

// reloadSaying reloads; every new worker says listening (declaring when
// optional is set) and ready.
func (h *harness) reloadSaying(optional bool) int {
	h.t.Helper()
	result := h.reload()
	gen := h.s.lastGen
	for slot := 0; slot < h.s.slots; slot++ {
		h.listening(h.one(slot, gen), optional)
	}
	h.readyGen(gen)
	if err := <-result; err != nil {
		h.t.Fatalf("reload to generation %d: %v", gen, err)
	}
	return gen
}

// startedDirectly reports, for each slot's worker of gen, whether it was
// started without the trampoline.
func (h *harness) startedDirectly(gen int) []bool {
	h.t.Helper()
	var got []bool
	for slot := 0; slot < h.s.slots; slot++ {
		got = append(got, proc(h.one(slot, gen)).direct)
	}
	return got
}

func (h *harness) wantStarts(gen int, direct bool) {
	h.t.Helper()
	for slot, got := range h.startedDirectly(gen) {
		if got != direct {
			h.t.Fatalf("generation %d, slot %d: started directly %v, want %v", gen, slot, got, direct)
		}
	}
}

// A worker that declares it takes passed sockets without LISTEN_PID makes
// the next workers of the same file start directly, the respawn of a
// crashed one as well as a reload's; the workers before it went through
// the trampoline.
func TestDeclarationStartsNextWorkersDirectly(t *testing.T) {
	h := newSocketsHarness(t)
	h.run()
	h.wantStarts(1, false)
	h.listening(h.one(0, 1), true)
	h.readyGen(1)
	if h.s.directExec != fileA {
		t.Fatalf("after the declaration the supervisor vouches for %+v, want %+v", h.s.directExec, fileA)
	}
	gen := h.reloadSaying(false)
	h.wantStarts(gen, true)

	proc(h.active(1)).exit(1)
	h.settle()
	h.advance(h.respawnDelay(1))
	if p := proc(h.one(1, gen)); !p.direct || p.spec.direct != fileA {
		t.Fatalf("the respawned worker was started directly=%v with %+v, want directly with %+v", p.direct, p.spec.direct, fileA)
	}
}

// A deploy that replaces the program file sends the next workers through
// the trampoline again, until a worker of the new file declares for
// itself; the vouched-for file is the one the declaring worker was started
// from, not the one on disk when it spoke.
func TestReplacedProgramGoesBackToTheTrampoline(t *testing.T) {
	h := newSocketsHarness(t)
	h.run()
	h.readyGen(1)
	h.sys.program = fileB // a deploy, before any worker declared
	// A worker of the old file declares late: it vouches for its own file.
	h.listening(h.one(0, 1), true)
	if h.s.directExec != fileA {
		t.Fatalf("a worker started from %+v vouched for %+v", fileA, h.s.directExec)
	}
	gen := h.reloadSaying(false)
	h.wantStarts(gen, false) // file B is on disk

	gen = h.reloadSaying(true) // workers of file B declare
	h.wantStarts(gen, false)
	if h.s.directExec != fileB {
		t.Fatalf("the supervisor vouches for %+v, want the new file %+v", h.s.directExec, fileB)
	}
	gen = h.reloadSaying(false)
	h.wantStarts(gen, true)

	h.sys.program = programFile{fileID: fileID{dev: 8, ino: 102, size: 1, mtimeNano: 3, ctimeNano: 3}} // the next deploy
	gen = h.reloadSaying(false)
	h.wantStarts(gen, false)
}

// A program that never declares (a program written for systemd, or a
// worker of an older package) always goes through the trampoline, even
// when it says listening on the channel.
func TestProgramThatNeverDeclaresAlwaysGetsTheTrampoline(t *testing.T) {
	h := newSocketsHarness(t)
	h.run()
	for slot := 0; slot < h.s.slots; slot++ {
		h.listening(h.one(slot, 1), false)
	}
	h.readyGen(1)
	for range 3 {
		gen := h.reloadSaying(false)
		h.wantStarts(gen, false)
		for slot := 0; slot < h.s.slots; slot++ {
			if d := proc(h.one(slot, gen)).spec.direct; d != (programFile{}) {
				t.Fatalf("generation %d, slot %d: the supervisor vouched for %+v", gen, slot, d)
			}
		}
	}
}

// The OS layer's identity of a program file: a copy to a new inode, an
// in-place rewrite and a flipped symbolic link each make another file; a
// missing one is unknown, and unknown matches nothing.
func TestStatProgramIdentity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prog")
	write := func(p, content string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(path, "#!/bin/sh\necho one\n")
	first := statProgram(path, nil, "")
	if first == (programFile{}) {
		t.Fatal("no identity for an existing file")
	}
	if !first.same(statProgram("prog", nil, dir)) {
		t.Fatal("a path relative to the working directory is another file")
	}
	if !first.same(statProgram(path, nil, "")) {
		t.Fatal("an unchanged file changed identity")
	}

	// Copied to a new inode and renamed into place, as deploys do.
	write(path+".new", "#!/bin/sh\necho one\n")
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	renamed := statProgram(path, nil, "")
	if first.same(renamed) {
		t.Fatal("a file renamed over the program kept its identity")
	}

	// Rewritten in place, same inode and size, a moment later.
	time.Sleep(10 * time.Millisecond) // mtime must be able to move on
	write(path, "#!/bin/sh\necho two\n")
	if rewritten := statProgram(path, nil, ""); renamed.same(rewritten) || rewritten.ino != renamed.ino {
		t.Fatalf("an in-place rewrite: %+v, before %+v", rewritten, renamed)
	}

	// A symbolic link flipped to another release.
	write(filepath.Join(dir, "v2"), "#!/bin/sh\necho two\n")
	link := filepath.Join(dir, "current")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	before := statProgram(link, nil, "")
	if !before.same(statProgram(path, nil, "")) {
		t.Fatal("a link is not the file it points to")
	}
	os.Remove(link)
	if err := os.Symlink(filepath.Join(dir, "v2"), link); err != nil {
		t.Fatal(err)
	}
	if before.same(statProgram(link, nil, "")) {
		t.Fatal("a link flipped to another file kept its identity")
	}

	missing := statProgram(filepath.Join(dir, "gone"), nil, "")
	if missing != (programFile{}) || missing.same(missing) {
		t.Fatalf("a missing file: %+v, same as itself %v", missing, missing.same(missing))
	}
}

// warnings gives h's supervisor a log and returns what it says at warn
// level and above.
func (h *harness) warnings() *bytes.Buffer {
	var buf bytes.Buffer
	h.s.log = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return &buf
}

// wantForgetLines fails unless the log has said n times that the
// declaration was dropped.
func wantForgetLines(t *testing.T, log *bytes.Buffer, n int) {
	t.Helper()
	if got := strings.Count(log.String(), "started without LISTEN_PID failed before it was ready"); got != n {
		t.Fatalf("the log says %d times that the declaration was dropped, want %d:\n%s", got, n, log)
	}
}

// A worker executed without LISTEN_PID that exits before it is ready, or
// misses ReadyTimeout, is what a program that needed LISTEN_PID after all
// looks like: the master forgets the declaration, says so once, and the
// next workers go through the trampoline. A worker that went through the
// trampoline anyway, or one that was ready before it died, proves nothing
// and changes nothing.
func TestDirectWorkerThatFailsBeforeReadyRevokesTheDeclaration(t *testing.T) {
	h := newSocketsHarness(t)
	log := h.warnings()
	h.run()
	h.listening(h.one(0, 1), true)
	proc(h.one(1, 1)).exit(1) // through the trampoline, before ready
	h.settle()
	if h.s.directExec != fileA {
		t.Fatalf("a trampolined worker's failure changed the declaration to %+v", h.s.directExec)
	}
	h.advance(h.respawnDelay(1))
	h.readyGen(1)
	wantForgetLines(t, log, 0)

	// A reload whose direct worker exits before it is ready.
	result := h.reload()
	h.wantStarts(2, true)
	proc(h.one(0, 2)).exit(1)
	h.settle()
	if err := <-result; err == nil {
		t.Fatal("the reload went on after a new worker exited")
	}
	if h.s.directExec != (programFile{}) {
		t.Fatalf("after a direct worker exited before ready the supervisor still vouches for %+v", h.s.directExec)
	}
	wantForgetLines(t, log, 1)
	h.wantStarts(h.reloadSaying(true), false) // and these declare again
	h.wantStarts(h.reloadSaying(false), true)

	// A direct respawn that misses ReadyTimeout; it is killed, which is
	// no second news.
	proc(h.active(1)).exit(1)
	h.settle()
	h.advance(h.respawnDelay(1))
	hung := h.one(1, h.s.gen)
	if !proc(hung).direct || hung.state != WorkerStarting {
		t.Fatalf("the respawn: direct %v, state %v; want a direct start that is starting", proc(hung).direct, hung.state)
	}
	h.advance(h.s.opts.ReadyTimeout)
	if !proc(hung).killed || h.s.directExec != (programFile{}) {
		t.Fatalf("after ReadyTimeout: killed %v, the supervisor vouches for %+v; want killed and nothing", proc(hung).killed, h.s.directExec)
	}
	wantForgetLines(t, log, 2)
	if h.s.respawns[1] != nil { // else it was due at once
		h.advance(h.respawnDelay(1))
	}
	if p := proc(h.one(1, h.s.gen)); p.direct {
		t.Fatal("the replacement of a direct worker that missed ReadyTimeout was started directly")
	}
	wantForgetLines(t, log, 2)

	// A reload's direct worker that misses ReadyTimeout is drained with
	// its aborted reload, an exit the master expects: the timeout alone
	// tells.
	h.readyGen(h.s.gen)
	h.reloadSaying(true)
	result = h.reload()
	h.wantStarts(h.s.lastGen, true)
	h.ready(h.one(0, h.s.lastGen))
	h.advance(h.s.opts.ReadyTimeout)
	if err := <-result; err == nil || h.s.directExec != (programFile{}) {
		t.Fatalf("a reload whose direct worker missed ReadyTimeout: %v, the supervisor vouches for %+v", err, h.s.directExec)
	}
	wantForgetLines(t, log, 3)
}

// For an interpreter, the code is an argument: each argument that names
// a regular file (relative to the working directory when relative) is
// part of the identity, so a deploy that replaces the script, or puts a
// file where an argument named none, is another program; arguments that
// name nothing, or a directory, are not.
func TestStatProgramIdentityOfArguments(t *testing.T) {
	dir := t.TempDir()
	interp := filepath.Join(dir, "interp")
	write := func(p, content string) {
		t.Helper()
		if err := os.WriteFile(p+".new", []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".new", p); err != nil {
			t.Fatal(err)
		}
	}
	write(interp, "#!/bin/sh\n")
	write(filepath.Join(dir, "server.js"), "one\n")
	if err := os.Mkdir(filepath.Join(dir, "pkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"--inspect", "server.js", "-m", "pkg", "later.py", ""}
	first := statProgram(interp, args, dir)
	if !first.same(statProgram(interp, args, dir)) {
		t.Fatal("unchanged files changed identity")
	}
	if first.same(statProgram(interp, nil, dir)) {
		t.Fatal("the script named by an argument is not part of the identity")
	}
	abs := slices.Clone(args)
	abs[1] = filepath.Join(dir, "server.js")
	if !first.same(statProgram(interp, abs, dir)) {
		t.Fatal("an argument relative to the working directory is another file than its absolute path")
	}

	write(filepath.Join(dir, "server.js"), "two\n") // a deploy of the script alone
	second := statProgram(interp, args, dir)
	if first.same(second) {
		t.Fatal("a replaced script kept the identity")
	}
	if err := os.WriteFile(filepath.Join(dir, "pkg", "__init__.py"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if !second.same(statProgram(interp, args, dir)) {
		t.Fatal("a directory argument is part of the identity")
	}
	write(filepath.Join(dir, "later.py"), "print()\n")
	if second.same(statProgram(interp, args, dir)) {
		t.Fatal("a file that appeared where an argument named none kept the identity")
	}
}

// The supervisor compares the whole identity: the same interpreter with
// another script is another program.
func TestAnotherScriptGoesBackToTheTrampoline(t *testing.T) {
	h := newSocketsHarness(t)
	h.sys.program.args = "0:8:200:10:1:1;"
	h.run()
	h.listening(h.one(0, 1), true)
	h.readyGen(1)
	h.wantStarts(h.reloadSaying(false), true)
	h.sys.program.args = "0:8:201:12:2:2;" // the script was replaced
	h.wantStarts(h.reloadSaying(false), false)
}
