package testutil_test

import (
	"sort"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

func TestZZClusterStartDistribution(t *testing.T) {
	var ds []time.Duration
	for range 30 {
		t.Run("", func(t *testing.T) {
			ts := time.Now()
			testutil.JetStreamCluster(t, 3)
			ds = append(ds, time.Since(ts))
		})
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	t.Logf("%v", ds)
}
