package systemd

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseListenEnv(t *testing.T) {
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	for _, tc := range []struct {
		name        string
		vars        map[string]string
		want        []Socket
		pidOptional bool
	}{
		{"not passed", map[string]string{}, nil, false},
		{"not passed, pid optional", map[string]string{}, nil, true},
		{"no LISTEN_PID", map[string]string{"LISTEN_FDS": "1"}, nil, false},
		{"no LISTEN_PID, pid optional", map[string]string{"LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}, []Socket{{3, "web"}}, true},
		{"own LISTEN_PID, pid optional", map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "1"}, []Socket{{3, "unknown"}}, true},
		{"meant for another process, pid optional", map[string]string{"LISTEN_PID": "41", "LISTEN_FDS": "1"}, nil, true},
		{"bad LISTEN_PID, pid optional", map[string]string{"LISTEN_PID": "x", "LISTEN_FDS": "1"}, nil, true},
		{"meant for another process", map[string]string{"LISTEN_PID": "41", "LISTEN_FDS": "1"}, nil, false},
		{"no count", map[string]string{"LISTEN_PID": "42"}, nil, false},
		{"bad count", map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "two"}, nil, false},
		{"zero", map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "0"}, nil, false},
		{"unnamed", map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "2"},
			[]Socket{{3, "unknown"}, {4, "unknown"}}, false},
		{"named, one name missing and one empty", map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "3", "LISTEN_FDNAMES": ":web"},
			[]Socket{{3, "unknown"}, {4, "web"}, {5, "unknown"}}, false},
		{"named", map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:admin"},
			[]Socket{{3, "web"}, {4, "admin"}}, false},
	} {
		if got := parseListenEnv(42, env(tc.vars), tc.pidOptional); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// fdOf returns a duplicate of ln's descriptor, closed with the test.
func fdOf(t *testing.T, ln interface{ File() (*os.File, error) }) int {
	t.Helper()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	raw, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	raw.Control(func(d uintptr) { fd = int(d) })
	return fd
}

func TestBoundTo(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	port := strconv.Itoa(tcp.Addr().(*net.TCPAddr).Port)
	otherPort := strconv.Itoa(tcp.Addr().(*net.TCPAddr).Port%60000 + 1)
	path := filepath.Join(t.TempDir(), "s.sock")
	ux, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ux.Close()
	tcpFD, uxFD := fdOf(t, tcp.(*net.TCPListener)), fdOf(t, ux.(*net.UnixListener))

	for _, tc := range []struct {
		fd               int
		network, address string
		want             bool
	}{
		{tcpFD, "tcp", "127.0.0.1:" + port, true},
		{tcpFD, "tcp4", "127.0.0.1:" + port, true},
		{tcpFD, "", "127.0.0.1:" + port, true},
		{tcpFD, "tcp", "localhost:" + port, true},
		{tcpFD, "tcp", ":" + port, true},           // a wildcard request
		{tcpFD, "tcp", "0.0.0.0:" + port, true},    // the same
		{tcpFD, "tcp", "127.0.0.1:0", true},        // any port
		{tcpFD, "tcp", "127.0.0.2:" + port, false}, // another IP
		{tcpFD, "tcp", "127.0.0.1:" + otherPort, false},
		{tcpFD, "tcp", "not an address", false},
		{tcpFD, "unix", path, false},
		{uxFD, "unix", path, true},
		{uxFD, "unix", path + "x", false},
		{uxFD, "tcp", "127.0.0.1:" + port, false},
		{-1, "tcp", "127.0.0.1:" + port, false},
	} {
		if got := BoundTo(tc.fd, tc.network, tc.address); got != tc.want {
			t.Errorf("BoundTo(fd %d, %q, %q) = %v, want %v", tc.fd, tc.network, tc.address, got, tc.want)
		}
	}

	s := Socket{FD: tcpFD, Name: "web"}
	if !s.Serves("web", "tcp", "127.0.0.2:1") {
		t.Error("a socket does not serve a request for its name")
	}
	if s.Serves("admin", "tcp", "127.0.0.2:1") || s.Serves("", "tcp", "127.0.0.2:1") {
		t.Error("a socket serves a request for another name and address")
	}
	if !s.Serves("admin", "tcp", "127.0.0.1:"+port) {
		t.Error("a socket does not serve a request for its address")
	}
}

func TestListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !Listening(fdOf(t, ln.(*net.TCPListener))) {
		t.Error("a listening socket is not Listening")
	}
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if Listening(fdOf(t, conn.(*net.TCPConn))) {
		t.Error("a connected socket (what Accept=yes passes) is Listening")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if Listening(int(r.Fd())) {
		t.Error("a pipe is Listening")
	}
}

// fakeSystemd is the receiving end of a NOTIFY_SOCKET.
func fakeSystemd(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	sd := fakeSystemd(t, filepath.Join(t.TempDir(), "notify.sock"))
	if err := Notify(Ready("serving"), MainPID(7)); err != nil {
		t.Fatal(err)
	}
	if got, want := receive(t, sd), "READY=1\nSTATUS=serving\nMAINPID=7"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}

	var before unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
	if err := Notify(Reloading("to generation 2")); err != nil {
		t.Fatal(err)
	}
	got := receive(t, sd)
	lines := strings.Split(got, "\n")
	if len(lines) != 3 || lines[0] != "RELOADING=1" || lines[2] != "STATUS=to generation 2" {
		t.Fatalf("reloading: got %q", got)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil || usec < before.Nano()/1000 || usec > before.Nano()/1000+int64(time.Minute/time.Microsecond) {
		t.Errorf("reloading: %q is not CLOCK_MONOTONIC (%d µs before the call)", lines[1], before.Nano()/1000)
	}

	// A newline in a status cannot smuggle in another notification.
	Notify(Status("disk full\nREADY=1"))
	if got, want := receive(t, sd), "STATUS=disk full READY=1"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	Notify(Stopping)
	if got := receive(t, sd); got != "STOPPING=1" {
		t.Errorf("got %q, want STOPPING=1", got)
	}
	if os.Getenv("NOTIFY_SOCKET") == "" {
		t.Error("Notify unset NOTIFY_SOCKET")
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("abstract Unix sockets are Linux's")
	}
	sd := fakeSystemd(t, "@recluster-test-"+strconv.Itoa(os.Getpid()))
	if err := Notify(Watchdog); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, sd); got != "WATCHDOG=1" {
		t.Errorf("got %q, want WATCHDOG=1", got)
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify(Ready("")); err != nil {
		t.Errorf("without NOTIFY_SOCKET, Notify failed: %v", err)
	}
}

func TestNotifyToAMissingSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	if err := Notify(Ready("")); err == nil {
		t.Error("Notify to a missing socket did not fail")
	}
}
