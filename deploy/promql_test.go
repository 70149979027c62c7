package deploy

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

var promQL = parser.NewParser(parser.Options{})

// notExported are the metrics the alerts and the dashboard use that the worker does not export,
// each with why a worker's own metrics cannot say it. Every other metric they name must be in a
// running worker's /metrics (TestWorkerOnNACKStreams).
var notExported = map[string]string{
	// Prometheus's own series per target: a worker that is not running, or that Prometheus
	// cannot reach, exports nothing at all.
	"up": "Prometheus: whether a worker was scraped (TallyfyDeleterMetricsAbsent; the dashboard's Workers scraped)",
	// kube-state-metrics: readiness is the kubelet's verdict from /readyz, which the worker
	// serves but does not export as a metric (not connected to NATS, consumer not bound).
	"kube_deployment_status_replicas_ready": "kube-state-metrics: the Deployment's ready pods (TallyfyDeleterNoReadyWorker, TallyfyDeleterBacklogNotShrinking)",
}

// targetLabels are the labels Prometheus gives every series of a ServiceMonitor's targets.
var targetLabels = []string{"job", "instance", "namespace", "pod", "service", "endpoint", "container"}

// promExpr is one PromQL expression and where it is.
type promExpr struct {
	where string
	expr  string
}

// metricUse is one metric an expression selects, with the labels it matches or groups it by.
type metricUse struct {
	where  string
	metric string
	labels []string
	equals map[string]string // label: value, of the equality matchers
}

// uses parses e and lists the metrics it selects.
func uses(e promExpr) ([]metricUse, error) {
	node, err := promQL.ParseExpr(e.expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", e.where, err, e.expr)
	}
	var out []metricUse
	var walk func(n parser.Node, grouping []string)
	walk = func(n parser.Node, grouping []string) {
		switch n := n.(type) {
		case *parser.VectorSelector:
			u := metricUse{where: e.where, metric: n.Name, equals: map[string]string{}, labels: slices.Clone(grouping)}
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					if u.metric == "" && m.Type == labels.MatchEqual {
						u.metric = m.Value
					}
					continue
				}
				u.labels = append(u.labels, m.Name)
				if m.Type == labels.MatchEqual && m.Value != "" {
					u.equals[m.Name] = m.Value
				}
			}
			out = append(out, u)
			return
		case *parser.AggregateExpr:
			g := grouping
			if !n.Without {
				g = append(slices.Clone(grouping), n.Grouping...)
			}
			walk(n.Expr, g)
			if n.Param != nil {
				walk(n.Param, grouping)
			}
			return
		case *parser.BinaryExpr:
			g := grouping
			if n.VectorMatching != nil && n.VectorMatching.On {
				g = append(slices.Clone(grouping), n.VectorMatching.MatchingLabels...)
			}
			walk(n.LHS, g)
			walk(n.RHS, g)
			return
		}
		for _, c := range parser.Children(n) {
			walk(c, grouping)
		}
	}
	walk(node, nil)
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: selects no metric: %s", e.where, e.expr)
	}
	return out, nil
}

// prometheusRule is the base's PrometheusRule, decoded strictly.
func prometheusRule(t testing.TB) *monitoringv1.PrometheusRule {
	t.Helper()
	return mustCheck[*monitoringv1.PrometheusRule](t, one(t, render(t, baseDir), "PrometheusRule", "tallyfy-deleter"))
}

// ruleExprs are the alerts' expressions.
func ruleExprs(t testing.TB) []promExpr {
	t.Helper()
	var out []promExpr
	for _, g := range prometheusRule(t).Spec.Groups {
		for _, r := range g.Rules {
			out = append(out, promExpr{where: "alert " + r.Alert + r.Record, expr: r.Expr.String()})
		}
	}
	return out
}

