package recluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/recluster-go/recluster/internal/lossy"
)

// OutputFormat says how the master writes its workers' output (see
// Options.OutputFormat).
type OutputFormat string

const (
	// OutputPlain writes each line as the worker wrote it.
	OutputPlain OutputFormat = "plain"
	// OutputLabelled starts each line with "[SLOT PID gGENERATION] ".
	OutputLabelled OutputFormat = "labelled"
	// OutputJSON writes each line as a JSON object: an OutputLine.
	OutputJSON OutputFormat = "json"
)

// MaxOutputLine is the longest line the master holds for a worker: a
// longer one (or one that never ends) is cut into pieces of at most this
// many bytes, each but the last marked as Continued, so that a worker
// that writes without newlines costs the master no more than this. It is
// Docker's limit too.
const MaxOutputLine = 16 << 10

// outputReadStart is the size a stream's read buffer starts at.
const outputReadStart = 512

// ContinuedMarker ends the text of a piece of a longer line in the plain
// and labelled formats: the line goes on in the next piece from the same
// worker and stream.
const ContinuedMarker = "...[continued]"

// OutputLine is one line of a worker's output, as the master read it.
type OutputLine struct {
	Time       time.Time `json:"time"`
	Slot       int       `json:"slot"`
	PID        int       `json:"pid"`
	Generation int       `json:"generation"`
	// Stream is "stdout" or "stderr".
	Stream string `json:"stream"`
	// Text is the line without its newline.
	Text string `json:"text"`
	// Continued: the line was longer than MaxOutputLine, and this is a
	// piece of it that the next line of the same worker and stream goes
	// on from.
	Continued bool `json:"continued,omitempty"`
}

// Format returns the line in format f, newline included.
func (l OutputLine) Format(f OutputFormat) []byte {
	return l.AppendFormat(make([]byte, 0, len(l.Text)+len(ContinuedMarker)+32), f)
}

// AppendFormat appends the line in format f, newline included, to b.
func (l OutputLine) AppendFormat(b []byte, f OutputFormat) []byte {
	if f == OutputJSON {
		j, _ := json.Marshal(l) // an OutputLine always marshals
		return append(append(b, j...), '\n')
	}
	if f == OutputLabelled {
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(l.Slot), 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(l.PID), 10)
		b = append(b, " g"...)
		b = strconv.AppendInt(b, int64(l.Generation), 10)
		b = append(b, "] "...)
	}
	b = append(b, l.Text...)
	if l.Continued {
		b = append(b, ContinuedMarker...)
	}
	return append(b, '\n')
}

// size is what a line costs the master's memory, roughly.
func (l OutputLine) size() int { return len(l.Text) + 96 }

// Bounds of the relay. The sink's queue holds a burst of output while the
// master's stdout is slow; a reader that finds it full waits while the
// sink moves (the worker then waits on its write, as it would on a slow
// terminal) and drops lines only once the sink has taken nothing for
// outputPatience, so that a stuck log collector never stalls the workers.
const (
	outputQueueLines = 4096
	outputQueueBytes = 1 << 20
	outputPatience   = time.Second
	// DefaultOutputHistoryLines and DefaultOutputHistoryBytes bound the
	// recent lines kept for Cluster.Output unless Options say otherwise.
	DefaultOutputHistoryLines = 2000
	DefaultOutputHistoryBytes = 1 << 20
)

// OutputDroppedMessage starts the line the master writes in place of the
// worker output it dropped while its stdout or stderr was blocked.
const OutputDroppedMessage = "recluster: the output was blocked; lines of worker output were dropped:"

// outputRelay reads the workers' output, keeps recent lines and writes
// them out, one whole line per write, from a goroutine of its own.
type outputRelay struct {
	format         OutputFormat
	stdout, stderr io.Writer
	queue          *lossy.Queue[OutputLine]
	history        *outputRing
	dropped        atomic.Int64
	readers        sync.WaitGroup
	scratch        []byte // the writing goroutine's, reused for every line
}

