package testutil

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil/servers"
)

// The servers' types, under the names tests have always used.
type (
	NATS           = servers.NATS
	NATSOptions    = servers.NATSOptions
	ClusterOptions = servers.ClusterOptions
	FakeTallyfy    = servers.FakeTallyfy
	Response       = servers.Response
	RunSpec        = servers.RunSpec
)

// StartNATS is servers.StartNATS, for a test that stops the server itself.
func StartNATS(opts NATSOptions) (*NATS, error) { return servers.StartNATS(opts) }

// StartFakeTallyfy is servers.StartFakeTallyfy, for a test that closes the
// fake itself.
func StartFakeTallyfy() *FakeTallyfy { return servers.StartFakeTallyfy() }

// ClusterURL is servers.ClusterURL: every node's URL, comma-separated.
func ClusterURL(nodes []*NATS) string { return servers.ClusterURL(nodes) }

// WaitClusterReady is servers.WaitClusterReady.
func WaitClusterReady(ctx context.Context, nodes []*NATS) error {
	return servers.WaitClusterReady(ctx, nodes)
}

// JetStream starts a single server on a random port with its store in a
// temporary directory, and shuts it down when the test ends.
func JetStream(t testing.TB) *NATS {
	t.Helper()
	n, err := servers.StartNATS(servers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("testutil.JetStream: %v", err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

// Connect connects to url and opens its JetStream context; the connection is
// closed when the test ends. Without opts the client keeps nats.go's
// defaults, reconnect behaviour included, which is what production code
// gets too.
func Connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("testutil.Connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testutil.Connect: jetstream: %v", err)
	}
	return nc, js
}

// JetStreamCluster starts an n-node JetStream cluster in this process, each
// node with its own temporary store, and waits until the nodes have elected a
// meta leader and all of them are current. The nodes are shut down when the
// test ends. Connect to ClusterURL(nodes) to fail over between them.
func JetStreamCluster(t testing.TB, n int) []*NATS {
	t.Helper()
	if n < 2 {
		t.Fatalf("testutil.JetStreamCluster: %d nodes; a cluster needs 2 or more, use JetStream for one server", n)
	}
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	nodes, err := servers.StartNATSClusterDirs(dirs)
	if err != nil {
		t.Fatalf("testutil.JetStreamCluster: %v", err)
	}
	t.Cleanup(func() { servers.ShutdownAll(nodes) })
	return nodes
}

// NewFakeTallyfy starts the fake and closes it when the test ends.
func NewFakeTallyfy(t testing.TB) *FakeTallyfy {
	t.Helper()
	f := servers.StartFakeTallyfy()
	t.Cleanup(f.Close)
	return f
}
