package testutil_test

import (
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

func TestZZOne(t *testing.T) {
	for _, n := range []int{1, 2, 5} {
		ts := time.Now()
		nodes := testutil.JetStreamCluster(t, n)
		t.Logf("n=%d %s", n, time.Since(ts))
		_, js := testutil.Connect(t, nodes[0].URL())
		createJobs(t, t.Context(), js, n)
		for _, x := range nodes { x.Shutdown() }
	}
}
