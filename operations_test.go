package recluster_test

import (
	"os"
	"os/user"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

func TestHungWorkerIsReplaced(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 1, HeartbeatTimeout: 300 * time.Millisecond})
	hung := tc.ActiveWorkers()[0].PID()
	if err := syscallKill(hung, "STOP"); err != nil {
		t.Fatal(err)
	}
	killed := tc.rec.waitN(t, 1, 5*time.Second, kind(recluster.EventKilled))
	if killed.PID != hung || !strings.Contains(killed.Reason, "no heartbeat") {
		t.Fatalf("killed %d (%s), want the hung pid %d for its heartbeat", killed.PID, killed.Reason, hung)
	}
	tc.rec.waitN(t, 2, 5*time.Second, kind(recluster.EventActive))
	if w := tc.ActiveWorkers()[0]; w.PID() == hung {
		t.Fatal("the hung worker still holds its slot")
	}
	// A healthy worker sends heartbeats by itself and is left alone.
	get(t, tc.url, "/")
	if n := len(tc.rec.all()); n > 0 {
		for _, e := range tc.rec.all() {
			if e.Kind == recluster.EventKilled && e.PID != hung {
				t.Fatalf("a healthy worker was killed: %s", e)
			}
		}
	}
}

func TestOldWorkersAreRecycledWithoutLosingARequest(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 2, MaxAge: 400 * time.Millisecond})
	l := startLoad(tc.url, 4, true, "/")
	recycled := tc.rec.waitN(t, 3, 10*time.Second, kind(recluster.EventRetire))
	l.progress(t, 50)
	if !strings.Contains(recycled.Reason, "max age") {
		t.Fatalf("retired for %q", recycled.Reason)
	}
	ok, failures := l.finish()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed while workers recycled: %v", len(failures), ok+len(failures), failures[:min(5, len(failures))])
	}
}

func TestWorkerOverMaxRSSIsRecycled(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 1, MaxRSS: 1 << 20})
	first := tc.ActiveWorkers()[0].PID()
	e := tc.rec.waitN(t, 1, 10*time.Second, kind(recluster.EventRetire))
	if e.PID != first || !strings.Contains(e.Reason, "RSS") {
		t.Fatalf("retire event %s, want pid %d for its RSS", e, first)
	}
	tc.rec.waitN(t, 1, 10*time.Second, func(e recluster.Event) bool { return e.Kind == recluster.EventExited && e.PID == first })
}

func TestWorkersRunAsAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		err := recluster.New(serverBin, recluster.Options{User: "nobody"}).Run()
		if err == nil || !strings.Contains(err.Error(), "needs the master to run as root") {
			t.Fatalf("as non-root, User gave %v", err)
		}
		return
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody on this machine")
	}
	tc := startCluster(t, recluster.Options{Workers: 1, User: "nobody"})
	if r := get(t, tc.url, "/uid"); r.body != nobody.Uid+" "+nobody.Gid {
		t.Fatalf("worker runs as %q, want %s %s", r.body, nobody.Uid, nobody.Gid)
	}
	st := tc.Status()
	if st.Workers[0].RSSBytes <= 0 {
		t.Fatalf("status shows RSS %d", st.Workers[0].RSSBytes)
	}
	if err := recluster.New(serverBin, recluster.Options{User: "no-such-user-here"}).Run(); err == nil || !strings.Contains(err.Error(), "existing user") {
		t.Fatalf("an unknown user gave %v", err)
	}
}
