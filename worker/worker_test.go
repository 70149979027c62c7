package worker_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// TestOutcomeTable drives every row of the README's outcome table through
// a real JetStream server and the fake API.
func TestOutcomeTable(t *testing.T) {
	e := newEnv(t)
	api := e.api
	tests := []struct {
		name       string
		body       string
		setup      func()
		outcome    worker.Outcome
		reason     worker.Reason
		status     int
		attempts   int
		noRequests bool
	}{
		{name: "200 deletes", body: job(testOrg, "r200"), setup: func() { api.AddRun(testOrg, "r200", true) },
			outcome: worker.OutcomeDeleted, status: 200, attempts: 1},
		{name: "204 deletes", body: job(testOrg, "r204"), setup: func() { api.Script(testOrg, "r204", testutil.Response{Status: 204}) },
			outcome: worker.OutcomeDeleted, status: 204, attempts: 1},
		{name: "default org", body: `{"run_id":"rdefault"}`, setup: func() { api.AddRun(testOrg, "rdefault", true) },
			outcome: worker.OutcomeDeleted, status: 200, attempts: 1},
		{name: "404 acks", body: job(testOrg, "rmissing"),
			outcome: worker.OutcomeNotFound, status: 404, attempts: 1},
		{name: "422 not archived", body: job(testOrg, "ractive"), setup: func() { api.AddRun(testOrg, "ractive", false) },
			outcome: worker.OutcomeDeadLettered, reason: worker.ReasonNotArchived, status: 422, attempts: 1},
		{name: "403 forbidden", body: job(testOrg, "rdenied"), setup: func() { api.AddRun(testOrg, "rdenied", true); api.DenyRun(testOrg, "rdenied") },
			outcome: worker.OutcomeDeadLettered, reason: worker.ReasonForbidden, status: 403, attempts: 1},
		{name: "400 rejected", body: job(testOrg, "r400"), setup: func() { api.Script(testOrg, "r400", testutil.Response{Status: 400}) },
			outcome: worker.OutcomeDeadLettered, reason: worker.ReasonRejected, status: 400, attempts: 1},
		{name: "409 rejected", body: job(testOrg, "r409"), setup: func() { api.Script(testOrg, "r409", testutil.Response{Status: 409}) },
			outcome: worker.OutcomeDeadLettered, reason: worker.ReasonRejected, status: 409, attempts: 1},
		{name: "500 then 200", body: job(testOrg, "rflaky"), setup: func() {
			api.AddRun(testOrg, "rflaky", true)
			api.Script(testOrg, "rflaky", testutil.Response{Status: 500})
		}, outcome: worker.OutcomeDeleted, status: 200, attempts: 2},
		{name: "408 retried", body: job(testOrg, "r408"), setup: func() {
			api.AddRun(testOrg, "r408", true)
			api.Script(testOrg, "r408", testutil.Response{Status: 408})
		}, outcome: worker.OutcomeDeleted, status: 200, attempts: 2},
		{name: "5xx on every delivery", body: job(testOrg, "rbroken"), setup: func() {
			api.Script(testOrg, "rbroken", testutil.Response{Status: 502}, testutil.Response{Status: 503}, testutil.Response{Status: 500})
		}, outcome: worker.OutcomeDeadLettered, reason: worker.ReasonRetriesExhausted, status: 500, attempts: 3},
		{name: "invalid JSON", body: `{"run_id":`, outcome: worker.OutcomeDeadLettered, reason: worker.ReasonInvalidJob, attempts: 1, noRequests: true},
		{name: "no org and no default", body: `{"run_id":"r1","org_id":""}`, outcome: worker.OutcomeDeadLettered, reason: worker.ReasonInvalidJob, attempts: 1, noRequests: true},
		{name: "org not allowed", body: job("org2", "rforeign"), setup: func() { api.AddRun("org2", "rforeign", true) },
			outcome: worker.OutcomeDeadLettered, reason: worker.ReasonOrgNotAllowed, attempts: 1, noRequests: true},
	}
	for _, tc := range tests {
		if tc.setup != nil {
			tc.setup()
		}
	}
	cfg := testConfig()
	cfg.BreakerFailures = 10 // the 5xx rows must not open it
	e.start(cfg)

	seqs := make([]uint64, len(tests))
	for i, tc := range tests {
		seqs[i] = e.publish(tc.body)
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.result(seqs[i], 15*time.Second)
			if r.Outcome != tc.outcome || r.Reason != tc.reason || r.Status != tc.status || r.Attempts != tc.attempts {
				t.Errorf("result = %s/%s status %d attempts %d, want %s/%s status %d attempts %d",
					r.Outcome, r.Reason, r.Status, r.Attempts, tc.outcome, tc.reason, tc.status, tc.attempts)
			}
			if r.JobSeq != seqs[i] || r.Worker != "test-worker" || r.At.IsZero() {
				t.Errorf("result job_seq %d worker %q at %v", r.JobSeq, r.Worker, r.At)
			}
			dl := e.deadLetter(seqs[i])
			if tc.outcome != worker.OutcomeDeadLettered {
				if dl != nil {
					t.Errorf("unexpected dead letter on %s", dl.Subject())
				}
				return
			}
			if dl == nil {
				t.Fatalf("no dead letter")
			}
			if want := worker.DefaultDLQSubject + "." + string(tc.reason); dl.Subject() != want {
				t.Errorf("dead letter subject %q, want %q", dl.Subject(), want)
			}
			if string(dl.Data()) != tc.body {
				t.Errorf("dead letter body %q, want the job's bytes %q", dl.Data(), tc.body)
			}
			h := dl.Headers()
			wantHeaders := map[string]string{
				worker.HeaderReason:   string(tc.reason),
				worker.HeaderAttempts: strconv.Itoa(tc.attempts),
				worker.HeaderJobSeq:   strconv.FormatUint(seqs[i], 10),
				"Nats-Msg-Id":         "dlq-" + strconv.FormatUint(seqs[i], 10),
			}
			if tc.status != 0 {
				wantHeaders[worker.HeaderStatus] = strconv.Itoa(tc.status)
				wantHeaders[worker.HeaderRequestID] = r.TallyfyRequestID
			}
			for k, v := range wantHeaders {
				if got := h.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tc.status != 0 && h.Get(worker.HeaderRequestID) == "" {
				t.Errorf("no %s header although the fake sends X-Request-Id", worker.HeaderRequestID)
			}
			if errText := h.Get(worker.HeaderError); errText == "" || len(errText) > 1024 {
				t.Errorf("header %s = %q: want a reason of at most 1 KiB", worker.HeaderError, errText)
			}
		})
	}
	if n := api.DeleteCount("org2", "rforeign"); n != 0 {
		t.Errorf("disallowed org got %d API requests", n)
	}
	// Every request is for the run of a row that may reach Tallyfy, with
	// the IDs in the path as the job gave them: none for an invalid job or
	// a disallowed organization.
	mayCall := map[string]bool{}
	for _, tc := range tests {
		if job, err := worker.DecodeJob([]byte(tc.body), testOrg); err == nil && !tc.noRequests {
			mayCall["/organizations/"+job.OrgID+"/runs/"+job.RunID+"/delete"] = true
		}
	}
	reqs := api.Requests()
	if len(reqs) == 0 {
		t.Errorf("no API requests at all")
	}
	for _, r := range reqs {
		i := strings.Index(r.Path, "/organizations/")
		if i < 0 || !mayCall[r.Path[i:]] {
			t.Errorf("request %s %s should never have been made", r.Method, r.Path)
		}
	}
}