// newOutputRelay returns the relay opts ask for, or nil when the workers'
// output passes straight through.
func newOutputRelay(opts Options) *outputRelay {
	format := opts.OutputFormat
	if format == "" && opts.PrefixOutput {
		format = OutputLabelled
	}
	if format == "" {
		return nil
	}
	r := &outputRelay{
		format:  format,
		stdout:  opts.Stdout,
		stderr:  opts.Stderr,
		history: newOutputRing(opts.OutputHistoryLines, opts.OutputHistoryBytes),
	}
	if r.stdout == nil {
		r.stdout = os.Stdout
	}
	if r.stderr == nil {
		r.stderr = os.Stderr
	}
	r.queue = lossy.NewSized(outputQueueLines, outputQueueBytes, OutputLine.size, r.write, func(missed int) {
		fmt.Fprintln(r.stderr, OutputDroppedMessage, missed)
	})
	return r
}

func (r *outputRelay) write(l OutputLine) {
	w := r.stdout
	if l.Stream == "stderr" {
		w = r.stderr
	}
	r.scratch = l.AppendFormat(r.scratch[:0], r.format)
	w.Write(r.scratch)
	if cap(r.scratch) > 2*MaxOutputLine {
		r.scratch = nil // a JSON line full of escapes: do not keep its buffer
	}
}

// pipe returns the descriptor a worker writes one of its streams to, and
// adds its reader to p.outputs. The reader learns the worker's pid through
// p once spawned is closed.
func (r *outputRelay) pipe(stream string, slot, gen int, p *workerProcess, spawned <-chan struct{}) (fd uintptr, closeWriteEnd func(), err error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	o := &outputStream{relay: r, file: pr, like: OutputLine{Slot: slot, Generation: gen, Stream: stream}}
	p.outputs = append(p.outputs, o)
	o.start(nil, func() { <-spawned; o.like.PID = p.id })
	// Fd puts the write end in blocking mode, which is what a child
	// expects of its stdio.
	return pw.Fd(), func() { pw.Close() }, nil
}

// outputStream is the master's end of one worker stream, and its reader.
// An upgrade in place pauses the reader (pause) and hands the pipe, with
// the start of a line it has read, to the new master.
type outputStream struct {
	relay   *outputRelay
	file    *os.File
	like    OutputLine // the labels of its lines
	pausing atomic.Bool
	done    chan struct{} // closed when the reader has returned
	// Once done is closed: held is the start of a line that the reader
	// had read when it paused; ended, that it reached the end of the pipe
	// (and closed it) instead.
	held  []byte
	ended bool
}

// start runs the reader from partial, the start of a line read before;
// first, on the reader's goroutine, runs before (nil: nothing).
func (o *outputStream) start(partial []byte, before func()) {
	o.done = make(chan struct{})
	o.relay.readers.Add(1)
	go func() {
		defer o.relay.readers.Done()
		defer close(o.done)
		if before != nil {
			before()
		}
		paused := func(err error) bool { return o.pausing.Load() && errors.Is(err, os.ErrDeadlineExceeded) }
		var stopped bool
		if o.held, stopped = o.relay.read(o.file, o.like, partial, paused); !stopped {
			o.ended = true
			o.file.Close()
		}
	}()
}

// pause stops the reader once it has relayed every whole line it read;
// done is closed then.
func (o *outputStream) pause() {
	o.pausing.Store(true)
	o.file.SetReadDeadline(time.Now())
}

// resume restarts a paused reader where it stopped.
func (o *outputStream) resume() {
	if o.ended {
		return
	}
	o.pausing.Store(false)
	o.file.SetReadDeadline(time.Time{})
	o.start(o.held, nil)
}

