package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// readmePermissions loads the README's "NATS permissions" configuration
// with the NATS server's own parser, and returns each user's permissions.
func readmePermissions(t *testing.T) map[string]*server.Permissions {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### NATS permissions\n")
	if !ok {
		t.Fatal("README has no NATS permissions section")
	}
	_, block, _ := strings.Cut(section, "```\n")
	block, _, ok = strings.Cut(block, "```\n")
	if !ok {
		t.Fatal("README's NATS permissions section has no configuration block")
	}
	file := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(file, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DELETER_NATS_PASSWORD", "unused")
	t.Setenv("UPSTREAM_NATS_PASSWORD", "unused")
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("the README's NATS configuration: %v", err)
	}
	perms := map[string]*server.Permissions{}
	for _, u := range opts.Users {
		perms[u.Username] = u.Permissions
	}
	for _, name := range []string{"deleter", "upstream"} {
		if p := perms[name]; p == nil || p.Publish == nil || p.Subscribe == nil {
			t.Fatalf("the README's NATS configuration gives %s no publish and subscribe permissions", name)
		}
	}
	return perms
}

// provisioning says whether a subject is one the worker publishes to only
// to provision streams and its consumer.
func provisioning(subject string) bool {
	return strings.HasPrefix(subject, "$JS.API.STREAM.CREATE.") || strings.HasPrefix(subject, "$JS.API.STREAM.UPDATE.") ||
		strings.HasPrefix(subject, "$JS.API.CONSUMER.CREATE.")
}

