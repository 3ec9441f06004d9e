package recluster

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/recluster-go/recluster/internal/testbin"
)

// relayOf relays what src gives as slot 0's stdout and returns what the
// sink got once src has ended and the relay has written everything.
func relayOf(t *testing.T, opts Options, src io.Reader) (*outputRelay, string) {
	t.Helper()
	var sink testbin.Buffer
	opts.Stdout, opts.Stderr = &sink, &sink
	r := newOutputRelay(opts)
	r.read(src, OutputLine{Slot: 0, PID: 42, Generation: 3, Stream: "stdout"}, nil, nil)
	r.queue.Close()
	select {
	case <-r.queue.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not finish writing")
	}
	return r, sink.String()
}

func TestRelayLabelsWholeLines(t *testing.T) {
	_, got := relayOf(t, Options{OutputFormat: OutputLabelled}, strings.NewReader("one\ntwo\nthree without newline"))
	want := "[0 42 g3] one\n[0 42 g3] two\n[0 42 g3] three without newline\n"
	if got != want {
		t.Fatalf("relayed %q, want %q", got, want)
	}
}

func TestRelaySplitsAHugeLineWithAMarker(t *testing.T) {
	huge := strings.Repeat("a", 2*MaxOutputLine+100)
	r, got := relayOf(t, Options{OutputFormat: OutputPlain}, strings.NewReader(huge+"\nnext\n"))
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4 (three pieces and the next line)", len(lines))
	}
	for i, l := range lines[:2] {
		if text, ok := strings.CutSuffix(l, ContinuedMarker); !ok || len(text) != MaxOutputLine {
			t.Errorf("piece %d: %d bytes, marker %v; want %d bytes and the marker", i, len(l), ok, MaxOutputLine)
		}
	}
	if lines[2] != strings.Repeat("a", 100) || lines[3] != "next" {
		t.Errorf("the line's end and the next line: %q, %q", lines[2][:min(len(lines[2]), 20)], lines[3])
	}
	if kept, _ := (&Cluster{relay: r}).Output(-1, -1); len(kept) != 4 || !kept[0].Continued || kept[2].Continued {
		t.Errorf("history: %d lines, continued %v/%v", len(kept), len(kept) > 0 && kept[0].Continued, len(kept) > 2 && kept[2].Continued)
	}
}

func TestRelayDoesNotCutACharacter(t *testing.T) {
	// "é" is two bytes; with one byte of padding, the first piece would end
	// in the middle of one.
	line := "x" + strings.Repeat("é", MaxOutputLine)
	_, got := relayOf(t, Options{OutputFormat: OutputPlain}, strings.NewReader(line+"\n"))
	var joined strings.Builder
	for _, piece := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		if !utf8.ValidString(piece) {
			t.Fatalf("a piece is not valid UTF-8: it ends %q", piece[max(0, len(piece)-4):])
		}
		joined.WriteString(strings.TrimSuffix(piece, ContinuedMarker))
	}
	if joined.String() != line {
		t.Fatal("the pieces do not join up to the line")
	}
}

func TestHistoryIsBoundedByLinesAndBytes(t *testing.T) {
	ring := newOutputRing(3, 1000)
	for i := range 5 {
		ring.add(OutputLine{Slot: i % 2, Text: strings.Repeat("x", i)})
	}
	got := ring.recent(-1, -1)
	if len(got) != 3 || len(got[0].Text) != 2 || len(got[2].Text) != 4 {
		t.Fatalf("kept %v, want the last three lines", got)
	}
	if got := ring.recent(1, 5); len(got) != 1 || len(got[0].Text) != 3 {
		t.Fatalf("slot 1: %v, want its last line", got)
	}
	ring = newOutputRing(100, 3*OutputLine{Text: "abc"}.size())
	for range 10 {
		ring.add(OutputLine{Text: "abc"})
	}
	if n := len(ring.recent(-1, -1)); n != 3 {
		t.Fatalf("kept %d lines within room for 3", n)
	}
}

func TestFollowGetsHistoryThenNewLines(t *testing.T) {
	ring := newOutputRing(10, 1<<20)
	ring.add(OutputLine{Slot: 0, Text: "old 0"})
	ring.add(OutputLine{Slot: 1, Text: "old 1"})
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan string, 10)
	done := make(chan struct{})
	go func() {
		ring.follow(ctx, 1, 5, func(l OutputLine) { got <- l.Text }, func(int) {})
		close(done)
	}()
	want := []string{"old 1", "new 1"}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		ring.mu.Lock()
		n := len(ring.followers)
		ring.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the follower never registered")
		}
	}
	ring.add(OutputLine{Slot: 0, Text: "new 0"})
	ring.add(OutputLine{Slot: 1, Text: "new 1"})
	for _, w := range want {
		select {
		case l := <-got:
			if l != w {
				t.Fatalf("followed %q, want %q", l, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %q", w)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not return after its context ended")
	}
}
