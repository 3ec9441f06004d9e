package recluster_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

// stickySources returns n distinct loopback source addresses (Linux routes
// all of 127/8 to lo), avoiding .0 and .255.
func stickySources(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, 2, byte(i / 250), byte(1 + i%250)})
	}
	return out
}

// slotFrom sends one request on a new connection from src and returns the
// slot that answered. It never retries.
func slotFrom(src netip.Addr, url string) (int, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		return -1, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
	buf := make([]byte, 4096)
	n, _ := readAll(conn, buf)
	for _, line := range strings.Split(string(buf[:n]), "\r\n") {
		if v, ok := strings.CutPrefix(line, "X-Worker-Id: "); ok {
			return strconv.Atoi(v)
		}
	}
	return -1, fmt.Errorf("no X-Worker-Id in %q", buf[:n])
}

func readAll(c net.Conn, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// where asks once from every source, in parallel, and returns the slot of each.
func where(t *testing.T, url string, sources []netip.Addr) map[netip.Addr]int {
	t.Helper()
	var mu sync.Mutex
	out := map[netip.Addr]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, src := range sources {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			slot, err := slotFrom(src, url)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("request from %s: %v", src, err)
			}
			out[src] = slot
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// stickyLoad runs the never-retrying client from many sources until
// stopped, counting failures.
func stickyLoad(url string, sources []netip.Addr) *load {
	l := &load{stop: make(chan struct{})}
	for c := 0; c < 8; c++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := c; ; i += 8 {
				select {
				case <-l.stop:
					return
				default:
				}
				_, err := slotFrom(sources[i%len(sources)], url)
				l.mu.Lock()
				if err != nil {
					l.failures = append(l.failures, err.Error())
				} else {
					l.ok++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func checkPredicted(t *testing.T, got map[netip.Addr]int, slots int) {
	t.Helper()
	for src, slot := range got {
		if want := recluster.StickySlot(src, slots); slot != want {
			t.Fatalf("%s landed on slot %d; the table predicts %d of %d", src, slot, want, slots)
		}
	}
}

// 200 sources x 10 connections each: every source lands on one slot, the
// one the table predicts, and every slot gets clients.
func TestStickySourcesLandOnThePredictedSlot(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 4, Sticky: true})
	sources := stickySources(200)
	perSlot := map[int]int{}
	for round := 0; round < 10; round++ {
		got := where(t, tc.url, sources)
		checkPredicted(t, got, 4)
		if round == 0 {
			for _, slot := range got {
				perSlot[slot]++
			}
		}
	}
	t.Logf("200 sources over 4 slots: %v", perSlot)
	if len(perSlot) != 4 {
		t.Fatalf("only slots %v got clients", perSlot)
	}
	st := tc.Status()
	if st.Sticky == nil || len(st.Sticky.Shares) != 4 || st.Sticky.Buckets != recluster.StickyBuckets {
		t.Fatalf("status does not show stickiness: %+v", st.Sticky)
	}
}

// Reloads and a crash keep every source on its slot, and the reloads fail
// no request.
func TestStickyReloadsAndACrashRemapNothing(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 4, Sticky: true, Timeout: 5 * time.Second})
	sources := stickySources(120)
	before := where(t, tc.url, sources)
	checkPredicted(t, before, 4)
	l := stickyLoad(tc.url, sources)
	for i := 0; i < 3; i++ {
		l.progress(t, 100)
		if err := tc.Reload(context.Background()); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
	}
	l.progress(t, 100)
	ok, failures := l.finish()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed across 3 reloads: %v", len(failures), ok+len(failures), failures[:min(5, len(failures))])
	}
	checkSame(t, "3 reloads", before, where(t, tc.url, sources))

	victim := tc.ActiveWorkers()[1]
	actives := len(tc.rec.all())
	if err := syscallKill(victim.PID(), "KILL"); err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, countKind(tc.rec.all()[:actives], recluster.EventActive)+1, 10*time.Second, kind(recluster.EventActive))
	checkSame(t, "a SIGKILL", before, where(t, tc.url, sources))
	t.Logf("%d requests, 0 failed; 0 of %d sources remapped", ok, len(sources))
}

