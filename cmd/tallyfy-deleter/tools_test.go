package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/ops"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// toolsEnv is one embedded JetStream server and the environment the tools
// see: NATS_URL pointing at it, TALLYFY_ORG_ID=org1.
type toolsEnv struct {
	t      *testing.T
	nats   *testutil.NATS
	js     jetstream.JetStream
	getenv func(string) string
}

func newToolsEnv(t *testing.T) *toolsEnv {
	t.Helper()
	srv := testutil.JetStream(t)
	_, js := testutil.Connect(t, srv.URL())
	return &toolsEnv{t: t, nats: srv, js: js, getenv: env("NATS_URL", srv.URL(), "TALLYFY_ORG_ID", "org1")}
}

// provision creates the streams and the consumer as a worker would, with
// no worker to take the jobs.
func (e *toolsEnv) provision() {
	e.t.Helper()
	ctx := context.Background()
	var cfg worker.Config
	jobs, results, dlq := cfg.StreamConfigs()
	for _, sc := range []jetstream.StreamConfig{jobs, results, dlq} {
		if _, err := e.js.CreateStream(ctx, sc); err != nil {
			e.t.Fatalf("creating stream %s: %v", sc.Name, err)
		}
	}
	if _, err := e.js.CreateOrUpdateConsumer(ctx, jobs.Name, cfg.ConsumerConfig()); err != nil {
		e.t.Fatalf("creating consumer: %v", err)
	}
}

// startWorker runs a worker against api until the test ends.
func (e *toolsEnv) startWorker(api *testutil.FakeTallyfy) {
	t := e.t
	t.Helper()
	client, err := tallyfy.New(api.URL(), tallyfy.WithToken(api.Token()), tallyfy.WithTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	_, js := testutil.Connect(t, e.nats.URL())
	logs := &lockedBuffer{}
	log := zerolog.New(logs)
	w, err := worker.New(js, client, worker.Config{
		DefaultOrg: "org1", Concurrency: 4, MaxDeliver: 3, Backoff: []time.Duration{50 * time.Millisecond},
		AckWait: 2 * time.Second, APITimeout: time.Second, BreakerFailures: 3, BreakerTimeout: 300 * time.Millisecond,
		ShutdownTimeout: 2 * time.Second, PullWait: 200 * time.Millisecond, WorkerID: "tools-test", Logger: &log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("worker did not stop")
		}
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	})
	waitFor(t, 5*time.Second, "the worker to bind its consumer", func() bool { return w.Health().ConsumerBound })
}

// tool runs the command in-process as its users would, stdin aside.
func (e *toolsEnv) tool(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, e.getenv, &out, &errOut)
	return code, out.String(), errOut.String()
}

func (e *toolsEnv) enqueueStdin(stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = cmdEnqueue(args, e.getenv, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func (e *toolsEnv) msgs(stream string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), stream)
	if err != nil {
		e.t.Fatalf("stream %s: %v", stream, err)
	}
	return s.CachedInfo().State.Msgs
}

func (e *toolsEnv) status() ops.StatusReport {
	e.t.Helper()
	code, out, errOut := e.tool("status", "--json")
	if code != 0 {
		e.t.Fatalf("status --json: exit %d\n%s", code, errOut)
	}
	var r ops.StatusReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		e.t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	return r
}

// deadLetter stores a dead letter as the worker writes one and returns its
// sequence.
func (e *toolsEnv) deadLetter(reason worker.Reason, org, run, body string) uint64 {
	e.t.Helper()
	m := nats.NewMsg(worker.DefaultDLQSubject + "." + string(reason))
	m.Data = []byte(body)
	m.Header.Set(worker.HeaderReason, string(reason))
	m.Header.Set(worker.HeaderStatus, "422")
	m.Header.Set(worker.HeaderError, "tallyfy: 422 Unprocessable Entity: Process isn't archived yet, so it cannot be deleted permanently")
	m.Header.Set(worker.HeaderAttempts, "1")
	if org != "" {
		m.Header.Set(worker.HeaderOrgID, org)
	}
	if run != "" {
		m.Header.Set(worker.HeaderRunID, run)
	}
	ack, err := e.js.PublishMsg(context.Background(), m)
	if err != nil {
		e.t.Fatalf("storing a dead letter: %v", err)
	}
	return ack.Sequence
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "jobs.txt")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tableRows returns the data rows of a table, header left out.
func tableRows(out string) []string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) <= 1 {
		return nil
	}
	return lines[1:]
}