// read relays what src gives until its end, in lines of at most
// MaxOutputLine bytes, each labelled as like is, starting with partial,
// the start of a line read before. When paused reports true of a read
// error, read returns what it holds of the current line instead of
// relaying it, and stopped.
func (r *outputRelay) read(src io.Reader, like OutputLine, partial []byte, paused func(error) bool) (held []byte, stopped bool) {
	// The buffer starts small and grows to MaxOutputLine only for a stream
	// that fills it: most workers print little, and the master holds a
	// reader for each stream of each worker (two per worker, 256 workers
	// in a large cluster, twice that during a reload).
	size := outputReadStart
	for size < len(partial)+1 && size < MaxOutputLine {
		size *= 2
	}
	buf := make([]byte, min(size, MaxOutputLine))
	n := copy(buf, partial)
	emit := func(text []byte, continued bool) {
		l := like
		l.Time, l.Text, l.Continued = time.Now(), string(text), continued
		r.relay(l)
	}
	for {
		free := len(buf) - n
		m, err := src.Read(buf[n:])
		n += m
		start := 0
		for {
			i := bytes.IndexByte(buf[start:n], '\n')
			if i < 0 {
				break
			}
			emit(buf[start:start+i], false)
			start += i + 1
		}
		if m == free && len(buf) < MaxOutputLine {
			// The read filled the buffer: a long line or a busy stream.
			bigger := make([]byte, min(2*len(buf), MaxOutputLine))
			copy(bigger, buf[:n])
			buf = bigger
		}
		if start == 0 && n == len(buf) {
			// A full buffer without a newline: relay what is there, cut
			// where a character ends, and keep the rest for the next piece.
			cut := runeCut(buf[:n])
			emit(buf[:cut], true)
			start = cut
		}
		n = copy(buf, buf[start:n])
		if err != nil {
			if paused != nil && paused(err) {
				return bytes.Clone(buf[:n]), true
			}
			if n > 0 {
				emit(buf[:n], false) // the last line had no newline
			}
			return nil, false
		}
	}
}

// runeCut returns where to cut b so that no UTF-8 character is split: b's
// length, less the bytes of a character that b ends in the middle of.
func runeCut(b []byte) int {
	for back := 1; back < utf8.UTFMax && back <= len(b); back++ {
		if c := b[len(b)-back]; utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-back:]) {
				return len(b) - back
			}
			break
		}
	}
	return len(b)
}

// relay keeps l among the recent lines and queues it for the sink.
func (r *outputRelay) relay(l OutputLine) {
	r.history.add(l)
	if dropped, _ := r.queue.PushWithin(l, outputPatience); dropped {
		r.dropped.Add(1)
	}
}

// close waits a little for the readers to reach the end of their pipes
// (descendants of a worker may hold them open), then for the sink to
// take what is queued, and ends the writing goroutine.
func (r *outputRelay) close() {
	read := make(chan struct{})
	go func() { r.readers.Wait(); close(read) }()
	select {
	case <-read:
	case <-time.After(time.Second):
	}
	r.queue.Close()
	select {
	case <-r.queue.Done():
	case <-time.After(2 * time.Second):
	}
}

// closeOutput ends the output relay, if the cluster has one; the
// supervisor calls it as it ends.
func (c *Cluster) closeOutput() {
	if c.relay != nil {
		c.relay.close()
	}
}

// ErrOutputNotRelayed: the workers' output passes straight through the
// master (Options.OutputFormat is not set), which keeps none of it.
var ErrOutputNotRelayed = errors.New("recluster: the workers' output is not relayed through the master (set Options.OutputFormat)")

// Output returns up to n of the most recent lines of the workers' output
// (all that are kept when n < 0), oldest first; only slot's when slot >= 0.
// The master keeps Options.OutputHistoryLines lines, and no more than
// Options.OutputHistoryBytes of them.
func (c *Cluster) Output(slot, n int) ([]OutputLine, error) {
	if c.relay == nil {
		return nil, ErrOutputNotRelayed
	}
	return c.relay.history.recent(slot, n), nil
}

// FollowOutput calls deliver with up to history recent lines of slot (of
// every slot when slot < 0), then with each new line, until ctx ends. It
// returns once deliver has returned for the last time. deliver runs on a
// goroutine of its own and may be slow: a follower that falls far behind
// misses lines rather than hold up the workers, and missed is called with
// how many, in their place.
func (c *Cluster) FollowOutput(ctx context.Context, slot, history int, deliver func(OutputLine), missed func(int)) error {
	if c.relay == nil {
		return ErrOutputNotRelayed
	}
	c.relay.history.follow(ctx, slot, history, deliver, missed)
	return nil
}

// OutputDropped returns how many lines of worker output the master dropped
// because its own stdout or stderr was blocked.
func (c *Cluster) OutputDropped() int64 {
	if c.relay == nil {
		return 0
	}
	return c.relay.dropped.Load()
}
