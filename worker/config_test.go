package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// TestValidateOrder: the problems come out in one fixed order, the order
// of the settings in Validate, however often it runs.
func TestValidateOrder(t *testing.T) {
	cfg := worker.Config{
		DefaultOrg:      "org1",
		APITimeout:      -time.Second,
		BreakerTimeout:  -time.Second,
		ShutdownTimeout: -time.Second,
		Streams: worker.Streams{
			JobsStream:    "jobs.x",
			ResultsStream: "results x",
			Consumer:      "a>b",
			JobsSubject:   "jobs.",
			DLQSubject:    "dlq..x",
		},
	}
	want := []string{
		"APITimeout must not be negative",
		"BreakerTimeout must not be negative",
		"ShutdownTimeout must not be negative",
		`JobsStream "jobs.x"`,
		`ResultsStream "results x"`,
		`Consumer "a>b"`,
		`JobsSubject "jobs."`,
		`DLQSubject "dlq..x"`,
	}
	first := cfg.Validate()
	if first == nil {
		t.Fatal("Validate accepted a config with negative timeouts")
	}
	at := -1
	for _, w := range want {
		i := strings.Index(first.Error(), w)
		if i <= at {
			t.Fatalf("%q missing or out of order in:\n%v", w, first)
		}
		at = i
	}
	for range 50 {
		if err := cfg.Validate(); err.Error() != first.Error() {
			t.Fatalf("Validate's errors changed order between runs:\n%v\nthen:\n%v", first, err)
		}
	}
}