// TestToolsEndToEnd is the operator's day: enqueue a file with a bad line,
// the worker runs, two runs dead-letter not_archived, someone archives
// them, dlq replay sends them again, and they end deleted.
func TestToolsEndToEnd(t *testing.T) {
	e := newToolsEnv(t)
	api := testutil.NewFakeTallyfy(t)
	api.AddRuns("org1", []string{"r1", "r2", "r3"}, true)
	api.AddRuns("org1", []string{"r4", "r5"}, false)
	e.startWorker(api)

	file := writeFile(t, `org_id,run_id,request_id
# erasure requests of the week
org1,r1,gdpr-1
{"org_id":"org1","run_id":"r2","request_id":"gdpr-2"}
,r3
org1,a/b
org1,r4,gdpr-4
{"run_id":"r5"}
`)
	code, out, errOut := e.tool("enqueue", "--file", file)
	if code != 1 {
		t.Errorf("enqueue with a bad line: exit %d, want 1\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "line 6: invalid job: run_id is not") {
		t.Errorf("the bad line is not reported with its number:\n%s", errOut)
	}
	if want := "enqueue: 5 published, 0 duplicates, 1 rejected\n"; out != want {
		t.Errorf("summary %q, want %q", out, want)
	}

	waitFor(t, 20*time.Second, "5 result events", func() bool { return e.msgs(worker.DefaultResultsStream) == 5 })
	st := e.status()
	if got := st.Results.ByOutcome; got["deleted"] != 3 || got["dead_lettered"] != 2 {
		t.Errorf("results by outcome %v, want 3 deleted, 2 dead_lettered", got)
	}
	if st.DeadLetters.ByReason["not_archived"] != 2 || st.DeadLetters.Total != 2 {
		t.Errorf("dead letters %+v, want 2 not_archived", st.DeadLetters)
	}

	checkListed(t, e)

	api.ArchiveRun("org1", "r4")
	api.ArchiveRun("org1", "r5")
	code, out, errOut = e.tool("dlq", "replay", "--reason", "not_archived")
	if code != 0 {
		t.Fatalf("dlq replay: exit %d\n%s%s", code, out, errOut)
	}
	if want := "replay: 2 replayed, 0 duplicates, 0 failed\n"; out != want {
		t.Errorf("replay summary %q, want %q", out, want)
	}
	waitFor(t, 20*time.Second, "the replayed runs deleted", func() bool { return api.Deleted("org1", "r4") && api.Deleted("org1", "r5") })
	waitFor(t, 10*time.Second, "7 result events", func() bool { return e.msgs(worker.DefaultResultsStream) == 7 })

	code, out, errOut = e.tool("dlq", "ls")
	if code != 0 || out != "" || !strings.Contains(errOut, "no dead letters match") {
		t.Errorf("dlq ls after the replay: exit %d\n%s%s", code, out, errOut)
	}
	// The worker acks a job after publishing its result: wait for the acks.
	waitFor(t, 10*time.Second, "the jobs acked", func() bool { return e.msgs(worker.DefaultJobsStream) == 0 })
	st = e.status()
	if got := st.Results.ByOutcome; got["deleted"] != 5 || got["dead_lettered"] != 2 || st.DeadLetters.Total != 0 {
		t.Errorf("after the replay: results %v, dead letters %+v", got, st.DeadLetters)
	}
	if st.Jobs.Messages != 0 || st.Jobs.Consumer.Backlog != 0 || st.Jobs.Consumer.AckPending != 0 {
		t.Errorf("after the replay: jobs %+v", st.Jobs)
	}
	for _, run := range []string{"r1", "r2", "r3", "r4", "r5"} {
		if !api.Deleted("org1", run) {
			t.Errorf("%s not deleted", run)
		}
	}
	if n := api.DeleteCount("org1", "r4"); n != 2 {
		t.Errorf("r4 was asked to be deleted %d times, want 2 (the 422, then the replay)", n)
	}
}

// checkListed: dlq ls, as a table and as JSON, shows TestToolsEndToEnd's
// two not_archived dead letters, r4 and r5.
func checkListed(t *testing.T, e *toolsEnv) {
	t.Helper()
	code, out, errOut := e.tool("dlq", "ls", "--reason", "not_archived")
	if code != 0 {
		t.Fatalf("dlq ls: exit %d\n%s", code, errOut)
	}
	rows := tableRows(out)
	if len(rows) != 2 || !strings.HasPrefix(out, "SEQ") {
		t.Fatalf("dlq ls: want a header and 2 rows:\n%s", out)
	}
	for _, row := range rows {
		for _, want := range []string{"not_archived", "422", "org1", "isn't archived"} {
			if !strings.Contains(row, want) {
				t.Errorf("dlq ls row lacks %q: %s", want, row)
			}
		}
	}
	// The worker runs jobs concurrently: either order.
	if runs := regexp.MustCompile(`\sr[45]\s`).FindAllString(out, -1); len(runs) != 2 || runs[0] == runs[1] {
		t.Errorf("dlq ls does not show r4 and r5:\n%s", out)
	}

	code, out, _ = e.tool("dlq", "ls", "--json")
	if code != 0 {
		t.Fatalf("dlq ls --json: exit %d", code)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var d ops.DeadLetter
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("dlq ls --json line is not JSON: %v\n%s", err, line)
		}
		if d.Reason != "not_archived" || d.Status != 422 || d.OrgID != "org1" || d.Attempts != 1 || d.JobSeq == 0 ||
			d.Headers[worker.HeaderWorker][0] != "tools-test" || !strings.Contains(d.Body, d.RunID) {
			t.Errorf("dlq ls --json: %+v", d)
		}
	}
}