// TestAlertRules: the PrometheusRule's spec is a valid Prometheus rules file (checked as promtool
// checks one: strict fields, expressions, label and annotation templates), and each alert tells
// the person paged what it is and where to look first.
func TestAlertRules(t *testing.T) {
	var raw struct {
		Spec any `json:"spec"`
	}
	if err := json.Unmarshal(one(t, render(t, baseDir), "PrometheusRule", "tallyfy-deleter").JSON, &raw); err != nil {
		t.Fatal(err)
	}
	rulesFile, err := yaml.Marshal(raw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, errs := rulefmt.Parse(rulesFile, false, model.UTF8Validation, promQL, slog.New(slog.DiscardHandler)); len(errs) > 0 {
		t.Fatalf("the PrometheusRule's spec is not a valid rules file: %v", errs)
	}

	rule := prometheusRule(t)
	d, _ := workloads(t)
	svc := mustCheck[*corev1.Service](t, one(t, render(t, baseDir), "Service", "tallyfy-deleter"))
	alerts := map[string]monitoringv1.Rule{}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = r
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: a summary and a description are needed", r.Alert)
			}
			// What to look at first: a command to run, a log field to grep.
			if !strings.Contains(r.Annotations["description"], "`") {
				t.Errorf("%s: the description names no command to run first", r.Alert)
			}
			us, err := uses(promExpr{where: r.Alert, expr: r.Expr.String()})
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range us {
				if j, ok := u.equals["job"]; ok && j != svc.Name {
					t.Errorf("%s: job=%q, but the ServiceMonitor's targets are job %q (the Service's name)", r.Alert, j, svc.Name)
				}
				if dep, ok := u.equals["deployment"]; ok && dep != d.Name {
					t.Errorf("%s: deployment=%q, but the Deployment is %q", r.Alert, dep, d.Name)
				}
			}
		}
	}
	for _, name := range []string{
		"TallyfyDeleterBreakerOpen",           // breaker open for more than a few minutes
		"TallyfyDeleterCredentialsRejected",   // credentials rejected
		"TallyfyDeleterCredentialsUnreadable", // or unreadable
		"TallyfyDeleterDeadLetters",           // dead letters arriving
		"TallyfyDeleterBacklogNotShrinking",   // backlog not shrinking while workers are ready
		"TallyfyDeleterNoReadyWorker",         // no ready worker
	} {
		if _, ok := alerts[name]; !ok {
			t.Errorf("no alert %s", name)
		}
	}
	if r, ok := alerts["TallyfyDeleterBreakerOpen"]; ok && (r.For == nil || *r.For == "0s" || *r.For == "") {
		t.Error("TallyfyDeleterBreakerOpen fires at once: a breaker opens and closes in normal operation; want for: a few minutes")
	}
	// The dead-letter alert says what to do for each reason the worker gives.
	desc := alerts["TallyfyDeleterDeadLetters"].Annotations["description"]
	for _, r := range worker.Reasons {
		if !strings.Contains(desc, fmt.Sprintf("eq $labels.reason %q", string(r))) {
			t.Errorf("TallyfyDeleterDeadLetters: no advice for reason %s", r)
		}
	}
	// Each kind of inability the worker reports has an alert.
	for _, i := range worker.Inabilities {
		found := false
		for _, r := range alerts {
			found = found || strings.Contains(r.Expr.String(), fmt.Sprintf("%q", i.String())) ||
				i == worker.BreakerNotClosed && strings.Contains(r.Expr.String(), "tallyfy_deleter_breaker_state")
		}
		if !found {
			t.Errorf("no alert on tallyfy_deleter_unable{reason=%q}", i)
		}
	}
}

// dashboard is what the tests read of a Grafana dashboard.
type dashboard struct {
	UID        string           `json:"uid"`
	Title      string           `json:"title"`
	Panels     []dashboardPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type dashboardPanel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	Datasource *datasourceRef   `json:"datasource"`
	Panels     []dashboardPanel `json:"panels"` // a row's
	Targets    []struct {
		Datasource *datasourceRef `json:"datasource"`
		Expr       string         `json:"expr"`
		RefID      string         `json:"refId"`
	} `json:"targets"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// loadDashboard reads grafana/tallyfy-deleter.json.
func loadDashboard(t testing.TB) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(grafanaDir, "tallyfy-deleter.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("tallyfy-deleter.json: %v", err)
	}
	return d
}

// grafanaVars replaces Grafana's variables with what they expand to at query time. A variable
// not in the dashboard's templating (nor one of Grafana's own) stays, and fails the parse.
func grafanaVars(d dashboard, expr string) string {
	own := map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "6h"}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			own[v.Name] = "default"
		}
	}
	return regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`).ReplaceAllStringFunc(expr, func(m string) string {
		name := strings.Trim(m, "${}")
		if v, ok := own[name]; ok {
			return v
		}
		return m
	})
}

