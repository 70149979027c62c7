package worker_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

func TestStreamConfigs(t *testing.T) {
	cfg := worker.Config{DefaultOrg: "org1", Replicas: 3, DuplicateWindow: time.Hour, ResultsMaxAge: 48 * time.Hour}
	jobs, results, dlq := cfg.StreamConfigs()
	tests := []struct {
		name      string
		got       jetstream.StreamConfig
		stream    string
		subject   string
		retention jetstream.RetentionPolicy
		maxAge    time.Duration
	}{
		{"jobs", jobs, worker.DefaultJobsStream, worker.DefaultJobsSubject, jetstream.WorkQueuePolicy, 0},
		{"results", results, worker.DefaultResultsStream, worker.DefaultResultsSubject + ".>", jetstream.LimitsPolicy, 48 * time.Hour},
		{"dead letters", dlq, worker.DefaultDLQStream, worker.DefaultDLQSubject + ".>", jetstream.LimitsPolicy, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.got
			if c.Name != tc.stream || !slices.Equal(c.Subjects, []string{tc.subject}) || c.Retention != tc.retention ||
				c.MaxAge != tc.maxAge || c.Storage != jetstream.FileStorage || c.Duplicates != time.Hour || c.Replicas != 3 || c.Description == "" {
				t.Errorf("stream config %+v", c)
			}
		})
	}
}

// countUpdates counts the stream updates a worker asks for.
type countUpdates struct {
	jetstream.JetStream
	n *atomic.Int32
}

func (c countUpdates) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	c.n.Add(1)
	return c.JetStream.UpdateStream(ctx, cfg)
}

func (c countUpdates) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	c.n.Add(1)
	return c.JetStream.CreateOrUpdateStream(ctx, cfg)
}

// A worker that starts on streams already provisioned brings the settings
// it provisions to its own and keeps the limits an operator set; on
// streams that already fit it updates nothing.
func TestProvisionKeepsOperatorLimits(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := testConfig()
	first := e.start(cfg)
	if err := first.Stop(t, 5*time.Second); err != nil {
		t.Fatalf("first worker: %v", err)
	}

	// An operator caps the dead letters' stream.
	dlq, err := e.js.Stream(ctx, worker.DefaultDLQStream)
	if err != nil {
		t.Fatal(err)
	}
	capped := dlq.CachedInfo().Config
	capped.MaxBytes = 64 << 20
	if _, err := e.js.UpdateStream(ctx, capped); err != nil {
		t.Fatal(err)
	}

	var updates atomic.Int32
	count := func(js jetstream.JetStream) jetstream.JetStream { return countUpdates{js, &updates} }
	same := e.start(cfg, count)
	if err := same.Stop(t, 5*time.Second); err != nil {
		t.Fatalf("second worker: %v", err)
	}
	if n := updates.Load(); n != 0 {
		t.Errorf("a worker starting on streams that fit asked for %d stream updates, want 0", n)
	}

	cfg.DuplicateWindow = 3 * time.Hour
	e.start(cfg)
	for _, name := range []string{worker.DefaultJobsStream, worker.DefaultResultsStream, worker.DefaultDLQStream} {
		s, err := e.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.Duplicates; got != 3*time.Hour {
			t.Errorf("stream %s: duplicate window %s after a worker configured for 3h started", name, got)
		}
	}
	dlq, err = e.js.Stream(ctx, worker.DefaultDLQStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := dlq.CachedInfo().Config.MaxBytes; got != 64<<20 {
		t.Errorf("dead letters' stream: max bytes %d after workers started, want the operator's %d", got, 64<<20)
	}
}