func TestEnqueueRerunPublishesNothingTwice(t *testing.T) {
	e := newToolsEnv(t)
	e.provision()
	file := writeFile(t, "org_id,run_id,request_id\norg1,r1,q1\norg1,r2\n\norg2,r3,q3\n")
	code, out, errOut := e.tool("enqueue", "--file", file)
	if code != 0 || out != "enqueue: 3 published, 0 duplicates, 0 rejected\n" {
		t.Fatalf("first enqueue: exit %d, %q\n%s", code, out, errOut)
	}
	code, out, errOut = e.tool("enqueue", "--file", file)
	if code != 0 || out != "enqueue: 0 published, 3 duplicates, 0 rejected\n" {
		t.Errorf("second enqueue: exit %d, %q\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "duplicate window") {
		t.Errorf("no word on what duplicates are:\n%s", errOut)
	}
	// The same jobs written as JSON are the same jobs.
	code, out, _ = e.tool("enqueue", `{"org_id":"org1","run_id":"r1","request_id":"q1"}`, `{"run_id":"r2"}`, "org1,r4")
	if code != 0 || out != "enqueue: 1 published, 2 duplicates, 0 rejected\n" {
		t.Errorf("enqueue as JSON arguments: exit %d, %q", code, out)
	}
	if n := e.msgs(worker.DefaultJobsStream); n != 4 {
		t.Errorf("jobs stream holds %d jobs, want 4", n)
	}

	s, err := e.js.Stream(context.Background(), worker.DefaultJobsStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != `{"org_id":"org1","run_id":"r2"}` {
		t.Errorf("job body %s, want the canonical JSON", m.Data)
	}
	if id := m.Header.Get(jetstream.MsgIDHeader); !regexp.MustCompile(`^enqueue-[0-9a-f]{32}$`).MatchString(id) {
		t.Errorf("Nats-Msg-Id %q", id)
	}
}

func TestEnqueueRejectsBadLines(t *testing.T) {
	e := newToolsEnv(t)
	e.provision()
	tests := []struct {
		name, line, want string
	}{
		{"truncated JSON", `{"org_id":"org1","run_id":`, "not valid JSON"},
		{"bad run in JSON", `{"org_id":"org1","run_id":"a/b"}`, "run_id is not 1 to 64"},
		{"bad run in CSV", `org1,a/b`, "run_id is not 1 to 64"},
		{"bad org in CSV", `b@d,r9`, "org_id is not 1 to 64"},
		{"missing run in CSV", `org1,`, "run_id is missing"},
		{"missing run in JSON", `{"org_id":"org1"}`, "run_id is missing"},
		{"one column", `org1`, "1 CSV fields"},
		{"four columns", `org1,r9,q9,extra`, "4 CSV fields"},
		{"near-miss field name", `{"Run_ID":"r9"}`, "case-sensitive"},
		{"empty org", `{"org_id":"","run_id":"r9"}`, "org_id is empty"},
		{"data after the object", `{"run_id":"r9"} {}`, "data after the JSON object"},
		{"broken CSV quoting", `org1,"r9`, "neither a JSON object nor a CSV line"},
		{"too long", `{"run_id":"r9","pad":"` + strings.Repeat("x", worker.MaxJobSize) + `"}`, "longer than 65536 bytes"},
	}
	lines := []string{"org1,good1"}
	for _, tc := range tests {
		lines = append(lines, tc.line)
	}
	lines = append(lines, `{"run_id":"good2"}`)
	file := writeFile(t, strings.Join(lines, "\n"))

	// --check reports the same and publishes nothing.
	code, out, errOut := e.tool("enqueue", "--check", "--file", file)
	if code != 1 || out != fmt.Sprintf("enqueue --check: 2 valid, %d rejected; nothing published\n", len(tests)) {
		t.Errorf("enqueue --check: exit %d, %q", code, out)
	}
	if n := e.msgs(worker.DefaultJobsStream); n != 0 {
		t.Fatalf("--check published %d jobs", n)
	}

	code, out, errOut = e.tool("enqueue", "--file", file)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if want := fmt.Sprintf("enqueue: 2 published, 0 duplicates, %d rejected\n", len(tests)); out != want {
		t.Errorf("summary %q, want %q", out, want)
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prefix := fmt.Sprintf("line %d: ", i+2)
			var found string
			for _, l := range strings.Split(errOut, "\n") {
				if strings.HasPrefix(l, prefix) {
					found = l
				}
			}
			if !strings.Contains(found, tc.want) {
				t.Errorf("want %q%s..., got %q", prefix, tc.want, found)
			}
		})
	}
	if n := e.msgs(worker.DefaultJobsStream); n != 2 {
		t.Errorf("jobs stream holds %d jobs, want only the 2 good ones", n)
	}

	t.Run("no default organization", func(t *testing.T) {
		var out, errOut bytes.Buffer
		code := run([]string{"enqueue", ",r1"}, env("NATS_URL", e.nats.URL()), &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), "argument 1: invalid job: org_id is missing") {
			t.Errorf("exit %d\n%s", code, errOut.String())
		}
	})
}

