package worker_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// failAfterArchive is the real client, but for the permanent deletes that
// follow an archive: the first `fails` of them answer 503.
type failAfterArchive struct {
	*tallyfy.Client
	fails    int64
	archived atomic.Bool
	failed   atomic.Int64
}

func (f *failAfterArchive) ArchiveRun(ctx context.Context, org, run string) (*tallyfy.Response, error) {
	resp, err := f.Client.ArchiveRun(ctx, org, run)
	if err == nil {
		f.archived.Store(true)
	}
	return resp, err
}

func (f *failAfterArchive) DeleteRun(ctx context.Context, org, run string) (*tallyfy.Response, error) {
	if f.archived.Load() && f.failed.Add(1) <= f.fails {
		return nil, &tallyfy.APIError{StatusCode: http.StatusServiceUnavailable, Message: "unavailable"}
	}
	return f.Client.DeleteRun(ctx, org, run)
}

// TestArchiveFirst: with DELETER_ARCHIVE_FIRST, a run that is not archived
// is archived and then deleted, for the jobs the mode allows; the result
// says the worker archived it. Archive answers route like the delete's.
func TestArchiveFirst(t *testing.T) {
	e := newEnv(t)
	api := e.api
	asks := func(run string) string { return `{"org_id":"org1","run_id":"` + run + `","archive_first":true}` }
	tests := []struct {
		name     string
		mode     worker.ArchiveMode
		body     string
		header   bool // Tallyfy-Archive-First: true
		setup    func(run string)
		outcome  worker.Outcome
		reason   worker.Reason
		archived bool // the result says the worker archived the run
		gone     bool // the run is deleted at the end
		touched  bool // the run is archived at the end (when not gone)
	}{
		{name: "job asks in its body", mode: worker.ArchiveJob, body: asks("rbody"),
			outcome: worker.OutcomeDeleted, archived: true, gone: true},
		{name: "job asks with the header", mode: worker.ArchiveJob, body: job(testOrg, "rheader"), header: true,
			outcome: worker.OutcomeDeleted, archived: true, gone: true},
		{name: "job does not ask", mode: worker.ArchiveJob, body: job(testOrg, "rnoask"),
			outcome: worker.OutcomeDeadLettered, reason: worker.ReasonNotArchived},
		{name: "never, although the job asks", mode: worker.ArchiveNever, body: asks("rnever"),
			outcome: worker.OutcomeDeadLettered, reason: worker.ReasonNotArchived},
		{name: "always", mode: worker.ArchiveAlways, body: job(testOrg, "ralways"),
			outcome: worker.OutcomeDeleted, archived: true, gone: true},
		{name: "already archived: no archive", mode: worker.ArchiveAlways, body: job(testOrg, "rarchived"),
			setup: func(run string) { api.ArchiveRun(testOrg, run) }, outcome: worker.OutcomeDeleted, gone: true},
		{name: "archive answers 403", mode: worker.ArchiveAlways, body: job(testOrg, "rdeny"),
			setup: func(run string) {
				api.Script(testOrg, run, testutil.Response{Status: 422, Body: `{"message":"archive it first"}`},
					testutil.Response{Status: 403, Body: `{"message":"This action is unauthorized."}`})
			}, outcome: worker.OutcomeDeadLettered, reason: worker.ReasonForbidden},
		{name: "404 for a run that exists", mode: worker.ArchiveAlways, body: job(testOrg, "r404"),
			setup: func(run string) {
				api.Script(testOrg, run, testutil.Response{Status: 404, Body: `{"message":"Process not found"}`})
			},
			outcome: worker.OutcomeDeleted, archived: true, gone: true},
	}
	modes := map[worker.ArchiveMode][]int{}
	for i, tc := range tests {
		run := runOf(t, tc.body)
		api.AddRun(testOrg, run, false)
		if tc.setup != nil {
			tc.setup(run)
		}
		modes[tc.mode] = append(modes[tc.mode], i)
	}
	seqs := make([]uint64, len(tests))
	for mode, rows := range modes {
		cfg := testConfig()
		cfg.ArchiveFirst = mode
		cfg.VerifyNotFound = true
		cfg.Consumer = "c-" + string(mode)
		cfg.JobsSubject = "jobs." + string(mode)
		e.start(cfg)
		for _, i := range rows {
			m := nats.NewMsg(cfg.JobsSubject)
			m.Data = []byte(tests[i].body)
			if tests[i].header {
				m.Header.Set(worker.HeaderArchiveFirst, "true")
			}
			ack, err := e.js.PublishMsg(context.Background(), m)
			if err != nil {
				t.Fatal(err)
			}
			seqs[i] = ack.Sequence
		}
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := runOf(t, tc.body)
			r := e.result(seqs[i], 15*time.Second)
			if r.Outcome != tc.outcome || r.Reason != tc.reason || r.Archived != tc.archived {
				t.Errorf("result %s/%s archived %v, want %s/%s archived %v", r.Outcome, r.Reason, r.Archived, tc.outcome, tc.reason, tc.archived)
			}
			if tc.archived && r.ArchivedAt == "" {
				t.Errorf("archived without archived_at")
			}
			if got := api.Deleted(testOrg, run); got != tc.gone {
				t.Errorf("run deleted: %v, want %v", got, tc.gone)
			}
			if !tc.gone && api.Archived(testOrg, run) != tc.touched {
				t.Errorf("run archived: %v, want %v", api.Archived(testOrg, run), tc.touched)
			}
		})
	}
}

