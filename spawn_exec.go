package recluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// trampolineExecTimeout bounds the master's wait for the trampoline's
// exec (internal/trampoline). The trampoline only starts the Go runtime
// before it execs, so this is never reached unless it is stopped or the
// machine is swamped; the worker is then treated as started, and an exec
// failure after that shows as its exit code 127 and a line on its stderr.
const trampolineExecTimeout = 10 * time.Second

// awaitTrampolineExec waits until the trampoline has executed the worker
// program (the status pipe reads end of file) and returns nil, or returns
// the error the trampoline's exec failed with.
func awaitTrampolineExec(status *os.File) error {
	status.SetReadDeadline(time.Now().Add(trampolineExecTimeout))
	msg, _ := io.ReadAll(io.LimitReader(status, 4096))
	if len(msg) == 0 {
		return nil // exec succeeded, or it took too long to tell (see trampolineExecTimeout)
	}
	code, text, _ := bytes.Cut(msg, []byte(" "))
	if n, err := strconv.Atoi(string(code)); err == nil && n > 0 {
		return syscall.Errno(n)
	}
	return errors.New(string(text))
}

// execError is why a worker program could not be executed, with what to
// do about it. It unwraps to the system's error (a syscall.Errno).
type execError struct {
	err  error
	hint string
}

func (e *execError) Error() string { return e.err.Error() + ": " + e.hint }
func (e *execError) Unwrap() error { return e.err }

// explainExecError gives an error of starting program in dir the words an
// operator needs after a bad deploy: what is wrong with the file and how
// to fix it. Other errors are returned as they are.
func explainExecError(program, dir string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err
	}
	path := programPath(program, dir)
	st, statErr := os.Stat(path)
	var hint string
	switch errno {
	case syscall.ENOEXEC:
		hint = fmt.Sprintf("%s is not a program this system can run (a script needs a #! line, a binary must be built for %s/%s); deploy an executable there", path, runtime.GOOS, runtime.GOARCH)
	case syscall.ENOENT:
		switch {
		case statErr != nil:
			hint = fmt.Sprintf("%s does not exist; deploy the program there, or give its right path", path)
		case dir != "" && !isDir(dir):
			hint = fmt.Sprintf("the working directory %s does not exist; create it, or fix the directory option", dir)
		case missingInterpreter(path) != "":
			hint = fmt.Sprintf("the interpreter %s named on the #! line of %s does not exist; install it, or fix that line", missingInterpreter(path), path)
		default:
			hint = fmt.Sprintf("%s exists but something it needs to run (its interpreter or dynamic loader) does not; check `file %s`", path, path)
		}
	case syscall.EACCES:
		switch {
		case statErr == nil && st.IsDir():
			hint = fmt.Sprintf("%s is a directory, not a program; give the program's path", path)
		case statErr == nil && st.Mode().Perm()&0o111 == 0:
			hint = fmt.Sprintf("%s is not executable (mode %04o); make it so with chmod +x", path, st.Mode().Perm())
		default:
			hint = fmt.Sprintf("permission to execute %s is denied; check that it and its directories are executable by the workers' user, and that its filesystem is not mounted noexec", path)
		}
	default:
		return err
	}
	return &execError{err: err, hint: hint}
}

// programPath is where the kernel finds program when a worker is started
// in dir: a relative path is relative to the worker's directory.
func programPath(program, dir string) string {
	if !filepath.IsAbs(program) && dir != "" {
		return filepath.Join(dir, program)
	}
	return program
}

// statProgram returns the identity of what a worker of program with args,
// started in dir, runs now (programFile), or the zero programFile when the
// program cannot be read. It follows symbolic links, as the exec does: a
// deploy that flips a link to another release changes it. It costs a stat
// per argument: an argument that names no file fails at once.
func statProgram(program string, args []string, dir string) programFile {
	id, ok := statRegular(programPath(program, dir))
	if !ok {
		return programFile{}
	}
	return programFile{fileID: id, args: argFiles(args, dir)}
}

// argFiles encodes, for each of args that names an existing regular file
// (relative to dir when relative, as the worker resolves it), its place
// and its identity. An argument that is a directory or a module name
// (python3 -m pkg) is left out: the declaration's backstop covers the code
// behind it (forgetListenPIDOptional in supervisor.go).
func argFiles(args []string, dir string) string {
	var b strings.Builder
	for i, arg := range args {
		if arg == "" {
			continue
		}
		if id, ok := statRegular(programPath(arg, dir)); ok {
			fmt.Fprintf(&b, "%d:%d:%d:%d:%d:%d;", i, id.dev, id.ino, id.size, id.mtimeNano, id.ctimeNano)
		}
	}
	return b.String()
}

// statRegular returns the identity of the file at path when it is a
// regular file, following symbolic links.
func statRegular(path string) (fileID, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fileID{}, false
	}
	return fileID{
		dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtimeNano: st.Mtim.Nano(), ctimeNano: st.Ctim.Nano(),
	}, true
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// missingInterpreter returns the program named on the #! line of the
// script at path if it does not exist, or "".
func missingInterpreter(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	line, _ := bufio.NewReader(io.LimitReader(f, 256)).ReadString('\n')
	rest, ok := strings.CutPrefix(line, "#!")
	if !ok {
		return ""
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return ""
	}
	if _, err := os.Stat(fields[0]); !errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	return fields[0]
}
