package recluster

import (
	"testing"
	"time"
)

func TestPacingFollowsTheSeed(t *testing.T) {
	start := time.Unix(1000, 0)
	p := newPacer(time.Second, 8*time.Second, start)
	now := start.Add(10 * time.Second)
	// Crashes in quick succession: gaps of 1s, 2s, 4s, 8s, then capped.
	var delays []time.Duration
	for i := 0; i < 5; i++ {
		delays = append(delays, p.next(now))
	}
	want := []time.Duration{0, 2 * time.Second, 6 * time.Second, 14 * time.Second, 22 * time.Second}
	for i := range want {
		if delays[i] != want[i] {
			t.Fatalf("delays %v, want %v", delays, want)
		}
	}
	// After quiet periods the gap halves once per Backoff period.
	quiet := p.lastSpawn.Add(3 * 8 * time.Second)
	if d := p.next(quiet); d != 0 {
		t.Fatalf("after a quiet period the respawn waits %v", d)
	}
	if p.gap != 2*time.Second { // 8s halved three times is 1s, then doubled by this crash
		t.Fatalf("gap after decay %v, want 2s", p.gap)
	}
}

func TestPacingWithoutBackoffKeepsTheMinimumGap(t *testing.T) {
	start := time.Unix(1000, 0)
	p := newPacer(time.Second, 0, start)
	now := start.Add(time.Minute)
	if d := p.next(now); d != 0 {
		t.Fatalf("first respawn waits %v", d)
	}
	if d := p.next(now); d != time.Second {
		t.Fatalf("second respawn waits %v, want 1s", d)
	}
	if d := p.next(now); d != 2*time.Second {
		t.Fatalf("third respawn waits %v, want 2s (1s after the second)", d)
	}
}