func countKind(es []recluster.Event, k recluster.EventKind) int {
	n := 0
	for _, e := range es {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func checkSame(t *testing.T, after string, before, now map[netip.Addr]int) {
	t.Helper()
	for src, slot := range before {
		if now[src] != slot {
			t.Fatalf("after %s, %s moved from slot %d to %d", after, src, slot, now[src])
		}
	}
}

// Scaling 4 to 5 moves only sources to the new slot, 5 to 4 only the
// removed slot's sources, each at most a quarter of them (plus a margin),
// and no request fails meanwhile.
func TestStickyScaleMovesOnlyTheChangedSlotsSources(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 4, Sticky: true, Timeout: 5 * time.Second})
	sources := stickySources(200)
	at4 := where(t, tc.url, sources)
	checkPredicted(t, at4, 4)
	l := stickyLoad(tc.url, sources)
	l.progress(t, 100)
	if err := tc.Scale(5); err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, 5, 10*time.Second, kind(recluster.EventActive))
	l.progress(t, 100)
	at5 := where(t, tc.url, sources)
	checkPredicted(t, at5, 5)
	moved := 0
	for src, slot := range at5 {
		if slot != at4[src] {
			moved++
			if slot != 4 {
				t.Fatalf("4→5: %s moved from slot %d to %d, not to the new slot", src, at4[src], slot)
			}
		}
	}
	if limit := len(sources)/4 + len(sources)/20; moved > limit || moved == 0 {
		t.Fatalf("4→5 moved %d of %d sources, want 1..%d", moved, len(sources), limit)
	}
	if err := tc.Scale(4); err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, 1, 20*time.Second, func(e recluster.Event) bool { return e.Kind == recluster.EventExited && e.Slot == 4 })
	l.progress(t, 100)
	ok, failures := l.finish()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed across the scale steps: %v", len(failures), ok+len(failures), failures[:min(5, len(failures))])
	}
	back := where(t, tc.url, sources)
	checkSame(t, "5→4", at4, back)
	t.Logf("4→5 moved %d of %d sources (ideal %d); 5→4 moved them back; %d requests, 0 failed", moved, len(sources), len(sources)/5, ok)
}

// IPv6 clients (::1) and IPv4-mapped ones reach a dual-stack socket and
// stay on the predicted slot.
func TestStickyServesIPv6AndMappedClients(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 3, Sticky: true}, "-addr", "[::]:0")
	port := tc.Addrs()[0].(*net.TCPAddr).Port
	v6 := fmt.Sprintf("http://[::1]:%d", port)
	mapped := fmt.Sprintf("http://[::ffff:127.0.0.1]:%d", port)
	for _, c := range []struct {
		url string
		src netip.Addr
	}{
		{v6, netip.MustParseAddr("::1")},
		{mapped, netip.MustParseAddr("::ffff:127.2.9.1")},
		{mapped, netip.MustParseAddr("::ffff:127.2.9.2")},
		{mapped, netip.MustParseAddr("::ffff:127.2.9.3")},
	} {
		for i := 0; i < 5; i++ {
			slot, err := slotFrom(c.src, c.url)
			if err != nil {
				t.Fatalf("%s from %s: %v", c.url, c.src, err)
			}
			if want := recluster.StickySlot(c.src, 3); slot != want {
				t.Fatalf("%s from %s: slot %d, predicted %d", c.url, c.src, slot, want)
			}
		}
	}
}

// Sticky refuses what it cannot serve, naming the reason and the fix.
func TestStickyRefusesUnixAndInheritedSockets(t *testing.T) {
	for _, c := range []struct {
		socket recluster.Socket
		want   string
	}{
		{recluster.Socket{Name: "u", Network: "unix", Address: "/tmp/x.sock"}, "Unix socket"},
		{recluster.Socket{Name: "s", FD: 3}, "inherited"},
	} {
		err := recluster.New(serverBin, recluster.Options{Sticky: true, Sockets: []recluster.Socket{c.socket}}).Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "turn Sticky off") {
			t.Fatalf("Sticky with %+v: %v", c.socket, err)
		}
	}
}

// Growing back right after a scale-down reuses the removed slots' sockets,
// which the master keeps, so the group's order still equals the slots'.
func TestStickyScaleBackKeepsTheOrder(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 3, Sticky: true})
	if err := tc.Scale(2); err != nil {
		t.Fatal(err)
	}
	if err := tc.Scale(4); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "4 active slots", func() bool { return len(tc.ActiveWorkers()) == 4 })
	checkPredicted(t, where(t, tc.url, stickySources(200)), 4)
	if err := tc.Scale(1); err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, 1, 20*time.Second, func(e recluster.Event) bool { return e.Kind == recluster.EventExited && e.Slot == 3 })
	checkPredicted(t, where(t, tc.url, stickySources(50)), 1)
}
