package recluster

import "time"

// pacer spaces out respawns the way the Node.js recluster does: respawns keep a
// cluster-wide minimum gap; with a backoff cap, each crash doubles the gap
// up to the cap, and each quiet period as long as the cap halves it again
// until it is back at the minimum.
type pacer struct {
	min, cap  time.Duration
	gap       time.Duration
	lastSpawn time.Time // when the last scheduled respawn runs
	lastCrash time.Time
}

func newPacer(min, cap time.Duration, now time.Time) pacer {
	return pacer{min: min, cap: cap, gap: min, lastSpawn: now}
}

// next returns how long to wait before the respawn that a crash at now
// calls for, and books it.
func (p *pacer) next(now time.Time) time.Duration {
	if p.cap > 0 {
		p.decay(now)
		p.gap = min(p.gap, p.cap)
	}
	at := p.lastSpawn.Add(p.gap)
	if at.Before(now) {
		at = now
	}
	p.lastSpawn = at
	if p.cap > 0 {
		p.gap *= 2
		p.lastCrash = now
	}
	return at.Sub(now)
}

// decay halves the gap once for every full cap period without a crash.
func (p *pacer) decay(now time.Time) {
	if p.lastCrash.IsZero() {
		return
	}
	for quiet := now.Sub(p.lastCrash); quiet >= p.cap && p.gap > p.min; quiet -= p.cap {
		p.gap /= 2
	}
	p.gap = max(p.gap, p.min)
}
