package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/ops"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// sweepEnv is the tools' environment with a fake Tallyfy and the
// settings that reach it.
type sweepEnv struct {
	*toolsEnv
	api *testutil.FakeTallyfy
	now time.Time
}

func newSweepEnv(t *testing.T, extra ...string) *sweepEnv {
	t.Helper()
	e := newToolsEnv(t)
	api := testutil.NewFakeTallyfy(t)
	base := e.getenv
	over := env(append([]string{"TALLYFY_API_URL", api.URL(), "TALLYFY_ACCESS_TOKEN", api.Token()}, extra...)...)
	e.getenv = func(k string) string {
		if v := over(k); v != "" {
			return v
		}
		return base(k)
	}
	return &sweepEnv{toolsEnv: e, api: api, now: time.Now()}
}

// archived adds runs r<from>... of org, archived daysAgo days ago.
func (e *sweepEnv) archived(org string, from, n, daysAgo int) []string {
	var ids []string
	for i := from; i < from+n; i++ {
		id := fmt.Sprintf("r%04d", i)
		e.api.AddRunWith(org, testutil.RunSpec{ID: id, Name: "Offboarding " + id, ArchivedAt: e.now.Add(-time.Duration(daysAgo) * 24 * time.Hour)})
		ids = append(ids, id)
	}
	return ids
}

// TestSweepEndToEnd: the nightly cron job. Runs archived 100 days ago are
// enqueued and deleted by the worker; runs archived 2 days ago and active
// runs are left alone; the next night finds nothing due.
func TestSweepEndToEnd(t *testing.T) {
	e := newSweepEnv(t)
	old := e.archived("org1", 0, 130, 100)
	recent := e.archived("org1", 200, 5, 2)
	e.api.AddRuns("org1", []string{"active1", "active2"}, false)
	e.startWorker(e.api)

	code, out, errOut := e.tool("sweep", "--archived-for", "90d")
	if code != 0 {
		t.Fatalf("sweep: exit %d\n%s%s", code, out, errOut)
	}
	if want := "sweep org1: 135 scanned, 130 due, 130 published, 0 duplicates, 5 skipped (5 archived after the cutoff)\n"; out != want {
		t.Errorf("summary %q, want %q", out, want)
	}
	waitFor(t, 30*time.Second, "the due runs deleted", func() bool { return e.api.DeletedCount() == 130 })
	for _, id := range old {
		if !e.api.Deleted("org1", id) {
			t.Errorf("%s not deleted", id)
		}
	}
	for _, id := range append(recent, "active1", "active2") {
		if !e.api.RunExists("org1", id) {
			t.Errorf("%s deleted, but it was not due", id)
		}
	}
	waitFor(t, 10*time.Second, "130 result events", func() bool { return e.msgs(worker.DefaultResultsStream) == 130 })
	if st := e.status(); st.Results.ByOutcome["deleted"] != 130 || st.DeadLetters.Total != 0 {
		t.Errorf("results %v, dead letters %+v", st.Results.ByOutcome, st.DeadLetters)
	}

	code, out, errOut = e.tool("sweep", "--archived-for", "90d")
	if code != 0 || out != "sweep org1: 5 scanned, 0 due, 0 published, 0 duplicates, 5 skipped (5 archived after the cutoff)\n" {
		t.Errorf("the next night: exit %d\n%s%s", code, out, errOut)
	}
}