// TestNATSPermissions runs workers as a NATS user allowed only what the
// README lists, and jobs published by a user allowed only an upstream's
// share, through every path that talks to NATS: provisioning, deletions,
// dead letters, a retry, a 429's pause, a hand-back at shutdown, and the
// sweeper's max-deliveries dead letter; the worker that finishes the
// handed-back job runs with DELETER_PROVISION=false and without the
// permissions to provision. Every job ends with its outcome, and no worker
// meets a permissions violation.
func TestNATSPermissions(t *testing.T) {
	const adminPW, workerPW, checkerPW, upstreamPW = "pw-admin-1", "pw-worker-2", "pw-checker-4", "pw-upstream-3"
	perms := readmePermissions(t)
	deleter := perms["deleter"]
	checker := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: slices.DeleteFunc(slices.Clone(deleter.Publish.Allow), provisioning)},
		Subscribe: deleter.Subscribe,
	}
	if len(checker.Publish.Allow) == len(deleter.Publish.Allow) {
		t.Fatal("the README's worker permissions have no provisioning subjects")
	}
	srv := testutil.JetStreamWith(t, testutil.NATSOptions{
		Users:       map[string]string{"admin": adminPW, "deleter": workerPW, "checker": checkerPW, "upstream": upstreamPW},
		Permissions: map[string]*server.Permissions{"deleter": deleter, "checker": checker, "upstream": perms["upstream"]},
	})
	withUser := func(user, pw string) string {
		return strings.Replace(srv.URL(), "nats://", "nats://"+user+":"+pw+"@", 1)
	}
	api := testutil.NewFakeTallyfy(t)
	const maxDeliver = 2
	p := newPool(t, withUser("admin", adminPW), api,
		"NATS_URL="+srv.URL(), "NATS_USER=deleter", "NATS_PASSWORD="+workerPW,
		"DELETER_MAX_DELIVER="+strconv.Itoa(maxDeliver), "DELETER_BACKOFF=100ms", "DELETER_ACK_WAIT=1s",
		"DELETER_API_TIMEOUT=2m", "DELETER_BREAKER_FAILURES=100", "DELETER_SHUTDOWN_TIMEOUT=500ms")
	_, upstream := testutil.Connect(t, withUser("upstream", upstreamPW))
	var seqs []uint64
	publish := func(body string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ack, err := upstream.Publish(ctx, worker.DefaultJobsSubject, []byte(body))
		if err != nil {
			t.Fatalf("the upstream user publishing a job: %v", err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	job := func(run string) string { return `{"org_id":"org1","run_id":"` + run + `"}` }

	// The sweeper: a job's last delivery is held by a worker that is
	// killed; the survivor hears the advisory and dead-letters it.
	api.Script(poolOrg, "stranded", testutil.Response{Status: 503}, testutil.Response{Status: 200, Delay: time.Minute})
	doomed := p.start("doomed", "DELETER_CONCURRENCY=1")
	p.waitPulling(1)
	publish(job("stranded"))
	waitFor(t, 10*time.Second, "the job's last delivery", func() bool { return api.DeleteCount(poolOrg, "stranded") >= maxDeliver })
	first := p.start("first")
	p.waitPulling(1)
	p.kill(doomed)
	p.waitUntil(15*time.Second, "the stranded job's dead letter", func() bool { return p.msgs(worker.DefaultDLQStream) >= 1 })

	// Deletions, dead letters, a retry and a 429's pause.
	for _, run := range []string{"ok1", "ok2", "flaky", "limited"} {
		api.AddRun(poolOrg, run, true)
	}
	api.AddRun(poolOrg, "unarchived", false)
	api.Script(poolOrg, "forbidden", testutil.Response{Status: 403})
	api.Script(poolOrg, "flaky", testutil.Response{Status: 503})
	api.Script(poolOrg, "limited", testutil.Response{Status: 429, RetryAfter: "1"})
	for _, run := range []string{"ok1", "ok2", "unarchived", "forbidden", "flaky", "limited"} {
		publish(job(run))
	}
	publish(`not json`)
	p.waitResults(len(seqs), 20*time.Second)

	// A hand-back: the job waits out a long Retry-After when its worker is
	// stopped, and another worker finishes it.
	api.AddRun(poolOrg, "waiting", true)
	api.Script(poolOrg, "waiting", testutil.Response{Status: 429, RetryAfter: "60"})
	publish(job("waiting"))
	waitFor(t, 10*time.Second, "the 429", func() bool { return api.DeleteCount(poolOrg, "waiting") >= 1 })
	p.terminate(first)
	if code := p.exitWithin(first, 10*time.Second); code != 0 {
		t.Errorf("the first worker exited %d after SIGTERM", code)
	}
	second := p.start("second", "NATS_USER=checker", "NATS_PASSWORD="+checkerPW, "DELETER_PROVISION=false")
	p.waitResults(len(seqs), 20*time.Second)

	o := p.settled(seqs)
	want := map[string]string{
		"stranded": "dead_lettered/max_deliveries", "ok1": "deleted/", "ok2": "deleted/", "flaky": "deleted/",
		"limited": "deleted/", "unarchived": "dead_lettered/not_archived", "forbidden": "dead_lettered/forbidden",
		"": "dead_lettered/invalid_job", "waiting": "deleted/",
	}
	got := map[string]string{}
	for _, r := range o.results {
		got[r.RunID] = string(r.Outcome) + "/" + string(r.Reason)
	}
	for run, w := range want {
		if got[run] != w {
			t.Errorf("job %q: outcome %q, want %q", run, got[run], w)
		}
	}
	for _, w := range []*workerProc{doomed, first, second} {
		if log := strings.ToLower(w.logs.String()); strings.Contains(log, "permissions violation") {
			t.Errorf("worker %s met a permissions violation:\n%s", w.id, logExcerpt(w.logs.String(), 20, 20))
		}
	}
	// The upstream user may publish jobs and nothing else.
	nc, _ := testutil.Connect(t, withUser("upstream", upstreamPW))
	errs := make(chan error, 1)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	if err := nc.Publish(worker.DefaultResultsSubject+".deleted", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("the upstream user publishing a result event: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the upstream user published a result event without a permissions violation")
	}
}
