package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/recluster-go/recluster"
)

// RemoteError is an error the master answered with: the request reached
// it and it refused or failed, as opposed to a connection problem.
type RemoteError struct {
	Msg string
	// Outcome is the reload's outcome, for a reload answer.
	Outcome recluster.ReloadOutcome
}

// Error returns the master's own words.
func (e *RemoteError) Error() string { return e.Msg }

// Unwrap makes a superseded reload recognisable with
// errors.Is(err, recluster.ErrSuperseded), as it is in the master.
func (e *RemoteError) Unwrap() error {
	if e.Outcome == recluster.ReloadSuperseded {
		return recluster.ErrSuperseded
	}
	return nil
}

// Do sends req to the master listening on path and returns its final
// answer. progress, when not nil, receives each progress line. A final
// answer that reports a failure is returned together with a *RemoteError.
// Do refuses to talk to a socket served by another user (other than root).
func Do(ctx context.Context, path string, req Request, progress func(Response)) (Response, error) {
	conn, err := dial(ctx, path)
	if err != nil {
		return Response{}, err
	}
	defer conn.Close()
	return exchange(ctx, conn, path, req, progress)
}

// exchange sends req on conn and reads the master's answers.
func exchange(ctx context.Context, conn net.Conn, path string, req Request, progress func(Response)) (Response, error) {
	// A live master answers at once (a progress line for the long
	// requests); one that does not is wedged, and waiting without limit
	// would hang the caller too.
	firstAnswer := time.Now().Add(FirstAnswerTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(firstAnswer) {
		firstAnswer = dl
	}
	conn.SetDeadline(firstAnswer)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	line, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	_, sendErr := conn.Write(append(line, '\n'))
	// A master too busy to take the request answers and closes at once;
	// the send may fail then, but the answer is in the socket: read it.
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var last Response
	for sc.Scan() {
		if dl, ok := ctx.Deadline(); ok {
			conn.SetDeadline(dl)
		} else {
			conn.SetDeadline(time.Time{})
		}
		var r Response
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return Response{}, fmt.Errorf("control socket %s: the master's answer is not valid: %v", path, err)
		}
		if r.Progress != "" {
			last = r
			if progress != nil {
				progress(r)
			}
			continue
		}
		if !r.OK {
			msg := r.Error
			if msg == "" {
				msg = "the master reported a failure without a reason"
			}
			return r, &RemoteError{Msg: msg, Outcome: r.Outcome}
		}
		return r, nil
	}
	if sendErr != nil {
		return Response{}, fmt.Errorf("control socket %s: sending the request: %w", path, sendErr)
	}
	if ctx.Err() != nil {
		return Response{}, fmt.Errorf("control socket %s: no answer in time: %w", path, ctx.Err())
	}
	var ne net.Error
	if errors.As(sc.Err(), &ne) && ne.Timeout() {
		return Response{}, fmt.Errorf("control socket %s: the master did not answer within %v; it may be overloaded or stuck", path, FirstAnswerTimeout)
	}
	if sc.Err() != nil {
		return Response{}, fmt.Errorf("control socket %s: reading the answer: %w", path, sc.Err())
	}
	return last, ErrClosed
}

// FirstAnswerTimeout bounds the wait for a master's first answer line.
const FirstAnswerTimeout = 15 * time.Second

// ErrClosed means the master closed the connection before its final
// answer, as it does when it exits.
var ErrClosed = errors.New("the master closed the connection before answering")

func dial(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		hint := "is the master running? Give its socket with --control or RECLUSTER_CONTROL"
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("no recluster master at %s: the control socket does not exist (%s)", path, hint)
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("no recluster master at %s: nothing is listening on the control socket (%s)", path, hint)
		case errors.Is(err, fs.ErrPermission):
			return nil, fmt.Errorf("control socket %s: permission denied; run as the master's user", path)
		}
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// The other direction of the uid check: do not hand requests (or
	// trust answers) to a socket someone else put at a predictable path.
	if uid, _, err := peerUID(conn); err == nil && !allowedUID(uid) && !rootMayTrust(path, uid) {
		conn.Close()
		return nil, fmt.Errorf("control socket %s is served by uid %d, not by your user (uid %d) or root; refusing to use it", path, uid, os.Geteuid())
	}
	return conn, nil
}