func runOf(t *testing.T, body string) string {
	t.Helper()
	j, err := worker.DecodeJob([]byte(body), testOrg)
	if err != nil {
		t.Fatal(err)
	}
	return j.RunID
}

// TestArchivedThenDeleteFails: the worker archives a run and the delete
// that follows fails. The job is retried and the run deleted, and the
// result says the worker archived it, although a later delivery did the
// delete; when the delete never succeeds, the dead letter says so too.
func TestArchivedThenDeleteFails(t *testing.T) {
	tests := []struct {
		name    string
		fails   int64
		outcome worker.Outcome
		reason  worker.Reason
	}{
		{"retried, then deleted", 1, worker.OutcomeDeleted, ""},
		{"never deleted", 100, worker.OutcomeDeadLettered, worker.ReasonRetriesExhausted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.api.AddRun(testOrg, "rlive", false)
			cfg := testConfig()
			cfg.ArchiveFirst = worker.ArchiveAlways
			cfg.BreakerFailures = 100
			api := &failAfterArchive{Client: e.client(), fails: tc.fails}
			e.startWith(cfg, api)
			seq := e.publish(job(testOrg, "rlive"))
			r := e.result(seq, 20*time.Second)
			if r.Outcome != tc.outcome || r.Reason != tc.reason || !r.Archived || r.ArchivedAt == "" {
				t.Fatalf("result %s/%s archived %v at %q, want %s/%s archived", r.Outcome, r.Reason, r.Archived, r.ArchivedAt, tc.outcome, tc.reason)
			}
			if r.Attempts < 2 {
				t.Errorf("attempts %d, want the archive's delivery counted too", r.Attempts)
			}
			if tc.outcome == worker.OutcomeDeleted {
				if !e.api.Deleted(testOrg, "rlive") {
					t.Errorf("run not deleted")
				}
				return
			}
			dl := e.deadLetter(seq)
			if dl == nil {
				t.Fatal("no dead letter")
			}
			if got := dl.Headers().Get(worker.HeaderArchivedAt); got != r.ArchivedAt {
				t.Errorf("dead letter %s = %q, want %q", worker.HeaderArchivedAt, got, r.ArchivedAt)
			}
			if !e.api.Archived(testOrg, "rlive") || e.api.Deleted(testOrg, "rlive") {
				t.Errorf("run archived %v deleted %v, want archived and not deleted", e.api.Archived(testOrg, "rlive"), e.api.Deleted(testOrg, "rlive"))
			}
		})
	}
}

// TestDryRunArchivesNothing: a dry run with archive-first on touches no
// run.
func TestDryRunArchivesNothing(t *testing.T) {
	e := newEnv(t)
	e.api.AddRun(testOrg, "rdry", false)
	cfg := testConfig()
	cfg.ArchiveFirst = worker.ArchiveAlways
	cfg.DryRun = true
	e.start(cfg)
	seq := e.publish(job(testOrg, "rdry"))
	if r := e.result(seq, 10*time.Second); r.Outcome != worker.OutcomeDryRun || r.Archived {
		t.Errorf("result %s archived %v, want dry_run, not archived", r.Outcome, r.Archived)
	}
	if e.api.Archived(testOrg, "rdry") || e.api.RequestCount() != 0 {
		t.Errorf("archived %v, %d API requests; want none", e.api.Archived(testOrg, "rdry"), e.api.RequestCount())
	}
}
