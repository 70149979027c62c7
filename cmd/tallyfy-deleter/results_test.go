package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/ops"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// storeResult stores r as the worker publishes a result event (subject,
// body, Nats-Msg-Id) and returns its sequence.
func (e *toolsEnv) storeResult(r worker.Result) uint64 {
	e.t.Helper()
	body, err := json.Marshal(r)
	if err != nil {
		e.t.Fatal(err)
	}
	m := nats.NewMsg(worker.DefaultResultsSubject + "." + string(r.Outcome))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, "result-"+strconv.FormatUint(r.JobSeq, 10))
	ack, err := e.js.PublishMsg(context.Background(), m)
	if err != nil {
		e.t.Fatalf("storing a result event: %v", err)
	}
	return ack.Sequence
}

// resultsConsumers is how many consumers the results stream has: a query
// must leave none behind.
func (e *toolsEnv) resultsConsumers() int {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), worker.DefaultResultsStream)
	if err != nil {
		e.t.Fatal(err)
	}
	return s.CachedInfo().State.Consumers
}

// summaryJSON runs results --summary --json with args and decodes its lines.
func (e *toolsEnv) summaryJSON(args ...string) []ops.RequestSummary {
	e.t.Helper()
	code, out, errOut := e.tool(append([]string{"results", "--summary", "--json"}, args...)...)
	if code != 0 {
		e.t.Fatalf("results --summary --json %v: exit %d\n%s", args, code, errOut)
	}
	var reqs []ops.RequestSummary
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var r ops.RequestSummary
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			e.t.Fatalf("summary line is not JSON: %v\n%s", err, line)
		}
		reqs = append(reqs, r)
	}
	return reqs
}

// TestResultsEndToEnd is the compliance officer's question, answered from
// what a real worker recorded: erasure request gdpr-1142 is not complete
// while one of its runs is dead-lettered not_archived, and is once that run
// is archived and its dead letter replayed (a new job that deletes it).
func TestResultsEndToEnd(t *testing.T) {
	e := newToolsEnv(t)
	api := testutil.NewFakeTallyfy(t)
	api.AddRuns("org1", []string{"r1", "r2", "r9"}, true)
	api.AddRun("org1", "r3", false)
	e.startWorker(api)

	code, _, errOut := e.tool("enqueue", "org1,r1,gdpr-1142", "org1,r2,gdpr-1142", "org1,r3,gdpr-1142", "org1,r4,gdpr-1142", "org1,r9,gdpr-7")
	if code != 0 {
		t.Fatalf("enqueue: exit %d\n%s", code, errOut)
	}
	waitFor(t, 20*time.Second, "5 result events", func() bool { return e.msgs(worker.DefaultResultsStream) == 5 })

	code, out, errOut := e.tool("results", "--summary", "--request-id", "gdpr-1142")
	if code != 0 {
		t.Fatalf("results --summary: exit %d\n%s", code, errOut)
	}
	rows := tableRows(out)
	if !strings.HasPrefix(out, "REQUEST ") || len(rows) != 1 {
		t.Fatalf("want a header and one row:\n%s", out)
	}
	// r4 does not exist: 404, not_found, gone.
	if f := strings.Fields(rows[0]); len(f) < 11 || f[0] != "gdpr-1142" || f[1] != "4" || f[2] != "2" || f[3] != "1" ||
		strings.Join(f[4:7], " ") != "1 (not_archived 1)" || f[7] != "0" || f[8] != "0" || f[9] != "no" {
		t.Errorf("summary row before the replay: %q", rows[0])
	}

	code, out, errOut = e.tool("results", "--outcome", "dead_lettered", "--json")
	if code != 0 {
		t.Fatalf("results --outcome dead_lettered --json: exit %d\n%s", code, errOut)
	}
	var dl map[string]any
	if err := json.Unmarshal([]byte(out), &dl); err != nil {
		t.Fatalf("not one JSON line: %v\n%s", err, out)
	}
	if dl["run_id"] != "r3" || dl["reason"] != "not_archived" || dl["status"] != 422.0 || dl["worker"] != "tools-test" ||
		dl["request_id"] != "gdpr-1142" || dl["stream_seq"] == nil || dl["job_seq"] == nil {
		t.Errorf("dead-lettered event: %v", dl)
	}

	api.ArchiveRun("org1", "r3")
	if code, out, errOut := e.tool("dlq", "replay", "--reason", "not_archived"); code != 0 {
		t.Fatalf("dlq replay: exit %d\n%s%s", code, out, errOut)
	}
	waitFor(t, 20*time.Second, "6 result events", func() bool { return e.msgs(worker.DefaultResultsStream) == 6 })

	reqs := e.summaryJSON("--request-id", "gdpr-1142")
	if len(reqs) != 1 {
		t.Fatalf("%d summaries, want 1: %+v", len(reqs), reqs)
	}
	r := reqs[0]
	if r.RequestID != "gdpr-1142" || r.Jobs != 5 || r.Deleted != 3 || r.NotFound != 1 || r.DeadLettered != 1 ||
		r.ByReason["not_archived"] != 1 || r.Resolved != 1 || !r.Complete || r.First.IsZero() || r.Last.Before(r.First) {
		t.Errorf("summary after the replay: %+v", r)
	}
	if all := e.summaryJSON(); len(all) != 2 || all[0].RequestID != "gdpr-1142" || all[1].RequestID != "gdpr-7" || !all[1].Complete {
		t.Errorf("every request: %+v", all)
	}

	code, out, _ = e.tool("results", "--request-id", "gdpr-1142", "--run", "r3")
	if rows := tableRows(out); code != 0 || len(rows) != 2 || !strings.Contains(rows[0], "dead_lettered") || !strings.Contains(rows[1], "deleted") {
		t.Errorf("r3's events, oldest first: exit %d\n%s", code, out)
	}
	if n := e.resultsConsumers(); n != 0 {
		t.Errorf("the queries left %d consumers on the results stream", n)
	}
}