// TestResultEventFields checks the event's JSON names and the result
// subject, as a consumer of the results stream reads them.
func TestResultEventFields(t *testing.T) {
	e := newEnv(t)
	e.api.AddRun(testOrg, "rfields", true)
	e.start(testConfig())
	nc, _ := testutil.Connect(t, e.nats.URL())
	sub, err := nc.SubscribeSync(worker.DefaultResultsSubject + ".>")
	if err != nil {
		t.Fatal(err)
	}
	// The server must know of the subscription before the event is sent.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	seq := e.publish(job(testOrg, "rfields"))
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no result event: %v", err)
	}
	if m.Subject != "tallyfy.runs.result.deleted" {
		t.Errorf("subject %q", m.Subject)
	}
	if got, want := m.Header.Get("Nats-Msg-Id"), fmt.Sprintf("result-%d", seq); got != want {
		t.Errorf("Nats-Msg-Id %q, want %q", got, want)
	}
	var ev map[string]any
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"org_id": testOrg, "run_id": "rfields", "request_id": "req-rfields", "outcome": "deleted",
		"status": float64(200), "attempts": float64(1), "job_seq": float64(seq), "worker": "test-worker"}
	for k, v := range want {
		if ev[k] != v {
			t.Errorf("event %s = %v, want %v", k, ev[k], v)
		}
	}
	at, _ := ev["at"].(string)
	if _, err := time.Parse(time.RFC3339, at); err != nil {
		t.Errorf("event at %q is not RFC 3339: %v", at, err)
	}
	if _, ok := ev["reason"]; ok {
		t.Errorf("a deleted job has no reason, got %v", ev["reason"])
	}
}

