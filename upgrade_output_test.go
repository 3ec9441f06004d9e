package recluster

import (
	"os"
	"testing"
	"time"

	"github.com/recluster-go/recluster/internal/testbin"
)

// A paused output reader relays every whole line it read and holds the
// start of the next; resumed (as the new master does with the pipe and
// what it held), the line comes out whole, once.
func TestOutputStreamPausesWithoutLosingALine(t *testing.T) {
	var sink testbin.Buffer
	wrote := make(chan string, 10)
	w := writerFunc(func(b []byte) (int, error) {
		sink.Write(b)
		wrote <- string(b)
		return len(b), nil
	})
	r := newOutputRelay(Options{OutputFormat: OutputPlain, Stdout: w, Stderr: w})
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	o := &outputStream{relay: r, file: pr, like: OutputLine{Stream: "stdout"}}
	o.start(nil, nil)
	pw.WriteString("one\ntw")
	// One write, one read: once "one" is out, the reader holds "tw".
	if got := <-wrote; got != "one\n" {
		t.Fatalf("relayed %q first", got)
	}
	o.pause()
	select {
	case <-o.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader did not pause")
	}
	if string(o.held) != "tw" || o.ended {
		t.Fatalf("paused holding %q (ended %v), want \"tw\"", o.held, o.ended)
	}
	pw.WriteString("o\nthree\n") // written while nobody reads
	o.resume()
	pw.Close()
	select {
	case <-o.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader did not end with its pipe")
	}
	if !o.ended || !r.queue.Flush(10*time.Second) || sink.String() != "one\ntwo\nthree\n" {
		t.Fatalf("after the pipe's end (ended %v) the sink has %q", o.ended, sink.String())
	}
	r.close()
	if got, _ := (&Cluster{relay: r}).Output(-1, -1); len(got) != 3 || got[1].Text != "two" {
		t.Fatalf("history %v", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
