package recluster

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// skfNetOff is the kernel's SKF_NET_OFF: a classic BPF load at this base
// plus k reads byte k of the network header. A reuseport program runs on
// the SYN with the packet data pulled past the TCP header, so the IP
// header lies before the data and only this base reaches it.
const skfNetOff = -0x100000

// stickyFallback is what the program returns for a packet that is neither
// IPv4 nor IPv6. The kernel takes an index beyond its group as "no
// choice" and falls back to its own hash, which serves the connection.
const stickyFallback = 0xffffffff

// stickyProgram assembles the classic BPF program that returns, for a
// SYN, the index of the slot's socket in the reuseport group (which is the
// slot: the registry keeps the group in slot order). It computes
// stickyBucket in the kernel and looks the bucket up in t with a balanced
// tree of comparisons over the runs of equal slots, at most nine
// comparisons deep. netBase is the offset of the IP header: skfNetOff in
// the kernel, 0 when a test runs the program on a bare IP header.
func stickyProgram(t *stickyTable, netBase int32) ([]bpf.RawInstruction, error) {
	at := func(k uint32) uint32 { return uint32(netBase) + k }
	mix := []bpf.Instruction{
		bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: stickyMultiplier},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 24},
	}
	// The IPv6 key: the /64's high word, mixed, xor its low word; an
	// IPv4-mapped address (::ffff:a.b.c.d) counts as the IPv4 one.
	v6key := []bpf.Instruction{
		bpf.LoadAbsolute{Off: at(8), Size: 4},
		bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: stickyMultiplier},
		bpf.TAX{},
		bpf.LoadAbsolute{Off: at(12), Size: 4},
		bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.Jump{Skip: 1}, // over the IPv4 key, to the mix
	}
	v4key := []bpf.Instruction{bpf.LoadAbsolute{Off: at(12), Size: 4}}
	mapped := []bpf.Instruction{
		bpf.LoadAbsolute{Off: at(8), Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0, SkipTrue: 6},
		bpf.LoadAbsolute{Off: at(12), Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0, SkipTrue: 4},
		bpf.LoadAbsolute{Off: at(16), Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0xffff, SkipTrue: 2},
		bpf.LoadAbsolute{Off: at(20), Size: 4},
		bpf.Jump{Skip: uint32(len(v6key) + len(v4key))}, // to the mix, past the IPv4 load
	}
	var prog []bpf.Instruction
	prog = append(prog,
		bpf.LoadAbsolute{Off: at(0), Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
		// IPv4 is laid out after the IPv6 code; jump there directly.
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4, SkipTrue: uint8(2 + len(mapped) + len(v6key))},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipTrue: 1},
		bpf.RetConstant{Val: stickyFallback},
	)
	prog = append(prog, mapped...)
	prog = append(prog, v6key...)
	prog = append(prog, v4key...)
	prog = append(prog, mix...)
	prog = append(prog, lookupTree(stickyRuns(t))...)
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("recluster: assembling the sticky program: %w", err)
	}
	return raw, nil
}

// stickyRun is a range of consecutive buckets served by one slot.
type stickyRun struct{ first, slot int }

func stickyRuns(t *stickyTable) []stickyRun {
	var runs []stickyRun
	for b, slot := range t {
		if len(runs) == 0 || runs[len(runs)-1].slot != slot {
			runs = append(runs, stickyRun{first: b, slot: slot})
		}
	}
	return runs
}

// lookupTree returns code that, with the bucket in A, returns the slot of
// its run: a binary search laid out in pre-order. A conditional jump skips
// at most 255 instructions, so a left half longer than that is stepped
// over with an unconditional jump.
func lookupTree(runs []stickyRun) []bpf.Instruction {
	if len(runs) == 1 {
		return []bpf.Instruction{bpf.RetConstant{Val: uint32(runs[0].slot)}}
	}
	mid := len(runs) / 2
	left, right := lookupTree(runs[:mid]), lookupTree(runs[mid:])
	split := uint32(runs[mid].first)
	var out []bpf.Instruction
	if len(left) <= 255 {
		out = append(out, bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: split, SkipTrue: uint8(len(left))})
	} else {
		out = append(out,
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: split, SkipFalse: 1},
			bpf.Jump{Skip: uint32(len(left))})
	}
	out = append(out, left...)
	return append(out, right...)
}
