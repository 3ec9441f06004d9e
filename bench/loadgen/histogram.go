package loadgen

import (
	"math/bits"
	"time"
)

// histogram is an HDR-style log-linear histogram of durations in
// nanoseconds. Values below subCount are counted exactly; above that each
// power of two is split into subCount equal buckets, so a recorded value and
// the value reported for it differ by less than 1/subCount (0.4%). Memory
// grows with the largest value recorded: about 50 KiB for 5 s.
type histogram struct {
	counts []int64
	total  int64
	sum    int64 // nanoseconds; overflows only past ~290 years of latency
	min    int64
	max    int64
}

const (
	subBits  = 8
	subCount = 1 << subBits
)

// bucketIndex returns the bucket of v (v >= 0).
func bucketIndex(v int64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - 1 // v in [2^e, 2^(e+1)), e >= subBits
	shift := e - subBits
	sub := int(v>>shift) - subCount // in [0, subCount)
	return subCount + shift*subCount + sub
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	j := i - subCount
	shift := j / subCount
	sub := j % subCount
	lo = int64(subCount+sub) << shift
	return lo, lo + (int64(1) << shift) - 1
}

// record adds one value.
func (h *histogram) record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	i := bucketIndex(v)
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]int64, i+1-len(h.counts))...)
	}
	h.counts[i]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += v
}

// merge adds all values of o to h.
func (h *histogram) merge(o *histogram) {
	if o.total == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]int64, len(o.counts)-len(h.counts))...)
	}
	for i, n := range o.counts {
		h.counts[i] += n
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
	h.sum += o.sum
}

// quantile returns the value at quantile q (0 < q <= 1): the largest value
// of the bucket holding the ceil(q*total)-th smallest value, clamped to the
// exact minimum and maximum. It returns 0 for an empty histogram.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := int64(q * float64(h.total))
	if float64(rank) < q*float64(h.total) {
		rank++
	}
	rank = min(max(rank, 1), h.total)
	var seen int64
	for i, n := range h.counts {
		seen += n
		if seen >= rank {
			_, hi := bucketRange(i)
			return time.Duration(min(max(hi, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// summary returns the latency summary of h.
func (h *histogram) summary() LatencySummary {
	s := LatencySummary{Count: h.total}
	if h.total == 0 {
		return s
	}
	s.Min = time.Duration(h.min)
	s.Mean = time.Duration(h.sum / h.total)
	s.P50 = h.quantile(0.50)
	s.P90 = h.quantile(0.90)
	s.P99 = h.quantile(0.99)
	s.P999 = h.quantile(0.999)
	s.Max = time.Duration(h.max)
	return s
}
