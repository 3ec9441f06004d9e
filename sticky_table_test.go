package recluster

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// Every table is exactly balanced, and growing by one slot moves only the
// buckets the new slot takes, its exact share: so shrinking back moves
// only the removed slot's buckets.
func TestStickyTableIsBalancedAndMovesOnlyTheNewSlotsShare(t *testing.T) {
	prev := newStickyTable(1)
	for n := 2; n <= StickyBuckets; n++ {
		table := newStickyTable(n)
		shares := table.shares(n)
		lo, hi := shares[0], shares[0]
		for _, c := range shares {
			lo, hi = min(lo, c), max(hi, c)
		}
		if hi-lo > 1 {
			t.Fatalf("%d slots: shares differ by %d buckets: %v", n, hi-lo, shares)
		}
		moved := 0
		for b := range table {
			if table[b] != prev[b] {
				moved++
				if table[b] != n-1 {
					t.Fatalf("%d slots: bucket %d moved from slot %d to %d, not to the new slot", n, b, prev[b], table[b])
				}
			}
		}
		if moved != StickyBuckets/n {
			t.Fatalf("%d slots: %d buckets moved, want %d", n, moved, StickyBuckets/n)
		}
		prev = table
	}
}

// The acceptance bound on balance is a property of the table: 256 client
// addresses of one subnet spread over 4 slots within 1.5 of each other.
func TestStickyBalanceOf256Sources(t *testing.T) {
	counts := make([]int, 4)
	for _, a := range testSources(256) {
		counts[StickySlot(a, 4)]++
	}
	lo, hi := slicesMinMax(counts)
	if float64(hi) > 1.5*float64(lo) {
		t.Fatalf("256 sources over 4 slots: %v, busiest/idlest %.2f > 1.5", counts, float64(hi)/float64(lo))
	}
	t.Logf("256 sources over 4 slots: %v (busiest/idlest %.2f)", counts, float64(hi)/float64(lo))
}

func slicesMinMax(xs []int) (int, int) {
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// testSources returns n distinct loopback addresses, as the tests'
// clients bind them: 127.1.x.y, avoiding .0 and .255.
func testSources(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(1 + i%250)})
	}
	return out
}

// The kernel program computes the table's answer, for IPv4, IPv6 and
// IPv4-mapped IPv6 headers: run in x/net/bpf's VM on bare IP headers
// (network base 0 instead of the kernel's SKF_NET_OFF).
func TestStickyProgramComputesTheTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, slots := range []int{1, 2, 3, 4, 5, 7, 16, 100, 256} {
		table := newStickyTable(slots)
		raw, err := stickyProgram(table, 0)
		if err != nil {
			t.Fatal(err)
		}
		prog, ok := bpf.Disassemble(raw)
		if !ok {
			t.Fatal("the program does not disassemble")
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatalf("%d slots: %v", slots, err)
		}
		for i := 0; i < 500; i++ {
			var a [16]byte
			for j := range a {
				a[j] = byte(rng.Uint32())
			}
			addrs := []netip.Addr{netip.AddrFrom4([4]byte(a[:4])), netip.AddrFrom16(a), netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: a[0], 13: a[1], 14: a[2], 15: a[3]})}
			for _, addr := range addrs {
				got, err := vm.Run(ipHeader(addr))
				if err != nil {
					t.Fatal(err)
				}
				if want := table[stickyBucket(addr)]; got != want {
					t.Fatalf("%d slots, %s: the program returns %d, the table %d", slots, addr, got, want)
				}
			}
		}
		if got, _ := vm.Run(make([]byte, 40)); got != stickyFallback {
			t.Fatalf("a packet that is neither IPv4 nor IPv6 gets %d, want the kernel's fallback", got)
		}
	}
	if StickySlot(netip.MustParseAddr("::ffff:10.1.2.3"), 7) != StickySlot(netip.MustParseAddr("10.1.2.3"), 7) {
		t.Fatal("an IPv4-mapped address does not count as its IPv4 address")
	}
	if StickySlot(netip.MustParseAddr("2001:db8::1"), 7) != StickySlot(netip.MustParseAddr("2001:db8::ffff:2"), 7) {
		t.Fatal("two addresses of one /64 land on different slots")
	}
}

// ipHeader returns the start of an IP header from addr (as a packet would
// carry an IPv4-mapped one: IPv6 with the mapped source).
func ipHeader(addr netip.Addr) []byte {
	if addr.Is4() {
		h := make([]byte, 20)
		h[0] = 0x45
		b := addr.As4()
		copy(h[12:], b[:])
		return h
	}
	h := make([]byte, 40)
	binary.BigEndian.PutUint32(h, 6<<28)
	b := addr.As16()
	copy(h[8:], b[:])
	return h
}