// resultsFixture stores events of three requests, one with a duplicate
// event of one job, and returns their sequences.
func resultsFixture(e *toolsEnv) []uint64 {
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
	events := []worker.Result{
		{OrgID: "acme", RunID: "r1", RequestID: "gdpr-1142", Outcome: worker.OutcomeDeleted, Status: 204, Archived: true, ArchivedAt: "2026-11-27T01:59:00Z",
			Attempts: 1, JobSeq: 11, Worker: "w1", At: at},
		{OrgID: "acme", RunID: "r2", RequestID: "gdpr-1142", Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonForbidden, Status: 403,
			Error: "tallyfy: 403 Forbidden: \"not, an admin\"\nsecond line", TallyfyRequestID: "abc", Attempts: 1, JobSeq: 12, Worker: "w1", At: at.Add(time.Second)},
		{OrgID: "acme", RunID: "r3", RequestID: "gdpr-9", Outcome: worker.OutcomeDryRun, Attempts: 1, JobSeq: 13, Worker: "w2", At: at.Add(2 * time.Second)},
		{OrgID: "beta", RunID: "r4", Outcome: worker.OutcomeNotFound, Status: 404, Attempts: 2, JobSeq: 14, Worker: "w2", At: at.Add(3 * time.Second)},
	}
	var seqs []uint64
	for _, r := range events {
		seqs = append(seqs, e.storeResult(r))
	}
	// A second event of job 12, past the duplicate window say: the last wins.
	dup := events[1]
	dup.Outcome, dup.Reason, dup.Status, dup.Error, dup.At = worker.OutcomeNotFound, "", 404, "", at.Add(4*time.Second)
	body, _ := json.Marshal(dup)
	ack, err := e.js.Publish(context.Background(), worker.DefaultResultsSubject+".not_found", body)
	if err != nil {
		e.t.Fatal(err)
	}
	return append(seqs, ack.Sequence)
}

