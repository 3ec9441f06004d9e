package recluster

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The trampoline's report: end of file is a successful exec; "ERRNO TEXT"
// is the errno back, recognisable with errors.Is.
func TestTrampolineExecStatus(t *testing.T) {
	for _, tt := range []struct {
		written string
		want    error
	}{
		{"", nil},
		{"8 exec format error", syscall.ENOEXEC},
		{"2 no such file or directory", syscall.ENOENT},
	} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.WriteString(tt.written)
		w.Close()
		got := awaitTrampolineExec(r)
		r.Close()
		if !errors.Is(got, tt.want) || (tt.want == nil) != (got == nil) {
			t.Errorf("%q read as %v, want %v", tt.written, got, tt.want)
		}
	}
	// Not an errno: the text is kept.
	r, w, _ := os.Pipe()
	w.WriteString("0 something else")
	w.Close()
	if err := awaitTrampolineExec(r); err == nil || err.Error() != "something else" {
		t.Errorf("a report without an errno read as %v", err)
	}
	r.Close()
}

// Each exec failure is explained by what is found on disk.
func TestExplainExecError(t *testing.T) {
	dir := t.TempDir()
	program := filepath.Join(dir, "prog")
	os.WriteFile(program, []byte("#!/bin/sh\n"), 0o755)
	for _, tt := range []struct {
		name, program, dir string
		err                error
		want               string
	}{
		{"missing working directory", program, filepath.Join(dir, "gone"), syscall.ENOENT, "the working directory " + filepath.Join(dir, "gone") + " does not exist"},
		{"a directory", dir, "", syscall.EACCES, dir + " is a directory, not a program"},
		{"executable yet refused", program, "", syscall.EACCES, "mounted noexec"},
		{"relative to the working directory", "prog", dir, syscall.ENOEXEC, program + " is not a program"},
		{"nothing missing that can be seen", program, "", syscall.ENOENT, "its interpreter or dynamic loader"},
	} {
		got := explainExecError(tt.program, tt.dir, tt.err)
		if !errors.Is(got, tt.err) || !strings.Contains(got.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, got, tt.want)
		}
	}
	// Errors that are not about executing pass through as they are.
	for _, err := range []error{syscall.EPERM, errors.New("other")} {
		if got := explainExecError(program, "", err); got != err {
			t.Errorf("%v became %v", err, got)
		}
	}
}
