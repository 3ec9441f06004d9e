package recluster

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// StickyBuckets is the number of buckets that Sticky mode hashes client
// addresses into. The kernel program maps an address to a bucket, and a
// table that the master computes maps each bucket to a slot, so a change
// of slots rewrites the table and moves whole buckets, never single
// clients. It also bounds the slots worth having: a Sticky cluster of more
// slots than buckets would leave some without clients, so Sticky refuses
// it.
const StickyBuckets = 256

// stickyMultiplier is the 32-bit golden-ratio constant of Fibonacci
// hashing. Its top byte of key*multiplier spreads consecutive keys (the
// addresses of one subnet) over the buckets almost evenly, which a random
// hash does not: that keeps the per-slot share of a few hundred clients
// within a few per cent of the ideal.
const stickyMultiplier = 0x9E3779B1

// stickyBucket is the bucket of a client address, computed exactly as the
// kernel program does (see stickyProgram): an IPv4 address (or an
// IPv4-mapped IPv6 one) whole, an IPv6 address by its /64, because one
// host commonly uses many addresses of its /64.
func stickyBucket(addr netip.Addr) int {
	addr = addr.Unmap()
	var key uint32
	if addr.Is4() {
		b := addr.As4()
		key = binary.BigEndian.Uint32(b[:])
	} else {
		b := addr.As16()
		high, low := binary.BigEndian.Uint32(b[0:4]), binary.BigEndian.Uint32(b[4:8])
		key = high*stickyMultiplier ^ low
	}
	return int(key * stickyMultiplier >> 24)
}

// stickyTable maps each bucket to its slot.
type stickyTable [StickyBuckets]int

// newStickyTable returns the table for a cluster of slots slots. It is a
// pure function of slots, so a reload or a crash (which keep the number of
// slots) moves no client, and it is built one slot at a time: the table
// for n+1 slots is the table for n slots in which slot n has taken its
// share of buckets from the others. Growing from n to n+1 therefore moves
// only the buckets that the new slot takes, about 1/(n+1) of them, and
// shrinking back moves only the buckets of the removed slot.
//
// Which buckets the new slot takes is decided by rendezvous weights
// (highest random weight of bucket and slot), but, unlike plain rendezvous
// or jump hashing, the counts are exact: every slot ends with
// StickyBuckets/n buckets or one more. With a few hundred buckets the
// random counts of plain rendezvous hashing differ by a quarter between
// the busiest and the idlest slot; these differ by one bucket.
func newStickyTable(slots int) *stickyTable {
	t := &stickyTable{}
	counts := make([]int, 1, max(slots, 1))
	counts[0] = StickyBuckets
	order := make([]int, StickyBuckets)
	var weight [StickyBuckets]uint64
	for n := 1; n < slots; n++ {
		quota := StickyBuckets / (n + 1)
		// The old slots give up their buckets down to quota each, except
		// the remainder's worth of them, which keep one more: those that
		// hold most, the lowest slots first on a tie.
		keepExtra := StickyBuckets - (n+1)*quota
		byCount := make([]int, n)
		for s := range byCount {
			byCount[s] = s
		}
		slices.SortStableFunc(byCount, func(a, b int) int { return counts[b] - counts[a] })
		give := make([]int, n)
		for rank, s := range byCount {
			give[s] = counts[s] - quota
			if rank < keepExtra {
				give[s]--
			}
		}
		for b := range order {
			order[b] = b
			weight[b] = rendezvousWeight(b, n)
		}
		slices.SortFunc(order, func(a, b int) int { return cmp.Compare(weight[b], weight[a]) })
		counts = append(counts, 0)
		for _, b := range order {
			if owner := t[b]; give[owner] > 0 {
				give[owner]--
				counts[owner]--
				t[b] = n
				counts[n]++
			}
		}
	}
	return t
}