// TestRequestHeaders checks what Tallyfy receives.
func TestRequestHeaders(t *testing.T) {
	e := newEnv(t)
	e.api.AddRun(testOrg, "rhdr", true)
	e.start(testConfig())
	e.result(e.publish(job(testOrg, "rhdr")), 10*time.Second)
	reqs := e.api.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodDelete || r.Path != "/api/organizations/org1/runs/rhdr/delete" && !strings.HasSuffix(r.Path, "/organizations/org1/runs/rhdr/delete") {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
	for k, v := range map[string]string{"Authorization": "Bearer " + e.api.Token(), "Accept": "application/json", "X-Tallyfy-Client": "APIClient"} {
		if got := r.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
}

// TestBadBodies: whatever arrives, an invalid job is dead-lettered with
// zero API requests and the worker keeps working.
func TestBadBodies(t *testing.T) {
	e := newEnv(t)
	e.start(testConfig())
	big := `{"org_id":"org1","run_id":"r1","pad":"` + strings.Repeat("x", 900_000) + `"}`
	bodies := map[string]string{
		"empty":             ``,
		"whitespace":        "  \n ",
		"not JSON":          `delete r1`,
		"JSON array":        `["org1","r1"]`,
		"JSON string":       `"r1"`,
		"900 KB":            big,
		"number run_id":     `{"run_id":12345}`,
		"object org_id":     `{"org_id":{"id":"org1"},"run_id":"r1"}`,
		"bool request_id":   `{"run_id":"r1","request_id":true}`,
		"slash":             `{"run_id":"r1/delete"}`,
		"dot dot":           `{"run_id":".."}`,
		"escaped slash":     `{"run_id":"r1%2Fx"}`,
		"JSON escaped /":    `{"run_id":"r1\/x"}`,
		"space":             `{"run_id":"r 1"}`,
		"NUL":               `{"run_id":"r1\u0000"}`,
		"non-ASCII":         `{"run_id":"rün"}`,
		"invalid UTF-8":     "{\"run_id\":\"r\xff1\"}",
		"65 chars":          `{"run_id":"` + strings.Repeat("a", 65) + `"}`,
		"org with slash":    `{"org_id":"org1/../x","run_id":"r1"}`,
		"duplicate run_id":  `{"run_id":"r1","run_id":"r2"}`,
		"case variant":      `{"RUN_ID":"r1"}`,
		"trailing data":     `{"run_id":"r1"} {"run_id":"r2"}`,
		"request_id ctrl":   `{"run_id":"r1","request_id":"a\nb"}`,
		"missing run_id":    `{"org_id":"org1"}`,
		"null run_id":       `{"run_id":null}`,
		"huge request_id":   `{"run_id":"r1","request_id":"` + strings.Repeat("q", 200) + `"}`,
		"deep nesting junk": `{"run_id":"r1","x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `,"y":`,
	}
	seqs := map[string]uint64{}
	for name, b := range bodies {
		seqs[name] = e.publish(b)
	}
	for name, seq := range seqs {
		r := e.result(seq, 10*time.Second)
		if r.Outcome != worker.OutcomeDeadLettered || r.Reason != worker.ReasonInvalidJob {
			t.Errorf("%s: %s/%s, want dead_lettered/invalid_job", name, r.Outcome, r.Reason)
		}
		if dl := e.deadLetter(seq); dl == nil || string(dl.Data()) != bodies[name] {
			t.Errorf("%s: dead letter missing or not the original bytes", name)
		}
	}
	if n := e.api.RequestCount(); n != 0 {
		t.Errorf("invalid jobs caused %d API requests", n)
	}
	// Still working.
	e.api.AddRun(testOrg, "rafter", true)
	if r := e.result(e.publish(job(testOrg, "rafter")), 10*time.Second); r.Outcome != worker.OutcomeDeleted {
		t.Errorf("valid job after bad ones: %s", r.Outcome)
	}
}

// TestOutageDeadLettersNothing: an outage longer than max-deliver × backoff
// dead-letters nothing, and Tallyfy sees about one probe per breaker
// timeout.
func TestOutageDeadLettersNothing(t *testing.T) {
	e := newEnv(t)
	const jobs = 20
	for i := range jobs {
		e.api.AddRun(testOrg, fmt.Sprintf("rout%d", i), true)
	}
	e.api.SetOutage(testutil.Response{Status: 503})
	cfg := testConfig()
	cfg.Concurrency = 8
	r := e.start(cfg)
	seqs := make([]uint64, jobs)
	for i := range jobs {
		seqs[i] = e.publish(job(testOrg, fmt.Sprintf("rout%d", i)))
	}
	// Max-deliver × backoff is 150ms; wait for enough probes that the
	// outage has lasted far longer (each probe is one breaker timeout
	// after the last).
	start := time.Now()
	e.waitFor(20*time.Second, "the breaker to open", func() bool { return r.w.Health().BreakerState.String() == "open" })
	opened := e.api.RequestCount()
	probesWanted := int64(6)
	e.waitFor(20*time.Second, "probes during the outage", func() bool { return e.api.RequestCount() >= opened+probesWanted })
	outage := time.Since(start)
	during := e.api.RequestCount()
	e.api.EndOutage()
	for _, seq := range seqs {
		if res := e.result(seq, 20*time.Second); res.Outcome != worker.OutcomeDeleted {
			t.Errorf("job %d: %s/%s, want deleted", seq, res.Outcome, res.Reason)
		}
	}
	if n := len(e.deadLetters()); n != 0 {
		t.Errorf("%d dead letters during an outage", n)
	}
	// Before it opened: the jobs in hand, and the jobs pulled into the slots
	// of the failures that counted before it opened; after: one probe per
	// breaker timeout (plus one for the probe in progress).
	bound := int64(cfg.Concurrency) + int64(cfg.BreakerFailures) + int64(outage/cfg.BreakerTimeout) + 1
	t.Logf("outage of %s: Tallyfy received %d requests (bound %d)", outage.Round(time.Millisecond), during, bound)
	if during > bound {
		t.Errorf("Tallyfy received %d requests during the outage, more than %d", during, bound)
	}
}

// TestRedeliveredJobGivesOneEvent: the worker dies after publishing the
// result and before its ack reaches the server; the job is delivered again
// to another worker, and the results stream still holds one event.
func TestRedeliveredJobGivesOneEvent(t *testing.T) {
	e := newEnv(t)
	e.api.AddRun(testOrg, "rlost", true)
	cfg := testConfig()
	cfg.AckWait = time.Second
	var victim *nats.Conn
	killAfterResult := func(js jetstream.JetStream) jetstream.JetStream {
		victim = js.Conn()
		return hookJS{JetStream: js, after: func(m *nats.Msg) {
			if strings.HasPrefix(m.Subject, worker.DefaultResultsSubject+".") {
				victim.Close() // the ack that follows is lost
			}
		}}
	}
	e.start(cfg, killAfterResult)
	seq := e.publish(job(testOrg, "rlost"))
	first := e.result(seq, 10*time.Second)
	if first.Outcome != worker.OutcomeDeleted {
		t.Fatalf("first outcome %s", first.Outcome)
	}
	e.start(cfg) // takes the redelivery
	e.waitFor(15*time.Second, "the redelivery to reach Tallyfy", func() bool { return e.api.DeleteCount(testOrg, "rlost") >= 2 })
	e.waitFor(15*time.Second, "the jobs stream to empty", func() bool { return e.streamMsgs(worker.DefaultJobsStream) == 0 })
	if n := e.streamMsgs(worker.DefaultResultsStream); n != 1 {
		t.Errorf("results stream holds %d events, want 1", n)
	}
}

// TestShutdownLosesNothing: shutdown with jobs in flight returns nil within
// the grace period, and every job still ends with one outcome.
func TestShutdownLosesNothing(t *testing.T) {
	e := newEnv(t)
	const jobs = 12
	for i := range jobs {
		e.api.AddRun(testOrg, fmt.Sprintf("rshut%d", i), true)
	}
	e.api.SetLatency(800 * time.Millisecond)
	cfg := testConfig()
	cfg.ShutdownTimeout = 300 * time.Millisecond
	r := e.start(cfg)
	for i := range jobs {
		e.publish(job(testOrg, fmt.Sprintf("rshut%d", i)))
	}
	e.waitFor(5*time.Second, "jobs in flight", func() bool { return r.w.Health().InFlight == cfg.Concurrency })
	began := time.Now()
	if err := r.Stop(t, 5*time.Second); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if took := time.Since(began); took > cfg.ShutdownTimeout+cfg.PullWait+2*time.Second {
		t.Errorf("shutdown took %s", took)
	}
	e.api.SetLatency(0)
	e.start(testConfig())
	res := e.waitResults(jobs, 20*time.Second)
	seen := map[uint64]int{}
	for _, r := range res {
		seen[r.JobSeq]++
		if r.Outcome != worker.OutcomeDeleted && r.Outcome != worker.OutcomeNotFound {
			t.Errorf("job %d: %s/%s", r.JobSeq, r.Outcome, r.Reason)
		}
	}
	if len(seen) != jobs {
		t.Errorf("%d distinct jobs finished, want %d", len(seen), jobs)
	}
	for seq, n := range seen {
		if n != 1 {
			t.Errorf("job %d has %d result events", seq, n)
		}
	}
	for i := range jobs {
		if !e.api.Deleted(testOrg, fmt.Sprintf("rshut%d", i)) {
			t.Errorf("run rshut%d not deleted", i)
		}
	}
}

// TestRateLimitPausesAndRetries: a 429 is retried after Retry-After without
// spending a delivery, and is not a breaker failure.
func TestRateLimitPausesAndRetries(t *testing.T) {
	e := newEnv(t)
	e.api.AddRun(testOrg, "r429", true)
	e.api.Script(testOrg, "r429",
		testutil.Response{Status: 429, RetryAfter: "1"},
		testutil.Response{Status: 429, RetryAfter: "1"})
	cfg := testConfig()
	cfg.MaxDeliver = 2
	cfg.BreakerFailures = 2
	r := e.start(cfg)
	began := time.Now()
	res := e.result(e.publish(job(testOrg, "r429")), 20*time.Second)
	if res.Outcome != worker.OutcomeDeleted || res.Attempts != 1 {
		t.Errorf("after two 429s: %s/%s attempts %d, want deleted on the first delivery", res.Outcome, res.Reason, res.Attempts)
	}
	if took := time.Since(began); took < 2*time.Second {
		t.Errorf("two Retry-After: 1 honoured in %s", took)
	}
	if s := r.w.Health().BreakerState.String(); s != "closed" {
		t.Errorf("breaker %s after 429s", s)
	}
}

// TestUnauthorizedNeverDeadLetters: rejected credentials hand the job back
// without spending an attempt and pause pulling; once new credentials are
// accepted, the job is deleted.
func TestUnauthorizedNeverDeadLetters(t *testing.T) {
	e := newEnv(t)
	e.api.AddRun(testOrg, "r401", true)
	good := e.api.Token()
	client := e.client()
	e.api.SetToken("rotated-elsewhere")
	cfg := testConfig()
	cfg.MaxDeliver = 1
	r := e.startWith(cfg, client)
	seq := e.publish(job(testOrg, "r401"))
	e.waitFor(10*time.Second, "credentials rejected", func() bool { return r.w.Health().Unable == worker.CredentialsRejected })
	e.waitFor(10*time.Second, "a second try", func() bool { return e.api.RequestCount() >= 2 })
	if n := len(e.deadLetters()); n != 0 {
		t.Fatalf("%d dead letters after 401", n)
	}
	e.api.SetToken(good)
	if res := e.result(seq, 10*time.Second); res.Outcome != worker.OutcomeDeleted || res.Attempts != 1 {
		t.Errorf("after the token is valid again: %s/%s, attempts %d; want deleted, on its first real attempt", res.Outcome, res.Reason, res.Attempts)
	}
	e.waitFor(5*time.Second, "the worker to be able again", func() bool { return r.w.Health().Unable == worker.Able })
}

// TestTokenNeverLeaks: even an API that echoes the bearer token in its
// error bodies gets it into no log line, event or dead letter.
func TestTokenNeverLeaks(t *testing.T) {
	e := newEnv(t)
	tok := e.api.Token()
	echo := func(status int) testutil.Response {
		return testutil.Response{Status: status, Body: `{"message":"bad token Bearer ` + tok + ` for you","token":"` + tok + `"}`}
	}
	e.api.Script(testOrg, "rs422", echo(422))
	e.api.Script(testOrg, "rs403", echo(403))
	e.api.Script(testOrg, "rs400", testutil.Response{Status: 400, Body: "<html><body>" + tok + "</body></html>"})
	e.api.Script(testOrg, "rs500", echo(500), echo(502), echo(503))
	e.api.Script(testOrg, "rs401", echo(401))
	e.api.AddRun(testOrg, "rs401", true)
	cfg := testConfig()
	cfg.BreakerFailures = 10
	cfg.BreakerTimeout = 100 * time.Millisecond
	r := e.start(cfg)
	var seqs []uint64
	for _, run := range []string{"rs422", "rs403", "rs400", "rs500", "rs401"} {
		seqs = append(seqs, e.publish(job(testOrg, run)))
	}
	seqs = append(seqs, e.publish(`{"run_id":"`+tok+`/x"}`))
	for _, s := range seqs {
		e.result(s, 15*time.Second)
	}
	check := func(where, s string) {
		if strings.Contains(s, tok) {
			t.Errorf("the token appears in %s: %s", where, s)
		}
	}
	e.mu.Lock()
	for _, res := range e.results {
		b, _ := json.Marshal(res)
		check("a result event", string(b))
	}
	for _, m := range e.dlq {
		for k, v := range m.Headers() {
			check("dead letter header "+k, strings.Join(v, ","))
		}
	}
	e.mu.Unlock()
	check("the worker's log", r.logs.String())
	if !strings.Contains(r.logs.String(), "REDACTED") {
		t.Errorf("expected the echoed token to be redacted in the log")
	}
}