func TestEnqueueFromStdin(t *testing.T) {
	e := newToolsEnv(t)
	e.provision()
	code, out, errOut := e.enqueueStdin("org1,r1\r\n{\"run_id\":\"r2\"}\r\n# done\r\n")
	if code != 0 || out != "enqueue: 2 published, 0 duplicates, 0 rejected\n" {
		t.Errorf("stdin: exit %d, %q\n%s", code, out, errOut)
	}
	code, out, _ = e.enqueueStdin("org1,r3\n", "--file", "-")
	if code != 0 || out != "enqueue: 1 published, 0 duplicates, 0 rejected\n" {
		t.Errorf("--file -: exit %d, %q", code, out)
	}
	code, _, errOut = e.enqueueStdin("", "--file", "x", "org1,r1")
	if code != 2 || !strings.Contains(errOut, "not both") {
		t.Errorf("arguments and --file: exit %d\n%s", code, errOut)
	}
}

// An interrupt while enqueue waits for more input ends it with what it
// has published, and its summary.
func TestEnqueueInterrupted(t *testing.T) {
	e := newToolsEnv(t)
	e.provision()
	cmd := exec.Command(binary, "enqueue")
	cmd.Env = append(os.Environ(), "NATS_URL="+e.nats.URL(), "TALLYFY_ORG_ID=org1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var out, errOut lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	if _, err := io.WriteString(stdin, "org1,r1\norg1,r2\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "2 jobs published", func() bool { return e.msgs(worker.DefaultJobsStream) == 2 })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("enqueue did not end after SIGINT\n%s", errOut.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit %d (%v), want 1", code, err)
	}
	if out.String() != "enqueue: 2 published, 0 duplicates, 0 rejected\n" || !strings.Contains(errOut.String(), "interrupted") {
		t.Errorf("stdout %q\nstderr:\n%s", out.String(), errOut.String())
	}
}