// rendezvousWeight is the pseudo-random weight of a bucket for a slot
// (the splitmix64 finaliser of both).
func rendezvousWeight(bucket, slot int) uint64 {
	x := uint64(bucket)<<32 | uint64(slot)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// shares counts the buckets of each of slots slots.
func (t *stickyTable) shares(slots int) []int {
	out := make([]int, slots)
	for _, s := range t {
		out[s]++
	}
	return out
}

// StickySlot returns the slot that a Sticky cluster of the given number of
// slots sends the connections of a client address to (IPv4, IPv6 or
// IPv4-mapped IPv6). It is what the kernel program computes, so tests and
// operators can predict where a client lands; it returns -1 for an invalid
// address or a number of slots that Sticky refuses.
func StickySlot(addr netip.Addr, slots int) int {
	if !addr.IsValid() || slots < 1 || slots > StickyBuckets {
		return -1
	}
	return stickyTableFor(slots)[stickyBucket(addr)]
}

// stickyTables memoises newStickyTable, a pure function of its argument,
// for StickySlot's callers that predict many addresses.
var stickyTables sync.Map // slots -> *stickyTable

func stickyTableFor(slots int) *stickyTable {
	if t, ok := stickyTables.Load(slots); ok {
		return t.(*stickyTable)
	}
	t, _ := stickyTables.LoadOrStore(slots, newStickyTable(slots))
	return t.(*stickyTable)
}

// StickyStatus says how Sticky mode shares the client addresses.
type StickyStatus struct {
	// Buckets is the number of buckets client addresses are hashed into.
	Buckets int `json:"buckets"`
	// Shares holds, for each slot, the buckets it serves.
	Shares []int `json:"shares"`
}

func stickyStatus(slots int) *StickyStatus {
	return &StickyStatus{Buckets: StickyBuckets, Shares: newStickyTable(slots).shares(slots)}
}

// validateSticky refuses the Sticky setups that cannot hold, naming the
// reason and the fix.
func validateSticky(o Options) error {
	if !o.Sticky {
		return nil
	}
	if err := stickySupported(); err != nil {
		return err
	}
	if o.Workers > StickyBuckets {
		return fmt.Errorf("recluster: Sticky serves at most %d workers (it shares %d buckets of client addresses), not %d; use fewer workers, or turn Sticky off", StickyBuckets, StickyBuckets, o.Workers)
	}
	for _, s := range o.Sockets {
		switch {
		case s.FD > 0:
			return fmt.Errorf("recluster: socket %q is inherited (fd %d, from systemd), and Sticky needs one socket per slot that the master binds itself; give its address instead (NAME=ADDR) and drop the systemd socket unit, or turn Sticky off", s.Name, s.FD)
		case s.Network == "unix":
			return fmt.Errorf("recluster: socket %q is a Unix socket, which has no client IP address for Sticky to go by; listen on TCP, or turn Sticky off", s.Name)
		}
	}
	return nil
}

// stickyDrainGrace is how long the accept queues of slots scaled away must
// stay empty before their workers are told to disconnect: a SYN that the
// old program sent there becomes a connection in the queue one round trip
// later, and a worker that has stopped accepting would strand it.
const stickyDrainGrace = time.Second

// stickyDrainMax bounds that wait, for a worker that does not accept.
const stickyDrainMax = 10 * time.Second

// retiringSlot is a slot scaled away in Sticky mode whose workers have
// not been told to disconnect yet.
type retiringSlot struct {
	since      time.Time // when the program stopped sending it clients
	quietSince time.Time // since when its queues have been empty
}

// retireSticky finishes a scale-down in Sticky mode. The program already
// sends the removed slots no client (socketRegistry.resize); once a
// removed slot's queues have stayed empty for stickyDrainGrace, its
// workers are told to disconnect. Its sockets stay open: closing one would
// move the group's last socket into its place and shift the slot numbers
// the program returns. One check loop serves every removed slot, each on
// its own clock, and forgets a slot that a scale-up brought back.
func (s *supervisor) retireSticky() {
	if s.stickyRetireLoop {
		return
	}
	s.stickyRetireLoop = true
	var check func()
	later := func() { s.after(10*time.Millisecond, func(*supervisor) { check() }) }
	check = func() {
		if s.phase != PhaseRunning {
			s.stickyRetireLoop = false
			return
		}
		now := s.sys.now()
		retiring := s.sockets.retiringSlots()
		for slot, rs := range retiring {
			if slot < s.slots {
				delete(retiring, slot)
				continue
			}
			if s.sockets.queued(slot) > 0 {
				rs.quietSince = now
			}
			if now.Sub(rs.quietSince) < stickyDrainGrace && now.Sub(rs.since) < stickyDrainMax {
				continue
			}
			delete(retiring, slot)
			for _, w := range slices.Clone(s.bySlot[slot]) {
				s.drain(w, "scaled down")
			}
		}
		if len(retiring) > 0 {
			later()
			return
		}
		s.stickyRetireLoop = false
		if s.reload != nil {
			s.maybeCommit()
		}
	}
	later()
}
