package loadgen

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketRoundTrip(t *testing.T) {
	for _, v := range []int64{0, 1, 255, 256, 257, 511, 512, 1000, 123456789, 5e9, 1 << 62} {
		i := bucketIndex(v)
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if v >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/subCount {
			t.Errorf("bucket [%d, %d] wider than 1/%d", lo, hi, subCount)
		}
		if i > 0 {
			if _, prevHi := bucketRange(i - 1); prevHi != lo-1 {
				t.Errorf("bucket %d does not follow bucket %d", i, i-1)
			}
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var a, b histogram
	var all []int64
	for i := range 100000 {
		// Log-normal-ish latencies from ~10µs to ~1s.
		v := int64(10e3 * (1 + rng.ExpFloat64()*rng.ExpFloat64()*50))
		all = append(all, v)
		if i%2 == 0 {
			a.record(time.Duration(v))
		} else {
			b.record(time.Duration(v))
		}
	}
	a.merge(&b)
	slices.Sort(all)
	if a.total != int64(len(all)) || a.min != all[0] || a.max != all[len(all)-1] {
		t.Fatalf("total/min/max = %d/%d/%d, want %d/%d/%d", a.total, a.min, a.max, len(all), all[0], all[len(all)-1])
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		rank := int(q*float64(len(all))+0.999999) - 1
		exact := all[rank]
		got := int64(a.quantile(q))
		if got < exact || float64(got-exact) > float64(exact)/subCount {
			t.Errorf("q%.3f = %d, exact %d: off by more than 1/%d", q, got, exact, subCount)
		}
	}
	s := a.summary()
	if s.Count != int64(len(all)) || s.P50 > s.P90 || s.P90 > s.P99 || s.P99 > s.P999 || s.P999 > s.Max {
		t.Errorf("summary not ordered: %+v", s)
	}
	var empty histogram
	if empty.summary() != (LatencySummary{}) || empty.quantile(0.5) != 0 {
		t.Error("empty histogram summary not zero")
	}
}
