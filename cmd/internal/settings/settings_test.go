package settings_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// TestDescribeNamesSettings: the worker's errors name its Config fields;
// an operator reads the environment variables that set them, also when
// the error is wrapped or joined with others.
func TestDescribeNamesSettings(t *testing.T) {
	cfg := worker.Config{DefaultOrg: "org1", Backoff: []time.Duration{time.Hour}, DuplicateWindow: 30 * time.Minute}
	cfg.JobsSubject = "a.*"
	err := fmt.Errorf("starting: %w", cfg.Validate())
	got := settings.Describe(err)
	for _, want := range []string{"DELETER_BACKOFF step 1h0m0s is longer than DELETER_DUPLICATE_WINDOW 30m0s", `DELETER_JOBS_SUBJECT "a.*"`} {
		if !strings.Contains(got, want) {
			t.Errorf("Describe does not say %q:\n%s", want, got)
		}
	}
	for _, field := range []string{"Backoff ", "DuplicateWindow", "JobsSubject"} {
		if strings.Contains(got, field) {
			t.Errorf("Describe still names the field %s:\n%s", field, got)
		}
	}
}