func TestResultsFormats(t *testing.T) {
	e := newToolsEnv(t)
	e.provision()
	seqs := resultsFixture(e)

	t.Run("table", func(t *testing.T) {
		code, out, errOut := e.tool("results")
		if code != 0 || errOut != "" {
			t.Fatalf("exit %d\n%s", code, errOut)
		}
		if h := strings.Fields(strings.SplitN(out, "\n", 2)[0]); !slices.Equal(h, []string{"SEQ", "AT", "OUTCOME", "REASON", "STATUS", "ARCHIVED", "ORG", "RUN", "REQUEST", "JOB", "ATTEMPTS", "ERROR"}) {
			t.Errorf("header %v", h)
		}
		rows := tableRows(out)
		if len(rows) != 5 {
			t.Fatalf("%d rows, want 5:\n%s", len(rows), out)
		}
		f := strings.Fields(rows[1])
		if f[0] != strconv.FormatUint(seqs[1], 10) || f[2] != "dead_lettered" || f[3] != "forbidden" || f[4] != "403" || f[5] != "-" ||
			f[6] != "acme" || f[7] != "r2" || f[8] != "gdpr-1142" || f[9] != "12" || f[10] != "1" || !strings.HasPrefix(rows[1][strings.Index(rows[1], "tallyfy:"):], `tallyfy: 403 Forbidden: "not, an admin" second line`) {
			t.Errorf("row %q", rows[1])
		}
		if f := strings.Fields(rows[2]); f[3] != "-" || f[4] != "-" || f[len(f)-1] != "-" {
			t.Errorf("a dry run shows no reason, status or error as -: %q", rows[2])
		}
		if f := strings.Fields(rows[0]); f[5] != "yes" {
			t.Errorf("an archived run does not show ARCHIVED yes: %q", rows[0])
		}
	})

	t.Run("json", func(t *testing.T) {
		code, out, _ := e.tool("results", "--json")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if code != 0 || len(lines) != 5 {
			t.Fatalf("exit %d, %d lines\n%s", code, len(lines), out)
		}
		for i, line := range lines {
			want := `{"stream_seq":` + strconv.FormatUint(seqs[i], 10) + `,"org_id":`
			if !strings.HasPrefix(line, want) {
				t.Errorf("line %d does not start %s: %s", i, want, line)
			}
			var r worker.Result
			if err := json.Unmarshal([]byte(line), &r); err != nil || r.JobSeq == 0 || r.At.IsZero() {
				t.Errorf("line %d is not the event: %v %s", i, err, line)
			}
		}
		if !strings.Contains(lines[1], `"error":"tallyfy: 403 Forbidden: \"not, an admin\"\nsecond line"`) {
			t.Errorf("the event is not as stored: %s", lines[1])
		}
	})

	t.Run("csv", func(t *testing.T) {
		code, out, _ := e.tool("results", "--csv", "--org", "acme")
		recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
		if code != 0 || err != nil || len(recs) != 5 { // the header, 3 jobs of acme, job 12 twice
			t.Fatalf("exit %d, %v, %d records\n%s", code, err, len(recs), out)
		}
		if want := "stream_seq,stored,at,outcome,reason,status,org_id,run_id,request_id,job_seq,attempts,worker,tallyfy_request_id,archived,archived_at,error"; strings.Join(recs[0], ",") != want {
			t.Errorf("header %v, want %s", recs[0], want)
		}
		r := recs[2]
		if r[0] != strconv.FormatUint(seqs[1], 10) || r[3] != "dead_lettered" || r[4] != "forbidden" || r[5] != "403" || r[7] != "r2" ||
			r[9] != "12" || r[11] != "w1" || r[12] != "abc" || r[13] != "false" || r[14] != "" || r[15] != "tallyfy: 403 Forbidden: \"not, an admin\"\nsecond line" {
			t.Errorf("row %q", r)
		}
		if _, err := time.Parse(time.RFC3339Nano, r[1]); err != nil {
			t.Errorf("stored %q: %v", r[1], err)
		}
		if recs[3][3] != "dry_run" || recs[3][5] != "" {
			t.Errorf("dry run row %q", recs[3])
		}
		if recs[1][13] != "true" || recs[1][14] != "2026-11-27T01:59:00Z" {
			t.Errorf("archived run row %q", recs[1])
		}
	})

	t.Run("summary table", func(t *testing.T) {
		code, out, _ := e.tool("results", "--summary")
		rows := tableRows(out)
		if code != 0 || len(rows) != 3 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		// Job 12's last event is not_found: gdpr-1142 is complete.
		want := [][]string{
			{"gdpr-1142", "2", "1", "1", "0", "0", "0", "yes"},
			{"gdpr-9", "1", "0", "0", "0", "1", "0", "no"},
			{"-", "1", "0", "1", "0", "0", "0", "yes"},
		}
		for i, w := range want {
			if f := strings.Fields(rows[i]); len(f) != 10 || !slices.Equal(f[:8], w) {
				t.Errorf("row %d %q, want %v", i, rows[i], w)
			}
		}
	})

	t.Run("summary csv", func(t *testing.T) {
		code, out, _ := e.tool("results", "--summary", "--csv", "--request-id", "gdpr-9")
		recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
		if code != 0 || err != nil || len(recs) != 2 {
			t.Fatalf("exit %d, %v\n%s", code, err, out)
		}
		want := "request_id,jobs,deleted,not_found,dead_lettered,dead_lettered_not_archived,dead_lettered_forbidden,dead_lettered_rejected," +
			"dead_lettered_retries_exhausted,dead_lettered_invalid_job,dead_lettered_org_not_allowed,dead_lettered_max_deliveries," +
			"dead_lettered_other,dry_run,other,resolved,complete,first_at,last_at"
		if strings.Join(recs[0], ",") != want {
			t.Errorf("header\n%s\nwant\n%s", strings.Join(recs[0], ","), want)
		}
		if r := recs[1]; r[0] != "gdpr-9" || r[1] != "1" || r[13] != "1" || r[16] != "false" {
			t.Errorf("row %q", r)
		}
	})

	t.Run("summary with --outcome says what it left out", func(t *testing.T) {
		reqs := e.summaryJSON("--outcome", "deleted")
		if len(reqs) != 1 || reqs[0].Jobs != 1 {
			t.Errorf("%+v", reqs)
		}
		_, _, errOut := e.tool("results", "--summary", "--outcome", "deleted")
		if !strings.Contains(errOut, "leave it out to know whether a request is complete") {
			t.Errorf("no note:\n%s", errOut)
		}
	})
	if n := e.resultsConsumers(); n != 0 {
		t.Errorf("the queries left %d consumers", n)
	}
}

