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

// sendableFile is a file whose descriptor a test passes over a channel.
func sendableFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestListenReplyCarriesItsDescriptor(t *testing.T) {
	master, worker := pair(t)
	f := sendableFile(t)
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
	// A child forked now must not inherit it (a handed client connection
	// would never see its FIN).
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("the descriptor received is not close-on-exec: flags %#x, %v", flags, err)
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
	f := sendableFile(t)
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

// An interrupted Receive returns the complete lines first, then a deadline
// error; the partial line it read moves to another Conn with Buffered and
// Unread, and nothing is lost.
func TestInterruptHandsOverPartialLine(t *testing.T) {
	master, child := pair(t)
	write := func(s string) {
		t.Helper()
		if _, err := child.uc.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"cmd":"ready"}` + "\n" + `{"cmd":"sta`)
	receiveReadyThenInterrupt(t, master)
	pending, pendingFDs := master.Buffered()
	if string(pending) != `{"cmd":"sta` || len(pendingFDs) != 0 {
		t.Fatalf("Buffered = %q, %v", pending, pendingFDs)
	}
	// Another Conn on the same socket, as the upgraded master has.
	next, err := NewConn(dupOf(t, master), "next")
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	next.Unread(pending, pendingFDs)
	write(`tus","status":"x"}` + "\n")
	if m, _, err := next.Receive(); err != nil || m.Cmd != CmdStatus || m.Status != "x" {
		t.Fatalf("the line begun before the hand-over: %+v, %v", m, err)
	}
}

// A failed hand-over resumes the interrupted Conn, which still works.
func TestResumeAfterInterrupt(t *testing.T) {
	master, child := pair(t)
	master.Interrupt()
	if _, _, err := master.Receive(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("interrupted Receive: %v, want a deadline error", err)
	}
	master.Resume()
	if err := child.Send(Message{Cmd: CmdHeartbeat}, -1); err != nil {
		t.Fatal(err)
	}
	if m, _, err := master.Receive(); err != nil || m.Cmd != CmdHeartbeat {
		t.Fatalf("after Resume: %+v, %v", m, err)
	}
}

// A handoff whose descriptor has arrived but whose line has not ended
// moves with Buffered and Unread, descriptor and all.
func TestInterruptHandsOverPendingDescriptor(t *testing.T) {
	master, child := pair(t)
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := child.uc.WriteMsgUnix([]byte(`{"cmd":"ready"}`+"\n"+`{"cmd":"handoff","net`), unix.UnixRights(int(f.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	receiveReadyThenInterrupt(t, master)
	pending, fds := master.Buffered()
	if len(fds) != 1 {
		t.Fatalf("Buffered gave %d descriptors, want 1", len(fds))
	}
	next, err := NewConn(dupOf(t, master), "next")
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	next.Unread(pending, fds)
	if _, err := child.uc.Write([]byte(`work":"tcp"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	m, fd, err := next.Receive()
	if err != nil || m.Cmd != CmdHandoff || m.Network != "tcp" || fd != fds[0] {
		t.Fatalf("the handoff begun before the hand-over: %+v, fd %d (want %d), %v", m, fd, fds[0], err)
	}
	unix.Close(fd)
}

// dupOf duplicates c's descriptor, as an upgraded master has it.
func dupOf(t *testing.T, c *Conn) int {
	t.Helper()
	dupFD := -1
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { dupFD, err = unix.Dup(int(fd)) })
	if err != nil {
		t.Fatal(err)
	}
	return dupFD
}

// receiveReadyThenInterrupt receives the ready message that the peer sent
// first, interrupts master, and checks that the next Receive says so.
func receiveReadyThenInterrupt(t *testing.T, master *Conn) {
	t.Helper()
	if m, _, err := master.Receive(); err != nil || m.Cmd != CmdReady {
		t.Fatalf("first message: %+v, %v", m, err)
	}
	master.Interrupt()
	if _, _, err := master.Receive(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("interrupted Receive: %v, want a deadline error", err)
	}
}

// A worker that exited may leave handed connections in its channel; a
// reader that the loaded machine keeps slower than the bound must still
// get every one of them: the bound counts from the last read, not from the
// call. The peer's end stays open, as when a grandchild holds it, so the
// channel ends by the bound once nothing more comes.
func TestCloseAfterReadingBoundsSilenceNotTheWholeRead(t *testing.T) {
	master, worker := pair(t)
	f := sendableFile(t)
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

// A reader that runs only after its silence bound is over (a loaded
// master) still gets every message the peer sent: bytes waiting in the
// socket are not silence, and they may carry handed connections.
func TestCloseAfterReadingKeepsWhatWaitsPastTheBound(t *testing.T) {
	master, worker := pair(t)
	f := sendableFile(t)
	const handed = 3 // each with a descriptor: one receive apiece
	for range handed {
		if err := worker.Send(Message{Cmd: CmdHandoff, Address: "x"}, int(f.Fd())); err != nil {
			t.Fatal(err)
		}
	}
	master.CloseAfterReading(-time.Second) // over before the first read
	for i := range handed {
		m, fd, err := master.Receive()
		if err != nil || m.Cmd != CmdHandoff || fd < 0 {
			t.Fatalf("handoff %d of %d lost: %+v fd %d, %v", i+1, handed, m, fd, err)
		}
		unix.Close(fd)
	}
	if _, _, err := master.Receive(); err == nil {
		t.Fatal("Receive went on after the channel fell silent")
	}
}

// Unhandled stays true from the peer's send until the reader has acted on
// the message and asks for the next one.
func TestUnhandledUntilTheReaderAsksForMore(t *testing.T) {
	master, worker := pair(t)
	if master.Unhandled() {
		t.Fatal("Unhandled before anything was sent")
	}
	if err := worker.Send(Message{Cmd: CmdListening, Address: "x"}, -1); err != nil {
		t.Fatal(err)
	}
	if !master.Unhandled() {
		t.Fatal("a message in the socket is not Unhandled")
	}
	if m, _, err := master.Receive(); err != nil || m.Cmd != CmdListening {
		t.Fatalf("got %+v, %v", m, err)
	}
	if !master.Unhandled() {
		t.Fatal("a message returned but not acted on yet is not Unhandled")
	}
	next := make(chan error, 1)
	go func() {
		_, _, err := master.Receive()
		next <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for master.Unhandled() {
		if time.Now().After(deadline) {
			t.Fatal("still Unhandled while the reader waits for the next message")
		}
		time.Sleep(time.Millisecond)
	}
	worker.Close()
	if err := <-next; err == nil {
		t.Fatal("Receive after the peer closed returned no error")
	}
}
