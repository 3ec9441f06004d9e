package recluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

func TestWorkerGetsTimeoutInMilliseconds(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	rec := newRecorder()
	c := recluster.New("/bin/sh", recluster.Options{
		Workers:   1,
		ReadyWhen: recluster.Started,
		Timeout:   2500 * time.Millisecond,
		Args:      []string{"-c", `echo "$RECLUSTER_TIMEOUT $RECLUSTER_TIMEOUT_MS" > ` + out + `; exec sleep 30`},
		OnEvent:   rec.add,
	})
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	defer c.Terminate(context.Background())
	var got string
	eventually(t, 10*time.Second, "the worker to write its environment", func() bool {
		b, err := os.ReadFile(out)
		got = strings.TrimSpace(string(b))
		return err == nil && strings.Contains(got, " ")
	})
	if got != "2.5s 2500" {
		t.Fatalf("RECLUSTER_TIMEOUT and RECLUSTER_TIMEOUT_MS = %q, want \"2.5s 2500\"", got)
	}
}