func TestResultsNothingMatches(t *testing.T) {
	e := newToolsEnv(t)
	e.provision()
	resultsFixture(e)
	tests := []struct {
		name    string
		args    []string
		stdout  string
		message string
	}{
		{"table", []string{"--request-id", "gdpr-0"}, "", "no result events match (the results stream keeps events for 336h0m0s; the oldest it holds is from "},
		{"json", []string{"--json", "--run", "r9"}, "", "no result events match"},
		{"csv keeps its header", []string{"--csv", "--since", "2099-01-01"}, "stream_seq,stored,at,outcome,reason,status,org_id,run_id,request_id,job_seq,attempts,worker,tallyfy_request_id,archived,archived_at,error\n", "no result events match"},
		{"summary", []string{"--summary", "--request-id", "gdpr-0"}, "", "no result events match"},
		{"a window in the past", []string{"--until", "1h"}, "", "no result events match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := e.tool(append([]string{"results"}, tt.args...)...)
			if code != 0 || out != tt.stdout || !strings.HasPrefix(errOut, tt.message) {
				t.Errorf("exit %d\nstdout %q\nstderr %q", code, out, errOut)
			}
		})
	}

	empty := newToolsEnv(t)
	empty.provision()
	code, out, errOut := empty.tool("results", "--summary")
	if code != 0 || out != "" || !strings.Contains(errOut, "holds no events") {
		t.Errorf("empty stream: exit %d\n%s%s", code, out, errOut)
	}
}

