package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// Kind is the kind of a failed request.
type Kind string

const (
	// KindRefused: dialing failed with ECONNREFUSED.
	KindRefused Kind = "refused"
	// KindReset: ECONNRESET or EPIPE while dialing, writing or reading.
	KindReset Kind = "reset"
	// KindEOF: the connection was closed before a complete response,
	// including a kept-alive connection that closes as the next request is
	// sent on it.
	KindEOF Kind = "eof"
	// KindTimeout: the per-request deadline (Config.Timeout) passed.
	KindTimeout Kind = "timeout"
	// KindStatus: a complete response with a status outside 2xx.
	KindStatus Kind = "status"
	// KindOther: any other error, such as a malformed response.
	KindOther Kind = "other"
)

// Kinds lists every failure Kind in reporting order.
var Kinds = [...]Kind{KindRefused, KindReset, KindEOF, KindTimeout, KindStatus, KindOther}

// index returns k's position in Kinds.
func (k Kind) index() int {
	for i, kk := range Kinds {
		if kk == k {
			return i
		}
	}
	return len(Kinds) - 1
}

// Classify returns the failure Kind of an error returned while dialing,
// writing a request or reading a response. It does not know about status
// codes: a non-2xx response is KindStatus by definition.
func Classify(err error) Kind {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return KindReset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT), errors.As(err, &ne) && ne.Timeout():
		return KindTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return KindEOF
	default:
		return KindOther
	}
}

// longAgo is a deadline in the past, used to abort blocked I/O.
var longAgo = time.Unix(1, 0)

// client is one closed-loop client.
type client struct {
	r  *runner
	sh *shard

	conn      net.Conn
	cr        connReader // reads conn for br, remembering the error
	br        *bufio.Reader
	stopAbort func() bool // unregisters the abort hook of conn
	connUses  int         // requests sent on conn so far
}

// run sends requests until the runner stops.
func (c *client) run() {
	defer c.closeConn()
	for c.r.take() {
		c.do()
	}
}

// closeConn closes the current connection, if any.
func (c *client) closeConn() {
	if c.conn == nil {
		return
	}
	c.stopAbort()
	c.conn.Close()
	c.conn, c.stopAbort, c.connUses = nil, nil, 0
}

// dial opens a new connection for the request with the given deadline.
func (c *client) dial(deadline time.Time) error {
	d := net.Dialer{Deadline: deadline, KeepAlive: -1}
	conn, err := d.DialContext(c.r.ctx, "tcp", c.r.cfg.Addr)
	if err != nil {
		return err
	}
	c.conn = conn
	// Canceling the run's context aborts the I/O in progress on conn.
	c.stopAbort = context.AfterFunc(c.r.ctx, func() { conn.SetDeadline(longAgo) })
	c.cr = connReader{c: conn}
	if c.br == nil {
		c.br = bufio.NewReaderSize(&c.cr, 16<<10)
	} else {
		c.br.Reset(&c.cr)
	}
	c.sh.addConn()
	return nil
}

// do sends one request and records its outcome. It never retries.
func (c *client) do() {
	cfg := &c.r.cfg
	if c.conn != nil && (c.br.Buffered() > 0 || !connAlive(c.conn)) {
		// The server closed the idle connection (or sent something
		// unsolicited) after the previous complete response and before
		// this request was sent: open a new one, which is not a failure.
		c.closeConn()
		c.sh.addReconnect()
	}
	start := time.Now()
	deadline := start.Add(cfg.Timeout)
	if c.conn == nil {
		if err := c.dial(deadline); err != nil {
			c.fail(err, false)
			return
		}
	}
	reused := c.connUses > 0
	c.connUses++
	if err := c.conn.SetDeadline(deadline); err != nil {
		c.fail(err, reused)
		return
	}
	if c.r.ctx.Err() != nil {
		// Canceled before anything was sent (the abort hook may have run
		// before SetDeadline above replaced its deadline).
		c.closeConn()
		c.sh.addAborted()
		return
	}
	if _, err := c.conn.Write(c.r.req); err != nil {
		c.fail(err, reused)
		return
	}
	resp, err := c.readResponse()
	if err != nil {
		c.fail(err, reused)
		return
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		c.fail(err, reused)
		return
	}
	latency := time.Since(start)
	c.sh.addResponse(resp, n)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg := fmt.Sprintf("HTTP %s", resp.Status)
		if id := resp.Header.Get(HeaderWorkerID); id != "" {
			msg += " from worker " + id
		}
		c.sh.addFailure(KindStatus, time.Since(c.r.start), msg, reused)
	} else {
		c.sh.addSuccess(latency)
	}
	switch {
	case cfg.Mode == ModeNew || resp.StatusCode == http.StatusSwitchingProtocols:
		c.closeConn()
	case resp.Close:
		c.closeConn()
		c.sh.addReconnect()
	}
}

// readResponse reads one final response header from the connection,
// skipping informational (1xx) responses other than 101.
func (c *client) readResponse() (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(c.br, c.r.reqMeta)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			resp.Body.Close()
			continue
		}
		return resp, nil
	}
}

// fail records a failed request and drops the connection, whose state is
// unknown. If the run's context was canceled the request counts as aborted
// instead.
func (c *client) fail(err error, reused bool) {
	kind := Classify(err)
	msg := err.Error()
	if kind == KindOther && c.conn != nil && c.cr.err != nil {
		// The response parser reports a response cut short inside a
		// line as malformed ("malformed MIME header: missing colon"), as
		// it saw the partial line before the end of the stream. The
		// connection's own error says what really happened.
		kind = Classify(c.cr.err)
		msg = fmt.Sprintf("%v (parser: %v)", c.cr.err, err)
	}
	c.closeConn()
	if c.r.ctx.Err() != nil {
		c.sh.addAborted()
		return
	}
	c.sh.addFailure(kind, time.Since(c.r.start), msg, reused)
}

// connReader reads from a connection for the client's bufio.Reader and
// remembers the first read error.
type connReader struct {
	c   net.Conn
	err error
}

// Read implements io.Reader.
func (r *connReader) Read(p []byte) (int, error) {
	n, err := r.c.Read(p)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}
