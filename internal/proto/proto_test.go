package proto

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func pair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	a, bfd, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewConn(bfd, "peer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestListenReplyCarriesItsDescriptor(t *testing.T) {
	master, worker := pair(t)
	f, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	master.Send(Message{Cmd: CmdDisconnect}, -1)
	master.Send(Message{Cmd: CmdListen, ID: 7, Address: "x"}, int(f.Fd()))
	master.Send(Message{Cmd: CmdListen, ID: 8, Error: "no"}, -1)

	m, fd, err := worker.Receive()
	if err != nil || m.Cmd != CmdDisconnect || fd != -1 {
		t.Fatalf("first: %+v %d %v", m, fd, err)
	}
	m, fd, err = worker.Receive()
	if err != nil || m.ID != 7 || fd < 0 {
		t.Fatalf("second: %+v %d %v", m, fd, err)
	}
	var got, want unix.Stat_t
	unix.Fstat(fd, &got)
	unix.Fstat(int(f.Fd()), &want)
	if got.Ino != want.Ino {
		t.Fatal("the descriptor received is not the one sent")
	}
	unix.Close(fd)
	m, fd, err = worker.Receive()
	if err != nil || m.Error != "no" || fd != -1 {
		t.Fatalf("third: %+v %d %v", m, fd, err)
	}
}

func TestMalformedLinesAreSkipped(t *testing.T) {
	a, b := pair(t)
	go func() {
		a.uc.Write([]byte("not json\n{\"nocmd\":1}\n" + strings.Repeat("x", MaxLine+10000) + "\n{\"cmd\":\"ready\"}\n"))
	}()
	var malformed int
	for {
		m, _, err := b.Receive()
		if errors.Is(err, ErrMalformed) {
			malformed++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Cmd != CmdReady {
			t.Fatalf("got %+v", m)
		}
		break
	}
	if malformed != 3 {
		t.Fatalf("%d malformed lines reported, want 3 (bad JSON, no cmd, overlong)", malformed)
	}
}

func TestReceiveEndsWhenThePeerCloses(t *testing.T) {
	a, b := pair(t)
	a.Close()
	if _, _, err := b.Receive(); err == nil {
		t.Fatal("no error after the peer closed")
	}
}

func TestDiscardFDsClosesWhatAWorkerSends(t *testing.T) {
	master, worker := pair(t)
	master.DiscardFDs = true
	f, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < 3; i++ {
		worker.Send(Message{Cmd: CmdHeartbeat}, int(f.Fd()))
	}
	worker.Send(Message{Cmd: CmdListen, ID: 1}, int(f.Fd()))
	for i := 0; i < 4; i++ {
		if _, fd, err := master.Receive(); err != nil || fd != -1 {
			t.Fatalf("message %d: fd %d, err %v", i, fd, err)
		}
	}
	if len(master.fds) != 0 {
		t.Fatalf("%d descriptors kept", len(master.fds))
	}
}

// A worker that exited may leave handed connections in its channel; a
// reader that the loaded machine keeps slower than the bound must still
// get every one of them: the bound counts from the last read, not from the
// call. The peer's end stays open, as when a grandchild holds it, so the
// channel ends by the bound once nothing more comes.
func TestCloseAfterReadingBoundsSilenceNotTheWholeRead(t *testing.T) {
	master, worker := pair(t)
	f, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const handed = 5
	for range handed {
		if err := worker.Send(Message{Cmd: CmdHandoff, Address: "x"}, int(f.Fd())); err != nil {
			t.Fatal(err)
		}
	}
	const bound = 50 * time.Millisecond
	master.CloseAfterReading(bound)
	for i := range handed {
		m, fd, err := master.Receive()
		if err != nil || m.Cmd != CmdHandoff || fd < 0 {
			t.Fatalf("handoff %d of %d lost: %+v fd %d, %v", i+1, handed, m, fd, err)
		}
		unix.Close(fd)
		time.Sleep(bound + bound/2) // a reader slower than the bound
	}
	start := time.Now()
	if _, _, err := master.Receive(); err == nil {
		t.Fatal("Receive went on after the channel fell silent")
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("the silent channel was closed after %v, want about %v", waited, bound)
	}
}
