package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/control"
)

// recluster run --sticky: each client IP lands on the slot the table
// predicts, status shows the bucket shares, and RECLUSTER_STICKY refuses a
// Unix socket with the reason and the fix.
func TestStickyRun(t *testing.T) {
	m := startMaster(t, "-w", "3", "--sticky", "--listen", "127.0.0.1:0", "--ready-when", "started", "--", sdworkerBin)
	addr := m.httpAddr()
	for i := 1; i <= 30; i++ {
		src := netip.AddrFrom4([4]byte{127, 3, 0, byte(i)})
		want := "slot=" + itoa(recluster.StickySlot(src, 3))
		for j := 0; j < 3; j++ {
			body := getFrom(t, src, addr)
			if !strings.Contains(body, want+" ") {
				t.Fatalf("from %s: %q, want %s", src, body, want)
			}
		}
	}
	out, errOut, code := cli(t, nil, "status", "--control", m.ctl)
	if code != 0 || !strings.Contains(out, "sticky by client IP: 256 buckets, per slot [86 85 85]") {
		t.Fatalf("status: %d %s\n%s", code, errOut, out)
	}
	out, _, _ = cli(t, nil, "status", "--json", "--control", m.ctl)
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Sticky == nil || len(st.Sticky.Shares) != 3 {
		t.Fatalf("status --json: %v\n%s", err, out)
	}

	sock := filepath.Join(t.TempDir(), "s.sock")
	_, errOut, code = cli(t, []string{"RECLUSTER_STICKY=1"}, "run", "--control", filepath.Join(t.TempDir(), "c.sock"), "--listen", "unix:"+sock, "--", sdworkerBin)
	if code == 0 || !strings.Contains(errOut, "Unix socket") || !strings.Contains(errOut, "turn Sticky off") {
		t.Fatalf("RECLUSTER_STICKY=1 with a Unix socket: exit %d, %q", code, errOut)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func getFrom(t *testing.T, src netip.Addr, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}).DialContext,
		DisableKeepAlives: true,
	}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET from %s: %v", src, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b) + " "
}
