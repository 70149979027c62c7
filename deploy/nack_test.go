package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	jsm "github.com/nats-io/jsm.go"
	nackv1beta2 "github.com/nats-io/nack/pkg/jetstream/apis/jetstream/v1beta2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// clusterReplicas are the streams' replicas: NACK's streams are for a three-node JetStream
// cluster, as the README has the worker create them there (DELETER_STREAM_REPLICAS=3).
const clusterReplicas = 3

// provisioning is the worker.Config whose StreamConfigs and ConsumerConfig the NACK resources
// must equal: the defaults, changed by whatever the Deployment sets that the worker provisions
// from, with clusterReplicas. (The Deployment runs with DELETER_PROVISION=false: these are what
// the same worker would create if it were let.)
func provisioning(t testing.TB) worker.Config {
	t.Helper()
	d, _ := workloads(t)
	env := containerEnv(t, onlyContainer(t, &d.Spec.Template.Spec), "pod-0")
	cfg := worker.Config{Replicas: clusterReplicas}
	str := map[string]*string{
		"DELETER_JOBS_STREAM": &cfg.JobsStream, "DELETER_JOBS_SUBJECT": &cfg.JobsSubject,
		"DELETER_CONSUMER": &cfg.Consumer, "DELETER_RESULTS_STREAM": &cfg.ResultsStream,
		"DELETER_RESULTS_SUBJECT": &cfg.ResultsSubject, "DELETER_DLQ_STREAM": &cfg.DLQStream,
		"DELETER_DLQ_SUBJECT": &cfg.DLQSubject,
	}
	dur := map[string]*time.Duration{
		"DELETER_ACK_WAIT": &cfg.AckWait, "DELETER_DUPLICATE_WINDOW": &cfg.DuplicateWindow,
		"DELETER_RESULTS_MAX_AGE": &cfg.ResultsMaxAge,
	}
	num := map[string]*int{"DELETER_MAX_DELIVER": &cfg.MaxDeliver, "DELETER_STREAM_REPLICAS": &cfg.Replicas}
	for k, v := range env {
		var err error
		switch {
		case str[k] != nil:
			*str[k] = v
		case dur[k] != nil:
			*dur[k], err = time.ParseDuration(v)
		case num[k] != nil:
			*num[k], err = strconv.Atoi(v)
		case k == "DELETER_BACKOFF":
			for _, s := range strings.Split(v, ",") {
				d, perr := time.ParseDuration(strings.TrimSpace(s))
				err = perr
				cfg.Backoff = append(cfg.Backoff, d)
			}
		}
		if err != nil {
			t.Fatalf("the Deployment's %s=%q: %v", k, v, err)
		}
	}
	// Organizations play no part in what is provisioned; Validate needs some.
	cfg.AllowedOrgs = []string{"*"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the Deployment's settings do not validate: %v", err)
	}
	return cfg
}

// nackResources are the base's Streams and its Consumer, checked against NACK's CRD, whose
// defaults they then carry as the API server would give them to NACK.
func nackResources(t testing.TB) (map[string]*nackv1beta2.Stream, *nackv1beta2.Consumer) {
	t.Helper()
	objs := render(t, baseDir)
	streams := map[string]*nackv1beta2.Stream{}
	for _, o := range objs {
		if o.Kind == "Stream" {
			s := mustCheck[*nackv1beta2.Stream](t, o)
			streams[s.Spec.Name] = s
		}
	}
	return streams, mustCheck[*nackv1beta2.Consumer](t, one(t, objs, "Consumer", ""))
}

// nackStreamConfig is the stream NACK creates for spec: jsm.DefaultStream with NACK's options,
// as the server reads it.
func nackStreamConfig(t testing.TB, spec nackv1beta2.StreamSpec) jetstream.StreamConfig {
	t.Helper()
	opts, err := nackStreamOptions(spec)
	if err != nil {
		t.Fatalf("NACK would refuse stream %s: %v", spec.Name, err)
	}
	c, err := jsm.NewStreamConfiguration(jsm.DefaultStream, opts...)
	if err != nil {
		t.Fatalf("NACK would refuse stream %s: %v", spec.Name, err)
	}
	c.Name = spec.Name
	var out jetstream.StreamConfig
	viaJSON(t, c, &out)
	return out
}

