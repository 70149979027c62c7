package deploy

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"

	nackv1beta2 "github.com/nats-io/nack/pkg/jetstream/apis/jetstream/v1beta2"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// scaledObject is what the tests read of a ScaledObject, after its CRD's schema has checked it.
type scaledObject struct {
	Spec struct {
		ScaleTargetRef struct {
			Name       string `json:"name"`
			Kind       string `json:"kind"`
			APIVersion string `json:"apiVersion"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// natsJetStreamMetadata is the nats-jetstream trigger's metadata as KEDA v2.20.2 reads it
// (pkg/scalers/nats_jetstream_scaler.go, natsJetStreamMetadata): the CRD types it as a map of
// strings, so a misspelled key would pass the schema and be ignored.
var natsJetStreamMetadata = map[string]bool{
	"natsServerMonitoringEndpoint": true, // required
	"account":                      true, // this or accountID is required
	"accountID":                    true,
	"stream":                       true, // required
	"consumer":                     true, // required
	"lagThreshold":                 true, // default 10
	"activationLagThreshold":       true, // default 0
	"useHttps":                     true,
}

// perReplicaHold is how many jobs one worker holds at most: its concurrency and its prefetch
// (README, "Scaling the pool": twice the concurrency, at least 16, at most 256).
func perReplicaHold(concurrency int) int { return worker.MaxHeld(concurrency) }

// TestScaledObjectBounds: KEDA scales the Deployment on the consumer the worker uses, never past
// what the consumer's max ack pending lets the pool hold, and not on the jobs the pool holds.
func TestScaledObjectBounds(t *testing.T) {
	objs := render(t, baseDir)
	raw := mustCheck[map[string]any](t, one(t, objs, "ScaledObject", "tallyfy-deleter"))
	var so scaledObject
	b, _ := json.Marshal(raw)
	if err := json.Unmarshal(b, &so); err != nil {
		t.Fatal(err)
	}
	d, _ := workloads(t)
	cons := mustCheck[*nackv1beta2.Consumer](t, one(t, objs, "Consumer", "tallyfy-deleter"))

	ref := so.Spec.ScaleTargetRef
	if ref.Name != d.Name || (ref.Kind != "" && ref.Kind != "Deployment") {
		t.Errorf("scaleTargetRef %+v: want the Deployment %s", ref, d.Name)
	}
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount != 3 {
		t.Errorf("minReplicaCount %v: want 3, the pool's size when idle (one per node)", so.Spec.MinReplicaCount)
	}
	if so.Spec.MaxReplicaCount == nil {
		t.Fatal("no maxReplicaCount: KEDA's default, 100, is past what max ack pending allows")
	}
	minR, maxR := *so.Spec.MinReplicaCount, *so.Spec.MaxReplicaCount
	if minR > maxR { // the CRD's CEL rule, which the schema checker cannot run
		t.Errorf("minReplicaCount %d > maxReplicaCount %d", minR, maxR)
	}

	env := containerEnv(t, onlyContainer(t, &d.Spec.Template.Spec), "pod-0")
	concurrency := worker.DefaultConcurrency
	if v, ok := env["DELETER_CONCURRENCY"]; ok {
		var err error
		if concurrency, err = strconv.Atoi(v); err != nil {
			t.Fatalf("DELETER_CONCURRENCY %q: %v", v, err)
		}
	}
	hold := perReplicaHold(concurrency)
	surge, err := intstr.GetScaledValueFromIntOrPercent(d.Spec.Strategy.RollingUpdate.MaxSurge, int(maxR), true)
	if err != nil {
		t.Fatal(err)
	}
	maxAckPending := cons.Spec.MaxAckPending
	if maxAckPending == 0 {
		maxAckPending = 1000 // the server's default
	}
	if most := (int(maxR) + surge) * hold; most >= maxAckPending {
		t.Errorf("(maxReplicaCount %d + maxSurge %d) x %d jobs per replica (DELETER_CONCURRENCY %d and its prefetch) = %d, not below the consumer's maxAckPending %d: the replicas past it would wait for jobs the server will not hand out",
			maxR, surge, hold, concurrency, most, maxAckPending)
	}

	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
		t.Fatalf("triggers %+v: want one nats-jetstream trigger", so.Spec.Triggers)
	}
	md := so.Spec.Triggers[0].Metadata
	for k := range md {
		if !natsJetStreamMetadata[k] {
			t.Errorf("trigger metadata %q: not a key KEDA's nats-jetstream scaler reads", k)
		}
	}
	for _, k := range []string{"natsServerMonitoringEndpoint", "stream", "consumer"} {
		if md[k] == "" {
			t.Errorf("trigger metadata %s: required", k)
		}
	}
	if md["account"] == "" && md["accountID"] == "" {
		t.Error("trigger metadata: account or accountID is required")
	}
	if md["stream"] != worker.DefaultJobsStream || md["stream"] != cons.Spec.StreamName {
		t.Errorf("trigger stream %q: want the jobs stream %s of consumer.yaml", md["stream"], cons.Spec.StreamName)
	}
	if md["consumer"] != worker.DefaultConsumer || md["consumer"] != cons.Spec.DurableName {
		t.Errorf("trigger consumer %q: want the durable %s of consumer.yaml", md["consumer"], cons.Spec.DurableName)
	}
	lag, err := strconv.Atoi(md["lagThreshold"])
	if err != nil {
		t.Fatalf("lagThreshold %q: %v", md["lagThreshold"], err)
	}
	// KEDA wants ceil((pending + ack pending) / lagThreshold) replicas. Each replica adds up to
	// hold jobs to ack pending by itself: below that, the pool's own jobs ask for more replicas.
	if lag <= hold {
		t.Errorf("lagThreshold %d: not above the %d jobs a replica holds; the pool would scale itself to maxReplicaCount", lag, hold)
	}
	if _, err := strconv.Atoi(md["activationLagThreshold"]); md["activationLagThreshold"] != "" && err != nil {
		t.Errorf("activationLagThreshold %q: %v", md["activationLagThreshold"], err)
	}

	// KEDA asks from its own namespace: the endpoint must name NATS's namespace, the one the
	// workers' NATS_URL names.
	ep := md["natsServerMonitoringEndpoint"]
	if strings.Contains(ep, "://") {
		t.Errorf("natsServerMonitoringEndpoint %q: host:port, without a scheme (useHttps says which)", ep)
	}
	u, err := url.Parse(env["NATS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	epHost, _, _ := strings.Cut(ep, ":")
	if namespaceOf(epHost) == "" || namespaceOf(epHost) != namespaceOf(u.Hostname()) {
		t.Errorf("natsServerMonitoringEndpoint %s and NATS_URL %s: want both <service>.<namespace>.svc... of the same namespace", ep, env["NATS_URL"])
	}
}

// namespaceOf is the namespace of a Service's name <service>.<namespace>.svc[.cluster.local].
func namespaceOf(host string) string {
	parts := strings.Split(host, ".")
	if len(parts) < 3 || parts[2] != "svc" {
		return ""
	}
	return parts[1]
}
