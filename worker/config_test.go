package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
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

// TestArchiveFirstNeedsAnArchiver: an unknown mode is refused, and so is a
// mode that archives with a Deleter that cannot.
func TestArchiveFirstNeedsAnArchiver(t *testing.T) {
	cfg := worker.Config{DefaultOrg: "org1", ArchiveFirst: "sometimes"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ArchiveFirst") {
		t.Errorf("Validate(ArchiveFirst sometimes) = %v, want an ArchiveFirst error", err)
	}
	for _, mode := range []worker.ArchiveMode{"", worker.ArchiveNever, worker.ArchiveJob, worker.ArchiveAlways} {
		cfg.ArchiveFirst = mode
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(ArchiveFirst %q) = %v", mode, err)
		}
	}
	e := newEnv(t)
	cfg.ArchiveFirst = worker.ArchiveJob
	if _, err := worker.New(e.js, deleteOnly{}, cfg); err == nil || !strings.Contains(err.Error(), "ArchiveFirst") {
		t.Errorf("New with a Deleter that cannot archive = %v, want an ArchiveFirst error", err)
	}
}

type deleteOnly struct{}

func (deleteOnly) DeleteRun(context.Context, string, string) (*tallyfy.Response, error) {
	return nil, nil
}