// TestSweepRerunPublishesNothingTwice: the same sweep again the same day
// (a cron job retried) publishes nothing twice.
func TestSweepRerunPublishesNothingTwice(t *testing.T) {
	e := newSweepEnv(t)
	e.provision()
	e.archived("org1", 0, 30, 100)
	before := e.now.Add(-24 * time.Hour).UTC().Format(time.RFC3339)
	if code, out, errOut := e.tool("sweep", "--archived-before", before); code != 0 || !strings.Contains(out, "30 published, 0 duplicates") {
		t.Fatalf("first sweep: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := e.tool("sweep", "--archived-before", before)
	if code != 0 || !strings.Contains(out, "30 due, 0 published, 30 duplicates") {
		t.Errorf("second sweep: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "duplicate window") {
		t.Errorf("duplicates not explained:\n%s", errOut)
	}
	if n := e.msgs(worker.DefaultJobsStream); n != 30 {
		t.Errorf("jobs stream holds %d, want 30", n)
	}
	// The default request ID is the org and today's date, in UTC.
	s, err := e.js.Stream(t.Context(), worker.DefaultJobsStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"request_id":"sweep-org1-` + time.Now().UTC().Format("2006-01-02") + `"`; !strings.Contains(string(m.Data), want) {
		t.Errorf("job %s, want %s", m.Data, want)
	}
}

// TestSweepDryRun prints what would be enqueued, publishes nothing, and
// needs no NATS.
func TestSweepDryRun(t *testing.T) {
	e := newSweepEnv(t, "NATS_URL", "nats://127.0.0.1:1")
	e.archived("org1", 0, 3, 100)
	e.archived("org1", 10, 2, 1)
	code, out, errOut := e.tool("sweep", "--archived-for", "720h", "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "ORG") || !strings.Contains(lines[0], "ARCHIVED AT") {
		t.Fatalf("output:\n%s", out)
	}
	at := e.now.Add(-100 * 24 * time.Hour).UTC().Format(time.RFC3339)
	for i, row := range lines[1:4] {
		id := fmt.Sprintf("r%04d", i)
		if f := strings.Fields(row); len(f) != 5 || f[0] != "org1" || f[1] != id || f[2]+" "+f[3] != "Offboarding "+id || f[4] != at {
			t.Errorf("row %q, want org1 %s Offboarding %s %s", row, id, id, at)
		}
	}
	if want := "sweep org1 (dry run: nothing published): 5 scanned, 3 due, 0 published, 0 duplicates, 2 skipped (2 archived after the cutoff)"; lines[4] != want {
		t.Errorf("summary %q, want %q", lines[4], want)
	}
}

// TestSweepJSON: --json is one document with every org's counts and due
// runs.
func TestSweepJSON(t *testing.T) {
	e := newSweepEnv(t, "TALLYFY_ALLOWED_ORGS", "org1,org2")
	e.provision()
	e.archived("org1", 0, 2, 100)
	e.archived("org2", 0, 3, 100)
	e.api.AddRun("org2", "active", false)
	code, out, errOut := e.tool("sweep", "--archived-for", "90d", "--org", "org1", "--org", "org2", "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var doc struct {
		DryRun bool      `json:"dry_run"`
		Cutoff time.Time `json:"cutoff"`
		Orgs   []struct {
			ops.SweepResult
			Error string `json:"error"`
		} `json:"orgs"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if doc.DryRun || len(doc.Orgs) != 2 || doc.Orgs[0].Org != "org1" || doc.Orgs[1].Org != "org2" {
		t.Fatalf("%s", out)
	}
	o := doc.Orgs[1]
	if o.Due != 3 || o.Published != 3 || o.Scanned != 3 || !o.Complete || o.Filter != "archived=only" || len(o.Runs) != 3 ||
		o.Runs[0].Status != ops.RunPublished || o.Runs[0].RunID != "r0000" || o.RequestID != "sweep-org2-"+time.Now().UTC().Format("2006-01-02") {
		t.Errorf("org2 %+v", o)
	}
	if d := time.Since(doc.Cutoff) - 90*24*time.Hour; d < 0 || d > time.Minute {
		t.Errorf("cutoff %s, want 90 days ago", doc.Cutoff)
	}
	if n := e.msgs(worker.DefaultJobsStream); n != 5 {
		t.Errorf("jobs stream holds %d, want 5", n)
	}
}

// TestSweepPageFailure: a page that fails after its retries stops the
// sweep with exit status 1 and says how far it got; what was found before
// stays enqueued.
func TestSweepPageFailure(t *testing.T) {
	e := newSweepEnv(t)
	e.provision()
	e.archived("org1", 0, 250, 100)
	var down []testutil.Response
	for range 10 {
		down = append(down, testutil.Response{Status: 500, Body: `{"error":true,"message":"Server Error"}`})
	}
	e.api.ScriptList("org1", 2, down...)
	code, out, errOut := e.tool("sweep", "--archived-for", "90d")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"stopped at page 2: tallyfy: 500 Internal Server Error: Server Error", "(tried 4 times)", "1 pages were read", "100 due runs were enqueued", "page 2 and later were not looked at", "asking again in"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr does not say %q:\n%s", want, errOut)
		}
	}
	if !strings.Contains(out, "100 scanned, 100 due, 100 published") {
		t.Errorf("summary:\n%s", out)
	}
	if n := e.msgs(worker.DefaultJobsStream); n != 100 {
		t.Errorf("jobs stream holds %d, want 100", n)
	}
	if strings.Contains(out+errOut, e.api.Token()) {
		t.Errorf("the token is in the output")
	}
}

// TestSweepLimitAcrossOrgs: --limit counts due runs over every org; an org
// after the limit is not swept.
func TestSweepLimitAcrossOrgs(t *testing.T) {
	e := newSweepEnv(t, "TALLYFY_ALLOWED_ORGS", "*")
	e.provision()
	e.archived("org1", 0, 3, 100)
	e.archived("org2", 0, 3, 100)
	e.archived("org3", 0, 3, 100)
	code, out, errOut := e.tool("sweep", "--archived-for", "90d", "--org", "org1,org2", "--org", "org3", "--limit", "5")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "sweep org1: 3 scanned, 3 due") || !strings.Contains(out, "sweep org2: 2 scanned, 2 due") || strings.Contains(out, "org3") {
		t.Errorf("output:\n%s", out)
	}
	if !strings.Contains(errOut, "org3 not swept: --limit 5 reached") {
		t.Errorf("stderr:\n%s", errOut)
	}
	if n := e.msgs(worker.DefaultJobsStream); n != 5 {
		t.Errorf("jobs stream holds %d, want 5", n)
	}
}

// TestSweepRefusesBadUsage: exit status 2, one line naming the flag or
// setting, no request to Tallyfy, nothing published; never the token.
func TestSweepRefusesBadUsage(t *testing.T) {
	future := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"no cutoff", nil, nil, "there is no default cutoff"},
		{"both cutoffs", nil, []string{"--archived-for", "90d", "--archived-before", "2020-01-01T00:00:00Z"}, "not both"},
		{"bad time", nil, []string{"--archived-before", "2020-01-01"}, "--archived-before \"2020-01-01\" is not an RFC 3339 time"},
		{"bad duration", nil, []string{"--archived-for", "90x"}, "--archived-for \"90x\""},
		{"zero duration", nil, []string{"--archived-for", "0d"}, "--archived-for \"0d\""},
		{"negative duration", nil, []string{"--archived-for", "-5h"}, "--archived-for \"-5h\""},
		{"future cutoff", nil, []string{"--archived-before", future}, "in the future"},
		{"org not allowed", nil, []string{"--archived-for", "90d", "--org", "org2"}, "--org org2 is not allowed by TALLYFY_ALLOWED_ORGS"},
		{"org not an ID", []string{"TALLYFY_ALLOWED_ORGS", "*"}, []string{"--archived-for", "90d", "--org", "a/b"}, "--org \"a/b\""},
		{"no org", []string{"TALLYFY_ORG_ID", "", "TALLYFY_ALLOWED_ORGS", "org1"}, []string{"--archived-for", "90d"}, "no organization"},
		{"bad checklist", nil, []string{"--archived-for", "90d", "--checklist", "x y"}, "--checklist"},
		{"bad tag", nil, []string{"--archived-for", "90d", "--tag", "x/y"}, "--tag"},
		{"bad request ID", nil, []string{"--archived-for", "90d", "--request-id", "a\x01b"}, "--request-id"},
		{"bad filter", nil, []string{"--archived-for", "90d", "--archived-filter", "archived=true"}, "--archived-filter"},
		{"negative limit", nil, []string{"--archived-for", "90d", "--limit", "-1"}, "out of range"},
		{"unknown flag", nil, []string{"--archived-for", "90d", "--everything"}, "see 'tallyfy-deleter sweep --help'"},
		{"arguments", nil, []string{"--archived-for", "90d", "org1"}, "takes no arguments"},
		{"no credentials", []string{"TALLYFY_ACCESS_TOKEN", ""}, []string{"--archived-for", "90d"}, "no credentials"},
		{"bad API URL", []string{"TALLYFY_API_URL", "ftp://x"}, []string{"--archived-for", "90d"}, "TALLYFY_API_URL"},
		{"burst without rate", []string{"DELETER_RATE_BURST", "3"}, []string{"--archived-for", "90d"}, "DELETER_RATE_BURST is set but DELETER_RATE_LIMIT is not"},
	}
	e := newSweepEnv(t)
	e.provision()
	e.archived("org1", 0, 3, 100)
	base := e.getenv
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			over := map[string]string{}
			for i := 0; i+1 < len(tc.env); i += 2 {
				over[tc.env[i]] = tc.env[i+1]
			}
			e.getenv = func(k string) string {
				if v, ok := over[k]; ok {
					return v
				}
				return base(k)
			}
			code, out, errOut := e.tool(append([]string{"sweep"}, tc.args...)...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, tc.want)
			}
			if out != "" || strings.Contains(errOut, e.api.Token()) {
				t.Errorf("stdout %q, stderr %q", out, errOut)
			}
		})
	}
	if n := e.api.RequestCount(); n != 0 {
		t.Errorf("%d requests to Tallyfy", n)
	}
	if n := e.msgs(worker.DefaultJobsStream); n != 0 {
		t.Errorf("%d jobs published", n)
	}
}

// TestSweepWithoutJobsStream: nothing is listed when there is nowhere to
// publish.
func TestSweepWithoutJobsStream(t *testing.T) {
	e := newSweepEnv(t)
	e.archived("org1", 0, 3, 100)
	code, _, errOut := e.tool("sweep", "--archived-for", "90d")
	if code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("exit %d\n%s", code, errOut)
	}
	if n := e.api.RequestCount(); n != 0 {
		t.Errorf("%d requests to Tallyfy", n)
	}
}

func TestSweepHelp(t *testing.T) {
	e := newSweepEnv(t)
	code, out, errOut := e.tool("sweep", "--help")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"--org", "--archived-before", "--archived-for", "--checklist", "--tag", "--limit", "--request-id", "--dry-run", "--json", "--archived-filter",
		"TALLYFY_ACCESS_TOKEN_FILE", "TALLYFY_ALLOWED_ORGS", "DELETER_RATE_LIMIT", "DELETER_API_TIMEOUT", "NATS_URL", "there is\nno default cutoff"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help does not show %q", want)
		}
	}
}