// dashboardExprs are the dashboard's queries, variables expanded: every panel target's, and the
// metric selector of each label_values() variable.
func dashboardExprs(t testing.TB) []promExpr {
	t.Helper()
	d := loadDashboard(t)
	var out []promExpr
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, promExpr{where: fmt.Sprintf("panel %q, %s", p.Title, tg.RefID), expr: grafanaVars(d, tg.Expr)})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, q.Query)
		}
		out = append(out, promExpr{where: "variable " + v.Name, expr: fmt.Sprintf("count by (%s) (%s)", m[2], m[1])})
	}
	return out
}

// TestDashboard: every query parses, every panel reads the datasource variable, and the panels
// the task asks for are there.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid (stable links, the sidecar's updates) and a title")
	}
	var dsVar bool
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Name == "datasource" && string(v.Query) == `"prometheus"` {
			dsVar = true
		}
		if v.Datasource != nil && v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s: datasource %+v, want the datasource variable", v.Name, *v.Datasource)
		}
	}
	if !dsVar {
		t.Error("no datasource variable of type prometheus")
	}
	ids := map[int]string{}
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			if p.Type != "row" && (p.Datasource == nil || p.Datasource.UID != "${datasource}") {
				t.Errorf("panel %q: datasource %+v, want the datasource variable", p.Title, p.Datasource)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q, %s: datasource %+v, want the datasource variable", p.Title, tg.RefID, tg.Datasource)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)

	var all []metricUse
	for _, e := range dashboardExprs(t) {
		us, err := uses(e)
		if err != nil {
			t.Error(err)
			continue
		}
		all = append(all, us...)
	}
	has := func(metric string, label string, equals map[string]string) bool {
		for _, u := range all {
			if u.metric != metric || (label != "" && !slices.Contains(u.labels, label)) {
				continue
			}
			ok := true
			for k, v := range equals {
				ok = ok && u.equals[k] == v
			}
			if ok {
				return true
			}
		}
		return false
	}
	for _, want := range []struct {
		what, metric, label string
		equals              map[string]string
	}{
		{"jobs per second by outcome", "tallyfy_deleter_jobs_total", "outcome", nil},
		{"dead letters by reason", "tallyfy_deleter_jobs_total", "reason", map[string]string{"outcome": "dead_lettered"}},
		{"backlog", "tallyfy_deleter_consumer_pending", "", nil},
		{"ack pending", "tallyfy_deleter_consumer_ack_pending", "", nil},
		{"API latency percentiles", "tallyfy_deleter_api_request_duration_seconds_bucket", "le", nil},
		{"API status codes", "tallyfy_deleter_api_requests_total", "code", nil},
		{"breaker state per worker", "tallyfy_deleter_breaker_state", "pod", nil},
		{"jobs in flight", "tallyfy_deleter_jobs_in_flight", "", nil},
	} {
		if !has(want.metric, want.label, want.equals) {
			t.Errorf("no panel shows %s (%s by %s)", want.what, want.metric, want.label)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(grafanaDir, "tallyfy-deleter.json")); !strings.Contains(string(b), "histogram_quantile(") {
		t.Error("no percentile panel (histogram_quantile)")
	}
}

// allUses are the metrics every alert and dashboard query selects.
func allUses(t testing.TB) []metricUse {
	t.Helper()
	var out []metricUse
	for _, e := range append(ruleExprs(t), dashboardExprs(t)...) {
		us, err := uses(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, us...)
	}
	return out
}
