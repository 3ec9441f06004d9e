package main

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"

	"github.com/recluster-go/recluster/internal/systemd"
	"golang.org/x/sys/unix"
)

// passedSocket returns a descriptor of a listening socket on 127.0.0.1,
// as systemd would pass it, and its port. The caller closes it.
func passedSocket(t *testing.T, name string) (systemd.Socket, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return systemd.Socket{FD: fd, Name: name}, ln.Addr().(*net.TCPAddr).Port
}

// Each --listen address takes the passed socket with its NAME= or its
// address (a wildcard --listen takes a socket on one IP of the same port:
// the master could not bind it anyway), and a passed socket that serves no
// --listen address is closed.
func TestMatchInherited(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	web, _ := passedSocket(t, "web")
	api, apiPort := passedSocket(t, "unknown")
	stray, _ := passedSocket(t, "stray")
	defer unix.Close(web.FD)
	defer unix.Close(api.FD)
	var specs []listenSpec
	for _, v := range []string{"web=127.0.0.1:1", ":" + strconv.Itoa(apiPort), "127.0.0.1:2"} {
		spec, err := parseListen(v)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, spec)
	}
	got := matchInherited(specs, []systemd.Socket{web, api, stray}, quiet)
	if got[0].sock.FD != web.FD || got[1].sock.FD != api.FD || got[2].sock.FD != 0 {
		t.Errorf("--listen got fds %d, %d, %d; want %d (by name), %d (by address), none",
			got[0].sock.FD, got[1].sock.FD, got[2].sock.FD, web.FD, api.FD)
	}
	if !systemd.Listening(web.FD) || !systemd.Listening(api.FD) {
		t.Error("a matched socket was closed")
	}
	if _, err := unix.FcntlInt(uintptr(stray.FD), unix.F_GETFD, 0); err == nil {
		t.Error("the socket that matches no --listen address was left open")
	}

	// Without --listen, every passed socket is used under its own name.
	all := matchInherited(nil, []systemd.Socket{web, api}, quiet)
	if len(all) != 2 || all[0].sock.Name != "web" || all[0].sock.FD != web.FD || all[1].sock.FD != api.FD {
		t.Errorf("without --listen: %+v", all)
	}
}
