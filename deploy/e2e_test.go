package deploy

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

// exposition is a /metrics page: each series name (a histogram's _bucket, _sum and _count) with
// its labels and the values seen for each.
type exposition map[string]map[string]map[string]bool

// scrape reads w's /metrics.
func scrape(t testing.TB, w *workerProc) (exposition, error) {
	t.Helper()
	resp, err := http.Get("http://" + w.addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	out := exposition{}
	add := func(name string, m *dto.Metric, extra ...string) {
		ls := out[name]
		if ls == nil {
			ls = map[string]map[string]bool{}
			out[name] = ls
		}
		for _, lp := range m.GetLabel() {
			if ls[lp.GetName()] == nil {
				ls[lp.GetName()] = map[string]bool{}
			}
			ls[lp.GetName()][lp.GetValue()] = true
		}
		for _, l := range extra {
			if ls[l] == nil {
				ls[l] = map[string]bool{}
			}
		}
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				add(name+"_bucket", m, "le")
				add(name+"_sum", m)
				add(name+"_count", m)
			case dto.MetricType_SUMMARY:
				add(name, m, "quantile")
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return out, nil
}

// jobsFinished is the sum of tallyfy_deleter_jobs_total on w's /metrics.
func jobsFinished(w *workerProc) (float64, error) {
	resp, err := http.Get("http://" + w.addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	var n float64
	for _, m := range families["tallyfy_deleter_jobs_total"].GetMetric() {
		n += m.GetCounter().GetValue()
	}
	return n, nil
}

// TestWorkerOnNACKStreams runs the real binary as the base runs it, against an embedded
// JetStream whose streams and consumer were created as NACK creates them, and the fake Tallyfy:
// the sweep, with the CronJob's command and settings, enqueues what is due; the worker, with the
// Deployment's settings (DELETER_PROVISION=false), accepts NACK's streams and consumer, turns
// ready and finishes the jobs; and every metric the alerts and the dashboard use is on its
// /metrics, with the labels they match and group by, and the label values they compare with.
func TestWorkerOnNACKStreams(t *testing.T) {
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	nc, js := testutil.Connect(t, srv.URL())
	applyNACK(t, nc)

	const org = "org1"
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(api.Token()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// What the manifests point at in a cluster (the nats Service, Tallyfy, the Secret's file,
	// the placeholders to replace, a port of the pod's own), pointed at this test's.
	overrides := map[string]string{
		"NATS_URL":                  srv.URL(),
		"TALLYFY_API_URL":           api.URL(),
		"TALLYFY_ACCESS_TOKEN_FILE": token,
		"TALLYFY_ORG_ID":            org,
		"TALLYFY_ALLOWED_ORGS":      org,
	}
	d, cj := workloads(t)

	// The daily sweep: one run archived long enough ago, one not.
	api.AddRunWith(org, testutil.RunSpec{ID: "archived-long-ago", ArchivedAt: time.Now().AddDate(0, 0, -100)})
	api.AddRunWith(org, testutil.RunSpec{ID: "archived-yesterday", ArchivedAt: time.Now().AddDate(0, 0, -1)})
	sweep := onlyContainer(t, &cj.Spec.JobTemplate.Spec.Template.Spec)
	env := containerEnv(t, sweep, "tallyfy-deleter-sweep-29123-abcde")
	maps.Copy(env, overrides)
	stdout, stderr, code := runBinary(t, env, sweep.Args...)
	if code != 0 || !strings.Contains(stdout, "1 published") {
		t.Fatalf("the CronJob's sweep: exit status %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	// Two more jobs: a run that is not there, and a job that is not valid.
	jobs, _, _ := provisioning(t).StreamConfigs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, body := range []string{`{"org_id":"org1","run_id":"never-existed"}`, `{"org_id":"org1","run_id":"not an id!"}`} {
		if _, err := js.Publish(ctx, jobs.Subjects[0], []byte(body)); err != nil {
			t.Fatal(err)
		}
	}

	env = containerEnv(t, onlyContainer(t, &d.Spec.Template.Spec), "tallyfy-deleter-7d9f-abc")
	maps.Copy(env, overrides)
	env["DELETER_HTTP_ADDR"] = "127.0.0.1:0" // the pod's port is the host's here
	w := startWorker(t, env)
	eventually(t, 30*time.Second, func() string {
		resp, err := http.Get("http://" + w.addr + "/readyz")
		if err != nil {
			return err.Error()
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "/readyz: " + resp.Status
		}
		return ""
	})
	eventually(t, 30*time.Second, func() string {
		n, err := jobsFinished(w)
		if err != nil {
			return err.Error()
		}
		if n < 3 {
			return fmt.Sprintf("%v of 3 jobs finished", n)
		}
		return ""
	})
	if !api.Deleted(org, "archived-long-ago") || api.Deleted(org, "archived-yesterday") {
		t.Errorf("deleted: archived-long-ago %v (want true), archived-yesterday %v (want false)",
			api.Deleted(org, "archived-long-ago"), api.Deleted(org, "archived-yesterday"))
	}

	exposed, err := scrape(t, w)
	if err != nil {
		t.Fatal(err)
	}
	usedExceptions := map[string]bool{}
	for _, u := range allUses(t) {
		if _, ok := notExported[u.metric]; ok {
			usedExceptions[u.metric] = true
			continue
		}
		ls, ok := exposed[u.metric]
		if !ok {
			t.Errorf("%s: %s is not a metric the worker exports", u.where, u.metric)
			continue
		}
		for _, l := range u.labels {
			if _, ok := ls[l]; !ok && !slices.Contains(targetLabels, l) {
				t.Errorf("%s: %s has no label %q (it has %v)", u.where, u.metric, l, keysOf(ls))
			}
		}
		for l, v := range u.equals {
			if vals, ok := ls[l]; ok && !vals[v] {
				t.Errorf("%s: %s{%s=%q}: the worker gives %s the values %v", u.where, u.metric, l, v, l, keysOf(vals))
			}
		}
	}
	for m, why := range notExported {
		if !usedExceptions[m] {
			t.Errorf("notExported lists %s (%s), which nothing uses any more", m, why)
		}
	}
}
