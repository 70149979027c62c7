package worker_test

import (
	"slices"
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
