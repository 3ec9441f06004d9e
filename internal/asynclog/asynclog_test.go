package asynclog

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// stuckWriter blocks every write until release is closed, as a pipe that
// nobody reads does.
type stuckWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *stuckWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestStuckSinkNeverBlocksAndDropsAreReported(t *testing.T) {
	sink := &stuckWriter{release: make(chan struct{})}
	h := New(slog.NewTextHandler(sink, nil), 100)
	defer h.Close()
	log := slog.New(h)
	const lines = 5000
	logged := make(chan struct{})
	go func() {
		for i := range lines {
			log.Info("line", "n", i)
		}
		close(logged)
	}()
	select {
	case <-logged:
	case <-time.After(30 * time.Second):
		t.Fatal("logging blocked on a stuck sink")
	}
	if h.Dropped() == 0 {
		t.Fatal("nothing was dropped although the sink took nothing")
	}
	close(sink.release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	log.Info("after") // the sink moves again: nothing is dropped now
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	out := sink.String()
	written := strings.Count(out, "msg=line ")
	gaps := regexp.MustCompile(`level=WARN msg="`+regexp.QuoteMeta(DroppedMessage)+`" dropped=(\d+)`).FindAllStringSubmatch(out, -1)
	if gaps == nil {
		t.Fatalf("no line reports the dropped lines:\n%s", out)
	}
	reported := 0
	for _, m := range gaps {
		n, _ := strconv.Atoi(m[1])
		reported += n
	}
	if reported != int(h.Dropped()) || written+reported != lines {
		t.Fatalf("%d lines written and %d reported dropped (%d counted), want %d in all", written, reported, h.Dropped(), lines)
	}
	if !strings.HasSuffix(out, "msg=after\n") {
		t.Fatalf("the line logged after the sink moved is not last:\n%s", out[max(0, len(out)-500):])
	}
}

func TestDerivedHandlersShareTheQueue(t *testing.T) {
	var buf bytes.Buffer
	h := New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), 0)
	defer h.Close()
	quiet := slog.New(h.WithLevel(slog.LevelWarn)).With("lib", true)
	loud := slog.New(h)
	for i := range 3 {
		loud.Debug("loud", "i", i)
		quiet.Info("hidden")
		quiet.Warn(fmt.Sprint("quiet ", i))
	}
	if err := h.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "hidden") {
		t.Errorf("the warn-level handler let an info record through:\n%s", out)
	}
	if got := strings.Count(out, "\n"); got != 6 {
		t.Errorf("%d lines, want 6:\n%s", got, out)
	}
	if !strings.Contains(out, `msg="quiet 2" lib=true`) || strings.Index(out, "loud i=2") > strings.Index(out, `quiet 2`) {
		t.Errorf("records out of order or without their attributes:\n%s", out)
	}
}