func TestEnqueueManyLines(t *testing.T) {
	e := newToolsEnv(t)
	e.provision()
	const n = 5000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "org1,run-%d,bulk\n", i)
	}
	file := writeFile(t, b.String())
	began := time.Now()
	code, out, errOut := e.tool("enqueue", "--file", file)
	if code != 0 || out != fmt.Sprintf("enqueue: %d published, 0 duplicates, 0 rejected\n", n) {
		t.Fatalf("exit %d, %q\n%s", code, out, errOut)
	}
	t.Logf("%d jobs in %s", n, time.Since(began))
	if got := e.msgs(worker.DefaultJobsStream); got != n {
		t.Errorf("jobs stream holds %d, want %d", got, n)
	}
	if !strings.Contains(errOut, fmt.Sprintf("enqueue: %d/%d (100%%)", n, n)) {
		t.Errorf("no final progress line:\n%s", errOut)
	}
}

func TestEnqueueWithoutJobsStream(t *testing.T) {
	e := newToolsEnv(t)
	code, _, errOut := e.tool("enqueue", "org1,r1")
	if code != 1 || !strings.Contains(errOut, "does not exist: start a worker") {
		t.Errorf("exit %d\n%s", code, errOut)
	}
	// --check needs no NATS at all.
	var out, errBuf bytes.Buffer
	code = run([]string{"enqueue", "--check", "org1,r1"}, env("NATS_URL", "nats://127.0.0.1:1"), &out, &errBuf)
	if code != 0 || out.String() != "enqueue --check: 1 valid, 0 rejected; nothing published\n" {
		t.Errorf("--check offline: exit %d, %q\n%s", code, out.String(), errBuf.String())
	}
}

func TestDLQReplaySelection(t *testing.T) {
	e := newToolsEnv(t)
	e.provision()
	body := func(org, run string) string { return fmt.Sprintf(`{"org_id":%q,"run_id":%q}`, org, run) }
	s1 := e.deadLetter(worker.ReasonNotArchived, "org1", "r1", body("org1", "r1"))
	s2 := e.deadLetter(worker.ReasonNotArchived, "org2", "r2", body("org2", "r2"))
	s3 := e.deadLetter(worker.ReasonForbidden, "org1", "r3", body("org1", "r3"))
	s4 := e.deadLetter(worker.ReasonInvalidJob, "", "", "not json")
	jobs := func() uint64 { return e.msgs(worker.DefaultJobsStream) }
	dlq := func() uint64 { return e.msgs(worker.DefaultDLQStream) }

	t.Run("nothing selected is refused", func(t *testing.T) {
		code, _, errOut := e.tool("dlq", "replay")
		if code != 2 || !strings.Contains(errOut, "--all") {
			t.Errorf("exit %d\n%s", code, errOut)
		}
		if jobs() != 0 || dlq() != 4 {
			t.Errorf("something changed: %d jobs, %d dead letters", jobs(), dlq())
		}
	})

	t.Run("dry run changes nothing", func(t *testing.T) {
		code, out, errOut := e.tool("dlq", "replay", "--reason", "not_archived", "--dry-run")
		if code != 0 || len(tableRows(out)) != 2 || !strings.Contains(errOut, "2 dead letters would be replayed") {
			t.Errorf("exit %d\n%s%s", code, out, errOut)
		}
		code, out, _ = e.tool("dlq", "replay", "--all", "--dry-run")
		if code != 0 || len(tableRows(out)) != 4 {
			t.Errorf("--all --dry-run: exit %d\n%s", code, out)
		}
		if jobs() != 0 || dlq() != 4 {
			t.Errorf("something changed: %d jobs, %d dead letters", jobs(), dlq())
		}
	})

	t.Run("ls filters", func(t *testing.T) { testDLQLsFilters(t, e, s1, s2, s3, s4) })

	t.Run("ls --json of an invalid job", func(t *testing.T) {
		code, out, _ := e.tool("dlq", "ls", "--reason", "invalid_job", "--json")
		var d ops.DeadLetter
		if err := json.Unmarshal([]byte(out), &d); code != 0 || err != nil {
			t.Fatalf("exit %d, %v\n%s", code, err, out)
		}
		if d.Seq != s4 || d.Body != "not json" || d.OrgID != "" || d.Headers[worker.HeaderReason][0] != "invalid_job" {
			t.Errorf("%+v", d)
		}
	})

	t.Run("replay one by seq", func(t *testing.T) { testReplayOneBySeq(t, e, s2, body) })

	t.Run("replay by reason and org, rate-limited", func(t *testing.T) {
		code, out, errOut := e.tool("dlq", "replay", "--reason", "not_archived", "--org", "org1", "--rate", "50")
		if code != 0 || out != "replay: 1 replayed, 0 duplicates, 0 failed\n" {
			t.Fatalf("exit %d, %q\n%s", code, out, errOut)
		}
		if jobs() != 2 || dlq() != 2 {
			t.Errorf("%d jobs, %d dead letters; want 2 and 2", jobs(), dlq())
		}
	})

	t.Run("a dead letter replayed before is removed, not published twice", func(t *testing.T) { testReplayedBefore(t, e, s3, body) })

	t.Run("bad flags", func(t *testing.T) {
		for _, args := range [][]string{
			{"dlq", "replay", "--reason", "not.archived"},
			{"dlq", "replay", "--all", "--rate", "fast"},
			{"dlq", "ls", "--limit", "-1"},
			{"dlq", "ls", "--seq", "x"},
			{"dlq", "rm"},
			{"dlq"},
		} {
			if code, _, _ := e.tool(args...); code != 2 {
				t.Errorf("%q: exit %d, want 2", args, code)
			}
		}
	})
}