// nackConsumerConfig is the consumer NACK creates for spec: jsm.DefaultConsumer with NACK's
// options.
func nackConsumerConfig(t testing.TB, spec nackv1beta2.ConsumerSpec) jetstream.ConsumerConfig {
	t.Helper()
	opts, err := consumerSpecToOpts(spec)
	if err != nil {
		t.Fatalf("NACK would refuse consumer %s: %v", spec.DurableName, err)
	}
	c, err := jsm.NewConsumerConfiguration(jsm.DefaultConsumer, opts...)
	if err != nil {
		t.Fatalf("NACK would refuse consumer %s: %v", spec.DurableName, err)
	}
	var out jetstream.ConsumerConfig
	viaJSON(t, c, &out)
	return out
}

// viaJSON converts between jsm.go's and nats.go's types of one JetStream API document.
func viaJSON(t testing.TB, from, to any) {
	t.Helper()
	b, err := json.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, to); err != nil {
		t.Fatal(err)
	}
}

// differences lists, by field name, where got differs from want: in every field, or (setOnly)
// in the fields want sets.
func differences(want, got any, setOnly bool) []string {
	wv, gv := reflect.ValueOf(want), reflect.ValueOf(got)
	var out []string
	for i := range wv.NumField() {
		f := wv.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		w, g := wv.Field(i), gv.Field(i)
		if setOnly && w.IsZero() {
			continue
		}
		if !reflect.DeepEqual(w.Interface(), g.Interface()) && !sameMeaning(w, g) {
			out = append(out, fmt.Sprintf("%s: worker %s, NACK %s", f.Name, show(w), show(g)))
		}
	}
	return out
}

// sameMeaning says whether two values of a field that differ mean the same to the server. The
// one case: a time pointer that is nil or the zero time, "not paused" for PauseUntil (jsm.go's
// api.ConsumerConfig has a time.Time there, which omitempty does not omit, so NACK always sends
// 0001-01-01T00:00:00Z).
func sameMeaning(a, b reflect.Value) bool {
	zeroTime := func(v reflect.Value) bool {
		tp, ok := v.Interface().(*time.Time)
		return ok && (tp == nil || tp.IsZero())
	}
	return zeroTime(a) && zeroTime(b)
}

func show(v reflect.Value) string {
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if d, ok := v.Interface().(time.Duration); ok {
		return d.String()
	}
	b, err := json.Marshal(v.Interface())
	if err != nil {
		return fmt.Sprint(v.Interface())
	}
	return string(b)
}

// TestNACKResourcesAsWritten: every setting the worker gives its streams and consumer, NACK
// gives them too; what the CRD or jsm.go would default differently is spelled out.
func TestNACKResourcesAsWritten(t *testing.T) {
	cfg := provisioning(t)
	jobs, results, dlq := cfg.StreamConfigs()
	streams, cons := nackResources(t)
	if len(streams) != 3 {
		t.Errorf("%d Streams; want the jobs, results and dead-letter streams", len(streams))
	}
	for _, want := range []jetstream.StreamConfig{jobs, results, dlq} {
		t.Run(want.Name, func(t *testing.T) {
			s, ok := streams[want.Name]
			if !ok {
				t.Fatalf("no Stream resource for %s", want.Name)
			}
			for _, d := range differences(want, nackStreamConfig(t, s.Spec), true) {
				t.Error(d)
			}
			if !s.Spec.PreventDelete {
				t.Error("preventDelete is false: deleting the resource would delete the stream, with its jobs, results or dead letters")
			}
		})
	}
	t.Run("consumer", func(t *testing.T) {
		want := cfg.ConsumerConfig()
		if cons.Spec.StreamName != jobs.Name {
			t.Errorf("streamName %s, want the jobs stream %s", cons.Spec.StreamName, jobs.Name)
		}
		for _, d := range differences(want, nackConsumerConfig(t, cons.Spec), true) {
			t.Error(d)
		}
	})

	// NACK's two modes, and the CRD, default what is left out differently (the experimental
	// control loop keeps messages for a year without maxAge; the CRD's ackWait is 1ns, its
	// ackPolicy none, its storage memory): the source files leave nothing the worker relies on
	// to a default.
	spelled := map[string][]string{
		"Stream":   {"name", "description", "subjects", "retention", "storage", "replicas", "maxAge", "discard", "duplicateWindow"},
		"Consumer": {"streamName", "durableName", "description", "filterSubject", "deliverPolicy", "ackPolicy", "ackWait", "maxDeliver", "maxAckPending"},
	}
	for _, f := range []string{"kubernetes/streams.yaml", "kubernetes/consumer.yaml"} {
		for _, o := range readDocs(t, f) {
			var raw struct {
				Spec map[string]any `json:"spec"`
			}
			if err := json.Unmarshal(o.JSON, &raw); err != nil {
				t.Fatal(err)
			}
			for _, k := range spelled[o.Kind] {
				if _, ok := raw.Spec[k]; !ok {
					t.Errorf("%s: spec.%s is left to a default", o, k)
				}
			}
		}
	}
}

