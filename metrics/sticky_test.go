package metrics_test

import (
	"testing"

	"github.com/recluster-go/recluster"
)

// With Sticky, /metrics and /status give each slot's share of the client
// address buckets.
func TestStickyBucketShare(t *testing.T) {
	f := start(t, 3, func(o *recluster.Options) { o.Sticky = true })
	fams := scrape(t, f.base)
	total := 0.0
	for _, slot := range []string{"0", "1", "2"} {
		v := mustSample(t, fams, "recluster_sticky_bucket_share", "slot", slot)
		if v < 0.33 || v > 0.34 {
			t.Errorf("recluster_sticky_bucket_share{slot=%s} = %v, want a third", slot, v)
		}
		total += v
	}
	if total < 0.999 || total > 1.001 {
		t.Errorf("the shares add up to %v, want 1", total)
	}
	st := f.status(t)
	if st.Sticky == nil || st.Sticky.Buckets != recluster.StickyBuckets || len(st.Sticky.Shares) != 3 {
		t.Errorf("/status sticky: %+v", st.Sticky)
	}
}
