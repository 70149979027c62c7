package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// clusterReadyTimeout bounds the wait for a meta leader on the last attempt:
// long enough for a slow CI machine under -race to sit out Raft's election
// timeout (4-9 s) more than once.
const clusterReadyTimeout = 30 * time.Second

// electionGrace is how long a fresh cluster gets to elect its first meta
// leader before it is started again. Fresh nodes campaign within a second,
// but about one start in thirty that first election fails, and the next one
// waits out Raft's 4-9 s election timeout. nats-server's own test helpers
// cut that short with an unexported CampaignImmediately; from outside the
// package, starting over is quicker than waiting.
const electionGrace = 2 * time.Second

// clusterAttempts is how often a cluster start is tried: for a missed first
// election (above), and because route ports are chosen before the servers
// bind them, so another process can take one in between.
const clusterAttempts = 4

// StartNATSCluster is JetStreamCluster for programs: node i stores its files
// in storeDir/node-i. Stop the nodes with Shutdown.
func StartNATSCluster(storeDir string, n int) ([]*NATS, error) {
	if n < 2 {
		// A one-node cluster never reports its meta group current.
		return nil, fmt.Errorf("testutil: cluster of %d nodes; a cluster needs 2 or more", n)
	}
	if storeDir == "" {
		return nil, errors.New("testutil: StartNATSCluster needs a store directory")
	}
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = filepath.Join(storeDir, fmt.Sprintf("node-%d", i+1))
		if err := os.MkdirAll(dirs[i], 0o700); err != nil {
			return nil, fmt.Errorf("testutil: %w", err)
		}
	}
	return startCluster(dirs)
}

// ClusterURL joins the nodes' URLs with commas, the form nats.Connect (and
// NATS_URL) takes for a list of servers to fail over between.
func ClusterURL(nodes []*NATS) string {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// WaitClusterReady waits until the running nodes agree on a meta leader, the
// leader sees all of them, and each is current with the meta log: only then
// does creating a replicated stream succeed at once. Nodes that were shut
// down on purpose are left out, so it also serves after stopping or
// restarting a node.
func WaitClusterReady(ctx context.Context, nodes []*NATS) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := clusterReady(nodes)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testutil: cluster not ready: %v: %w", err, ctx.Err())
		case <-tick.C:
		}
	}
}

func clusterReady(nodes []*NATS) error {
	running := 0
	var leaderPeers []string
	for _, n := range nodes {
		s := n.Server()
		if !s.Running() {
			continue
		}
		running++
		if s.JetStreamIsLeader() {
			leaderPeers = s.JetStreamClusterPeers()
		}
		if !s.JetStreamIsCurrent() {
			return fmt.Errorf("node %s is not current", s.Name())
		}
	}
	if running == 0 {
		return errors.New("no node is running")
	}
	if leaderPeers == nil {
		return errors.New("no meta leader")
	}
	if len(leaderPeers) < running {
		return fmt.Errorf("meta leader sees %d of %d running nodes", len(leaderPeers), running)
	}
	return nil
}

// StartNATSClusterDirs starts a cluster of one node per directory, each
// storing its files there, and waits until it is ready.
func StartNATSClusterDirs(dirs []string) ([]*NATS, error) {
	if len(dirs) < 2 {
		return nil, fmt.Errorf("testutil: cluster of %d nodes; a cluster needs 2 or more", len(dirs))
	}
	return startCluster(dirs)
}

func startCluster(dirs []string) ([]*NATS, error) {
	var err error
	for attempt := 1; attempt <= clusterAttempts; attempt++ {
		if attempt > 1 {
			// The failed attempt left Raft state naming its ports; a node
			// must not carry it into a cluster it never was in.
			for _, d := range dirs {
				if rmErr := clearDir(d); rmErr != nil {
					return nil, fmt.Errorf("%w (and clearing %s: %v)", err, d, rmErr)
				}
			}
		}
		var nodes []*NATS
		nodes, err = startClusterOnce(dirs)
		if err != nil {
			continue
		}
		wait := electionGrace
		if attempt == clusterAttempts {
			wait = clusterReadyTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err = WaitClusterReady(ctx, nodes)
		cancel()
		if err == nil {
			return nodes, nil
		}
		shutdownAll(nodes)
	}
	return nil, err
}

func startClusterOnce(dirs []string) ([]*NATS, error) {
	ports, err := freePorts(len(dirs))
	if err != nil {
		return nil, err
	}
	routes := make([]string, len(ports))
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	nodes := make([]*NATS, 0, len(dirs))
	for i, dir := range dirs {
		// One after the other: started all at once, the nodes missed their
		// first election four times as often in our measurements.
		n, err := StartNATS(NATSOptions{
			StoreDir:   dir,
			ServerName: fmt.Sprintf("node-%d", i+1),
			Cluster:    &ClusterOptions{Name: "testutil", Port: ports[i], Routes: routes},
		})
		if err != nil {
			shutdownAll(nodes)
			return nil, fmt.Errorf("node %d: %w", i+1, err)
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// freePorts asks the OS for n distinct free ports. They are released before
// the servers bind them, which leaves a small window for another process;
// startCluster retries for that.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("testutil: reserve a route port: %w", err)
		}
		// Held open until all are chosen, so the OS cannot hand one out twice.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// shutdownAll stops the nodes in parallel: each shutdown steps down its Raft
// leaders and waits for its goroutines, which adds up when done in turn.
// ShutdownAll shuts the nodes down at once, and returns when all are down.
func ShutdownAll(nodes []*NATS) { shutdownAll(nodes) }

func shutdownAll(nodes []*NATS) {
	done := make(chan struct{}, len(nodes))
	for _, n := range nodes {
		go func() {
			n.Shutdown()
			done <- struct{}{}
		}()
	}
	for range nodes {
		<-done
	}
}