// TestNACKResourcesOnAServer: created on a JetStream server, as NACK creates them (jsm.go's
// Manager), the streams and the consumer are stored exactly as those the worker creates (with
// one replica each: the server is alone).
func TestNACKResourcesOnAServer(t *testing.T) {
	cfg := provisioning(t)
	cfg.Replicas = 1
	jobs, results, dlq := cfg.StreamConfigs()
	streams, cons := nackResources(t)
	nc, js := testutil.Connect(t, testutil.JetStream(t).URL())
	mgr, err := jsm.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	stored := func(name string) jetstream.StreamConfig {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config
	}
	for _, w := range []jetstream.StreamConfig{jobs, results, dlq} {
		t.Run(w.Name, func(t *testing.T) {
			if _, err := js.CreateStream(ctx, w); err != nil {
				t.Fatalf("the worker's stream: %v", err)
			}
			byWorker := stored(w.Name)
			if err := js.DeleteStream(ctx, w.Name); err != nil {
				t.Fatal(err)
			}
			spec := streams[w.Name].Spec
			spec.Replicas = 1
			opts, err := nackStreamOptions(spec)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := mgr.NewStream(spec.Name, opts...); err != nil {
				t.Fatalf("NACK's stream: %v", err)
			}
			for _, d := range differences(byWorker, stored(w.Name), false) {
				t.Error(d)
			}
			if err := js.DeleteStream(ctx, w.Name); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("consumer", func(t *testing.T) {
		if _, err := js.CreateStream(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		wc := cfg.ConsumerConfig()
		c, err := js.CreateConsumer(ctx, jobs.Name, wc)
		if err != nil {
			t.Fatalf("the worker's consumer: %v", err)
		}
		byWorker := c.CachedInfo().Config
		if err := js.DeleteConsumer(ctx, jobs.Name, wc.Durable); err != nil {
			t.Fatal(err)
		}
		opts, err := consumerSpecToOpts(cons.Spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mgr.NewConsumer(cons.Spec.StreamName, opts...); err != nil {
			t.Fatalf("NACK's consumer: %v", err)
		}
		c, err = js.Consumer(ctx, jobs.Name, cons.Spec.DurableName)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range differences(byWorker, c.CachedInfo().Config, false) {
			t.Error(d)
		}
	})
}

// applyNACK creates the base's streams and consumer on the server nc is connected to, as NACK
// would, with one replica each.
func applyNACK(t testing.TB, nc *nats.Conn) {
	t.Helper()
	mgr, err := jsm.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	streams, cons := nackResources(t)
	names := keysOf(streams)
	slices.Sort(names)
	for _, name := range names {
		spec := streams[name].Spec
		spec.Replicas = 1
		opts, err := nackStreamOptions(spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mgr.NewStream(spec.Name, opts...); err != nil {
			t.Fatalf("stream %s as NACK creates it: %v", name, err)
		}
	}
	opts, err := consumerSpecToOpts(cons.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.NewConsumer(cons.Spec.StreamName, opts...); err != nil {
		t.Fatalf("consumer %s as NACK creates it: %v", cons.Spec.DurableName, err)
	}
}
