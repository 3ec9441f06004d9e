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
)

// envTrampolineStatus names the descriptor on which the trampoline reports
// that it could not execute the worker program. The master holds the
// other end of a pipe; the trampoline marks its end close-on-exec, so a
// successful exec closes it (the master reads end of file), and a failed
// one writes "ERRNO TEXT" there before exiting with code 127. It is the
// same scheme os/exec uses for its own fork and exec, carried one exec
// further.
const envTrampolineStatus = "RECLUSTER_TRAMPOLINE_STATUS_FD"

// trampolineExecTimeout bounds the master's wait for the trampoline's
// exec. The trampoline only starts the Go runtime before it execs, so this
// is never reached unless it is stopped or the machine is swamped; the
// worker is then treated as started, and an exec failure after that shows
// as its exit code 127 and a line on its stderr.
const trampolineExecTimeout = 10 * time.Second

// takeTrampolineStatus returns the descriptor the master gave the
// trampoline for its exec failure, marked close-on-exec, or -1.
func takeTrampolineStatus() int {
	v, ok := os.LookupEnv(envTrampolineStatus)
	os.Unsetenv(envTrampolineStatus)
	fd, err := strconv.Atoi(v)
	if !ok || err != nil || fd < 3 {
		return -1
	}
	syscall.CloseOnExec(fd)
	return fd
}

// reportExecFailure is the trampoline's last word when its exec failed:
// on the status descriptor when it has one, else on its stderr.
func reportExecFailure(statusFD int, program string, err error) {
	errno, _ := err.(syscall.Errno)
	if statusFD >= 0 {
		msg := strconv.Itoa(int(errno)) + " " + err.Error()
		if _, werr := syscall.Write(statusFD, []byte(msg)); werr == nil {
			return
		}
	}
	fmt.Fprintf(os.Stderr, "recluster: cannot start worker program %s: %v\n", program, err)
}

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
	path := program
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
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