func TestResultsInvalidEventsCounted(t *testing.T) {
	e := newToolsEnv(t)
	e.provision()
	good := e.storeResult(worker.Result{RunID: "r1", Outcome: worker.OutcomeDeleted, JobSeq: 1, At: time.Now()})
	var bad []string
	for _, body := range []string{"not json", `{"job_seq":"seven"}`} {
		ack, err := e.js.Publish(context.Background(), worker.DefaultResultsSubject+".deleted", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		bad = append(bad, strconv.FormatUint(ack.Sequence, 10))
	}
	code, out, errOut := e.tool("results", "--json")
	if code != 0 || !strings.HasPrefix(out, `{"stream_seq":`+strconv.FormatUint(good, 10)+",") || strings.Count(out, "\n") != 1 {
		t.Errorf("exit %d\n%s", code, out)
	}
	want := fmt.Sprintf("2 events are not valid result events and were left out (stream sequences %s;", strings.Join(bad, ", "))
	if !strings.Contains(errOut, want) {
		t.Errorf("stderr %q lacks %q", errOut, want)
	}
}

func TestResultsWithoutStream(t *testing.T) {
	e := newToolsEnv(t)
	code, out, errOut := e.tool("results", "--summary", "--request-id", "gdpr-1142")
	if code != 1 || out != "" {
		t.Errorf("exit %d, stdout %q; want 1 and nothing", code, out)
	}
	for _, want := range []string{worker.DefaultResultsStream, "does not exist", "start a worker", "DELETER_RESULTS_STREAM"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	// The stream named by the setting is the one looked for.
	e.getenv = env("NATS_URL", e.nats.URL(), "DELETER_RESULTS_STREAM", "AUDIT")
	if _, _, errOut := e.tool("results"); !strings.Contains(errOut, "the results stream AUDIT does not exist") {
		t.Errorf("DELETER_RESULTS_STREAM not used:\n%s", errOut)
	}
}

func TestResultsBadFlags(t *testing.T) {
	// No server: a bad command line is refused before connecting.
	getenv := env("NATS_URL", "nats://127.0.0.1:1")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--request", "x"}, "flag provided but not defined"},
		{"outcome", []string{"--outcome", "gone"}, `--outcome "gone" is not deleted, not_found, dead_lettered or dry_run`},
		{"org", []string{"--org", "a/b"}, `--org "a/b" is not`},
		{"run", []string{"--run", ""}, ""},
		{"since", []string{"--since", "yesterday"}, `--since: "yesterday" is not an RFC 3339 time`},
		{"negative duration", []string{"--until", "-1h"}, `--until: "-1h" is not`},
		{"since after until", []string{"--since", "2026-02-01", "--until", "2026-01-01"}, "is not before --until"},
		{"two formats", []string{"--json", "--csv"}, "--json and --csv: choose one"},
		{"arguments", []string{"gdpr-1142"}, "takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut strings.Builder
			code := cmdResults(tt.args, getenv, &out, &errOut)
			if tt.want == "" {
				// An empty --run is no filter; it then fails to connect.
				if code != 1 {
					t.Errorf("exit %d, want 1 (no server)", code)
				}
				return
			}
			lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")
			if code != 2 || len(lines) != 2 || !strings.Contains(lines[0], tt.want) || lines[1] != "see 'tallyfy-deleter results --help'" {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 2, one line with %q and the hint", code, errOut.String(), tt.want)
			}
		})
	}
}