// testDLQLsFilters: dlq ls shows what the selection flags pick, s1 to s4
// being TestDLQReplaySelection's dead letters.
func testDLQLsFilters(t *testing.T, e *toolsEnv, s1, s2, s3, s4 uint64) {
	tests := []struct {
		args     []string
		wantSeqs []uint64
		wantNote string
	}{
		{nil, []uint64{s1, s2, s3, s4}, ""},
		{[]string{"--org", "org1"}, []uint64{s1, s3}, ""},
		{[]string{"--reason", "not_archived", "--org", "org2"}, []uint64{s2}, ""},
		{[]string{"--limit", "2"}, []uint64{s1, s2}, "2 of 4 dead letters shown"},
		{[]string{"--org", "org1", "--limit", "1"}, []uint64{s1}, "more match"},
		{[]string{"--seq", fmt.Sprintf("%d,%d,99", s4, s2)}, []uint64{s4, s2}, "no dead letter 99"},
		{[]string{"--reason", "rejected"}, nil, "no dead letters match"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := e.tool(append([]string{"dlq", "ls"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, errOut)
			}
			var got []uint64
			for _, r := range tableRows(out) {
				var seq uint64
				fmt.Sscan(r, &seq)
				got = append(got, seq)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantSeqs) {
				t.Errorf("seqs %v, want %v\n%s", got, tc.wantSeqs, out)
			}
			if !strings.Contains(errOut, tc.wantNote) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantNote, errOut)
			}
		})
	}
}

// testReplayOneBySeq: dlq replay --seq replays that dead letter alone, and
// finds nothing to do the second time.
func testReplayOneBySeq(t *testing.T, e *toolsEnv, s2 uint64, body func(org, run string) string) {
	jobs := func() uint64 { return e.msgs(worker.DefaultJobsStream) }
	dlq := func() uint64 { return e.msgs(worker.DefaultDLQStream) }
	code, out, errOut := e.tool("dlq", "replay", "--seq", fmt.Sprint(s2))
	if code != 0 || out != "replay: 1 replayed, 0 duplicates, 0 failed\n" {
		t.Fatalf("exit %d, %q\n%s", code, out, errOut)
	}
	if jobs() != 1 || dlq() != 3 {
		t.Errorf("%d jobs, %d dead letters; want 1 and 3", jobs(), dlq())
	}
	s, _ := e.js.Stream(context.Background(), worker.DefaultJobsStream)
	m, err := s.GetLastMsgForSubject(context.Background(), worker.DefaultJobsSubject)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != body("org2", "r2") || m.Header.Get(jetstream.MsgIDHeader) != fmt.Sprintf("replay-%d", s2) {
		t.Errorf("replayed job %s %v", m.Data, m.Header)
	}
	code, out, errOut = e.tool("dlq", "replay", "--seq", fmt.Sprint(s2))
	if code != 0 || !strings.Contains(errOut, fmt.Sprintf("no dead letter %d", s2)) || !strings.Contains(out, "nothing to do") {
		t.Errorf("replaying it again: exit %d\n%s%s", code, out, errOut)
	}
}

