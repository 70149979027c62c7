package testutil_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func createJobs(t *testing.T, ctx context.Context, js jetstream.JetStream, replicas int) jetstream.Stream {
	t.Helper()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     "JOBS",
		Subjects: []string{"jobs.>"},
		Storage:  jetstream.FileStorage,
		Replicas: replicas,
	})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return s
}

func publish(t *testing.T, ctx context.Context, js jetstream.JetStream, n int) {
	t.Helper()
	for i := range n {
		if _, err := js.Publish(ctx, "jobs.delete", []byte{byte('0' + i)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func msgs(t *testing.T, ctx context.Context, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

func TestJetStream(t *testing.T) {
	ns := testutil.JetStream(t)
	if !strings.HasPrefix(ns.URL(), "nats://127.0.0.1:") {
		t.Fatalf("URL = %q, want nats://127.0.0.1:<port>", ns.URL())
	}
	_, js := testutil.Connect(t, ns.URL())
	ctx := ctxTimeout(t, 10*time.Second)

	s := createJobs(t, ctx, js, 1)
	publish(t, ctx, js, 2)
	if got := msgs(t, ctx, s); got != 2 {
		t.Fatalf("stream holds %d messages, want 2", got)
	}
}

func TestRestartKeepsMessagesAndClientReconnects(t *testing.T) {
	ns := testutil.JetStream(t)
	url := ns.URL()
	reconnected := make(chan struct{}, 1)
	// Only a handler is added: the reconnect behaviour is nats.go's default.
	nc, js := testutil.Connect(t, url, nats.ReconnectHandler(func(*nats.Conn) {
		select {
		case reconnected <- struct{}{}:
		default:
		}
	}))
	ctx := ctxTimeout(t, 20*time.Second)
	s := createJobs(t, ctx, js, 1)
	publish(t, ctx, js, 3)

	before := ns.Server()
	if err := ns.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if ns.URL() != url {
		t.Fatalf("URL changed across restart: %q, then %q", url, ns.URL())
	}
	if ns.Server() == before || !ns.Server().Running() {
		t.Fatal("Server() is not a new, running server after Restart")
	}

	select {
	case <-reconnected:
	case <-ctx.Done():
		t.Fatalf("client did not reconnect: status %v", nc.Status())
	}
	if got := msgs(t, ctx, s); got != 3 {
		t.Fatalf("after restart the stream holds %d messages, want 3", got)
	}
	publish(t, ctx, js, 1)
	if got := msgs(t, ctx, s); got != 4 {
		t.Fatalf("after a publish the stream holds %d messages, want 4", got)
	}
}

func TestShutdownIsIdempotentAndRestartRevives(t *testing.T) {
	ns, err := testutil.StartNATS(testutil.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("StartNATS: %v", err)
	}
	defer ns.Shutdown()
	ns.Shutdown()
	ns.Shutdown()
	if ns.Server().Running() {
		t.Fatal("server still running after Shutdown")
	}
	if err := ns.Restart(); err != nil {
		t.Fatalf("Restart after Shutdown: %v", err)
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatalf("connect after Restart: %v", err)
	}
	nc.Close()
}

func TestStartNATSValidates(t *testing.T) {
	tests := []struct {
		name string
		opts testutil.NATSOptions
	}{
		{"no store", testutil.NATSOptions{}},
		{"negative port", testutil.NATSOptions{StoreDir: t.TempDir(), Port: -1}},
		{"cluster without name", testutil.NATSOptions{StoreDir: t.TempDir(), ServerName: "a", Cluster: &testutil.ClusterOptions{}}},
		{"cluster node without server name", testutil.NATSOptions{StoreDir: t.TempDir(), Cluster: &testutil.ClusterOptions{Name: "c"}}},
		{"bad route", testutil.NATSOptions{StoreDir: t.TempDir(), ServerName: "a", Cluster: &testutil.ClusterOptions{Name: "c", Routes: []string{"::"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, err := testutil.StartNATS(tt.opts)
			if err == nil {
				ns.Shutdown()
				t.Fatal("StartNATS succeeded, want an error")
			}
		})
	}
}

func TestJetStreamCluster(t *testing.T) {
	nodes := testutil.JetStreamCluster(t, 3)
	leaders := 0
	for _, n := range nodes {
		if n.Server().JetStreamIsLeader() {
			leaders++
		}
	}
	if leaders == 0 {
		t.Fatal("no meta leader")
	}
	url := testutil.ClusterURL(nodes)
	if got := strings.Count(url, ","); got != 2 {
		t.Fatalf("ClusterURL = %q, want 3 URLs", url)
	}

	_, js := testutil.Connect(t, url)
	ctx := ctxTimeout(t, 20*time.Second)
	s := createJobs(t, ctx, js, 3)
	publish(t, ctx, js, 1)
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream cluster info = %+v, want a leader and 2 replicas", info.Cluster)
	}

	// A node restarted on its own store rejoins, and the stream survives.
	if err := nodes[0].Restart(); err != nil {
		t.Fatalf("restart node: %v", err)
	}
	if err := testutil.WaitClusterReady(ctx, nodes); err != nil {
		t.Fatal(err)
	}
	publish(t, ctx, js, 1)
	if got := msgs(t, ctx, s); got != 2 {
		t.Fatalf("stream holds %d messages, want 2", got)
	}
}