func TestResultsHelp(t *testing.T) {
	var out, errOut strings.Builder
	if code := cmdResults([]string{"--help"}, env(), &out, &errOut); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--request-id", "--org", "--run", "--outcome", "--since", "--until", "--summary", "--json", "--csv",
		"NATS_URL", "DELETER_RESULTS_STREAM", "24h", "stream_seq", "--summary --request-id gdpr-1142", "Exit status"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestResultsParseWhen(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"", time.Time{}, false},
		{"2026-11-27T02:00:00Z", time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC), false},
		{"2026-11-27T02:00:00.5+01:00", time.Date(2026, 11, 27, 1, 0, 0, 5e8, time.UTC), false},
		{"2026-11-01", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), false},
		{"24h", now.Add(-24 * time.Hour), false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"7d", now.Add(-7 * 24 * time.Hour), false},
		{"0s", now, false},
		{"-1h", time.Time{}, true},
		{"1.5d", time.Time{}, true},
		{"99999999d", time.Time{}, true},
		{"d", time.Time{}, true},
		{"27/11/2026", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseWhen(tt.in, now)
		if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
			t.Errorf("parseWhen(%q) = %s, %v; want %s, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// archiveConfig is the stream configuration README.md gives for keeping a
// longer copy of the result events ("Keeping results for an audit"):
// keep the two the same.
const archiveConfig = `{
  "name": "TALLYFY_RUN_RESULTS_ARCHIVE",
  "description": "Tallyfy run deletion results, a copy kept for audits",
  "sources": [{"name": "TALLYFY_RUN_RESULTS"}],
  "retention": "limits",
  "storage": "file",
  "num_replicas": 1,
  "max_age": 220752000000000000,
  "max_msgs": -1,
  "max_bytes": -1,
  "max_msg_size": -1,
  "max_msgs_per_subject": -1,
  "max_consumers": -1,
  "discard": "old",
  "duplicate_window": 600000000000,
  "deny_delete": true,
  "deny_purge": true
}`

// TestResultsFromSourcedArchive: a stream that sources the results stream,
// configured as README.md says, keeps the events after the results stream
// has lost them, and results reads it with --results-stream as it reads
// the original.
func TestResultsFromSourcedArchive(t *testing.T) {
	e := newToolsEnv(t)
	e.provision()
	resultsFixture(e)
	var cfg jetstream.StreamConfig
	if err := json.Unmarshal([]byte(archiveConfig), &cfg); err != nil {
		t.Fatalf("the README's archive configuration: %v", err)
	}
	if cfg.MaxAge != 61320*time.Hour || len(cfg.Sources) != 1 || !cfg.DenyDelete || !cfg.DenyPurge {
		t.Fatalf("the archive configuration reads as %+v", cfg)
	}
	ctx := context.Background()
	archive, err := e.js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatalf("creating the archive: %v", err)
	}
	waitFor(t, 10*time.Second, "the archive to copy the 5 events", func() bool { return e.msgs(cfg.Name) == 5 })

	before := e.summaryJSON()
	results, err := e.js.Stream(ctx, worker.DefaultResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	// The results stream loses its events (their max age passed, say).
	if err := results.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, errOut := e.tool("results"); !strings.Contains(errOut, "holds no events") {
		t.Fatalf("the results stream still has events:\n%s", errOut)
	}
	after := e.summaryJSON("--results-stream", cfg.Name)
	if len(before) != 3 || !slices.EqualFunc(before, after, func(a, b ops.RequestSummary) bool {
		return a.RequestID == b.RequestID && a.Jobs == b.Jobs && a.Complete == b.Complete && a.First.Equal(b.First)
	}) {
		t.Errorf("from the archive:\n%+v\nfrom the results stream before:\n%+v", after, before)
	}
	if err := archive.Purge(ctx); err == nil {
		t.Errorf("the archive could be purged")
	}
}