// testReplayedBefore: a dead letter whose replay is already in the jobs
// stream is removed, not published twice.
func testReplayedBefore(t *testing.T, e *toolsEnv, s3 uint64, body func(org, run string) string) {
	jobs := func() uint64 { return e.msgs(worker.DefaultJobsStream) }
	dlq := func() uint64 { return e.msgs(worker.DefaultDLQStream) }
	// As if an earlier replay published it and then failed to delete it.
	m := nats.NewMsg(worker.DefaultJobsSubject)
	m.Data = []byte(body("org1", "r3"))
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("replay-%d", s3))
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := e.tool("dlq", "replay", "--seq", fmt.Sprint(s3))
	if code != 0 || out != "replay: 0 replayed, 1 duplicates, 0 failed\n" {
		t.Fatalf("exit %d, %q\n%s", code, out, errOut)
	}
	if jobs() != 3 || dlq() != 1 {
		t.Errorf("%d jobs, %d dead letters; want 3 and 1", jobs(), dlq())
	}
}

func TestDLQWithoutStreams(t *testing.T) {
	e := newToolsEnv(t)
	code, out, errOut := e.tool("dlq", "ls")
	if code != 0 || out != "" || !strings.Contains(errOut, "not created yet") {
		t.Errorf("dlq ls: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = e.tool("dlq", "replay", "--all")
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Errorf("dlq replay: exit %d\n%s", code, out)
	}
}

func TestStatus(t *testing.T) {
	e := newToolsEnv(t)
	code, out, errOut := e.tool("status")
	if code != 0 || strings.Count(out, "not created yet") != 3 {
		t.Errorf("status with nothing created: exit %d\n%s%s", code, out, errOut)
	}
	if st := e.status(); st.Jobs.Exists || st.DeadLetters.Exists || st.Results.Exists {
		t.Errorf("%+v", st)
	}

	e.provision()
	ctx := context.Background()
	publish := func(i int) {
		if _, err := e.js.Publish(ctx, worker.DefaultJobsSubject, fmt.Appendf(nil, `{"run_id":"r%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	// One job taken, handed back, and taken again: in hand, redelivered. It
	// is alone in the stream, so the second delivery can only be it, even if
	// the pull reaches the server before the (unconfirmed) nak.
	publish(0)
	cons, err := e.js.Consumer(ctx, worker.DefaultJobsStream, worker.DefaultConsumer)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Nak(); err != nil {
		t.Fatal(err)
	}
	if m, err = cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if md, _ := m.Metadata(); md.NumDelivered != 2 {
		t.Fatalf("delivered %d times, want 2", md.NumDelivered)
	}
	publish(1)
	publish(2)
	e.deadLetter(worker.ReasonNotArchived, "org1", "a", "{}")
	e.deadLetter(worker.ReasonNotArchived, "org1", "b", "{}")
	e.deadLetter(worker.ReasonForbidden, "org1", "c", "{}")
	for _, o := range []string{"deleted", "deleted", "not_found"} {
		if _, err := e.js.Publish(ctx, worker.DefaultResultsSubject+"."+o, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}

	// The server counts a consumer's backlog as it learns of each stored
	// message, a moment after the publish's ack: under load the count can
	// lag.
	st := e.status()
	for deadline := time.Now().Add(5 * time.Second); st.Jobs.Consumer.Backlog < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		st = e.status()
	}
	c := st.Jobs.Consumer
	if !st.Jobs.Exists || st.Jobs.Messages != 3 || !c.Exists || c.Backlog != 2 || c.AckPending != 1 || c.Redelivered != 1 {
		t.Errorf("jobs %+v", st.Jobs)
	}
	if d := st.DeadLetters; d.Total != 3 || d.ByReason["not_archived"] != 2 || d.ByReason["forbidden"] != 1 || len(d.ByReason) != len(worker.Reasons) {
		t.Errorf("dead letters %+v", d)
	}
	if r := st.Results; r.Total != 3 || r.ByOutcome["deleted"] != 2 || r.ByOutcome["not_found"] != 1 || r.MaxAge != "336h0m0s" {
		t.Errorf("results %+v", r)
	}

	code, out, _ = e.tool("status")
	for _, re := range []string{`backlog\s+2\s`, `ack pending\s+1\s`, `redelivered\s+1\s`, `not_archived\s+2\s`, `forbidden\s+1\s`, `deleted\s+2\s`, `not_found\s+1\s`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status table lacks %s:\n%s", re, out)
		}
	}
	if code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestToolsHelpAndBadFlags(t *testing.T) {
	for _, args := range [][]string{{"enqueue", "--help"}, {"dlq", "ls", "--help"}, {"dlq", "replay", "-h"}, {"status", "--help"}, {"dlq", "help"},
		{"run", "--help"}, {"demo", "--help"}, {"bench", "--help"}, {"help"}} {
		var out, errOut bytes.Buffer
		if code := run(args, env(), &out, &errOut); code != 0 || !strings.Contains(out.String(), "Usage: tallyfy-deleter") || errOut.Len() != 0 {
			t.Errorf("%q: exit %d, want 0 with the usage on standard output and nothing on standard error; stdout:\n%s\nstderr:\n%s", args, code, out.String(), errOut.String())
		}
	}
	for _, args := range [][]string{{"status", "extra"}, {"status", "--json=maybe"}, {"enqueue", "--nope"}, {"enqueue", "--tallyfy-org-id", "a/b", "x,y"}} {
		if code := run(args, env(), &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	// A mistyped flag: one line saying what is wrong, one hint; no usage.
	for _, args := range [][]string{{"run", "--nope"}, {"enqueue", "--nope"}, {"dlq", "ls", "--nope"}, {"status", "--nope"}, {"demo", "--nope"}, {"bench", "--nope"}} {
		var out, errOut bytes.Buffer
		code := run(args, env(), &out, &errOut)
		lines := strings.Split(strings.TrimRight(errOut.String(), "\n"), "\n")
		if code != 2 || len(lines) != 2 || !strings.Contains(lines[0], "nope") || !strings.HasPrefix(lines[1], "see 'tallyfy-deleter ") || out.Len() != 0 {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant exit 2, the error and a hint on two lines", args, code, errOut.String())
		}
	}
	// No NATS: a clear message and status 1, not a hang.
	for _, args := range [][]string{{"status"}, {"dlq", "ls"}, {"dlq", "replay", "--all"}, {"enqueue", "org1,r1"}} {
		var errOut bytes.Buffer
		code := run(args, env("NATS_URL", "nats://user:secret@127.0.0.1:1"), &bytes.Buffer{}, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), "cannot connect to NATS at nats://user:xxxxx@127.0.0.1:1") {
			t.Errorf("%q without NATS: exit %d\n%s", args, code, errOut.String())
		}
	}
}

func TestToolsBareBooleanFlags(t *testing.T) {
	tests := []struct {
		args      string
		json, dry bool
		org       string
		rest      string
	}{
		{"--json", true, false, "", ""},
		{"-json --dry-run", true, true, "", ""},
		{"--org --json --json", true, false, "--json", ""}, // an org called --json, oddly
		{"--json=false", false, false, "", ""},
		{"--json x --dry-run", true, false, "", "x --dry-run"}, // a positional argument ends the flags
		{"-- --json", false, false, "", "--json"},
	}
	for _, tc := range tests {
		var cfg settings.Tool
		var org string
		var js, dry bool
		s := settings.ToolSettings(&cfg)
		s.Str(&org, "", "org", "", "")
		s.Bool(&js, "", "json", "false", "")
		s.Bool(&dry, "", "dry-run", "false", "")
		rest, err := s.Parse("t", strings.Fields(tc.args), env())
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if js != tc.json || dry != tc.dry || org != tc.org || strings.Join(rest, " ") != tc.rest {
			t.Errorf("%q: json %v dry %v org %q rest %q", tc.args, js, dry, org, rest)
		}
	}
}

func TestProgressPlain(t *testing.T) {
	var buf bytes.Buffer
	w := cli.NewSyncWriter(&buf)
	p := cli.NewProgress(w, "work", 100)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 10 {
				p.Add(1)
			}
		})
	}
	p.Logf("item %d: %s", 7, "bad")
	wg.Wait()
	p.Done()
	p.Done()
	out := buf.String()
	if !strings.Contains(out, "item 7: bad\n") {
		t.Errorf("message missing:\n%s", out)
	}
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "work: 100/100 (100%)") != 1 || strings.Contains(out, "\r") {
		t.Errorf("want one plain final line:\n%q", out)
	}

	buf.Reset()
	p = cli.NewProgress(&buf, "stdin", 0)
	p.Add(3)
	p.Done()
	if !strings.HasPrefix(buf.String(), "stdin: 3, ") {
		t.Errorf("unknown total: %q", buf.String())
	}
}
