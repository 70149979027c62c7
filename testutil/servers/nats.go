package servers

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds how long a server may take to open its listeners.
// A port taken by someone else only shows up as a server that never gets
// ready, so this is also how long such a failure takes to be reported.
const readyTimeout = 10 * time.Second

// tlsTimeout bounds a client's TLS handshake; the server's default (2 s) is
// short for a busy machine running tests under the race detector.
const tlsTimeout = 10 * time.Second

// NATSOptions configures StartNATS.
type NATSOptions struct {
	// StoreDir holds JetStream's files. Required, because Restart must find
	// the messages again where the first run left them.
	StoreDir string
	// Port is the client port; 0 lets the OS pick one. Restart comes back on
	// the port actually used, so clients can reconnect to the same URL.
	Port int
	// ServerName must be set, and stable across restarts, for cluster nodes:
	// the Raft identity of a node is derived from it.
	ServerName string
	// Cluster makes the server a node of a cluster; nil runs it alone.
	Cluster *ClusterOptions
	// TLS makes the server require TLS, with its certificate in
	// Certificates. With ClientAuth tls.RequireAndVerifyClientCert and
	// ClientCAs it also requires a client certificate one of those CAs
	// signed (mutual TLS). nil: plain connections. URL stays nats://: a
	// client upgrades when the server asks for TLS.
	TLS *tls.Config
	// Users (user name to password) and NKeys (public user keys, "U..."),
	// when either is set, are who may connect; nobody else may. They all
	// share the server's one account, JetStream enabled.
	Users map[string]string
	NKeys []string
	// Permissions limits what a user of Users may publish and subscribe
	// to (its Publish and Subscribe Allow lists, as in the server's
	// authorization block); a user without an entry may do anything.
	Permissions map[string]*server.Permissions
}

// ClusterOptions places a server in a cluster.
type ClusterOptions struct {
	// Name is the cluster's name, the same on every node.
	Name string
	// Port is the route port. Every node lists every other node's route
	// port in Routes, so in practice it has to be chosen up front; 0 lets
	// the OS pick one, which suits only a node that others do not dial.
	Port int
	// Routes are the nodes' route URLs ("nats-route://127.0.0.1:6222"),
	// the same list on every node; a node's own URL may be in it.
	Routes []string
}

// NATS is an embedded nats-server with JetStream enabled, listening on
// 127.0.0.1. Its methods are safe for concurrent use.
type NATS struct {
	opts NATSOptions // ports resolved after the first start
	url  string

	// mu serialises Shutdown and Restart, so a restart is never
	// interleaved with a stop and Server never returns a half-made server.
	mu  sync.Mutex
	srv *server.Server
}

// StartNATS starts a server and waits until it accepts connections. Stop it
// with Shutdown. It is meant for programs; tests use JetStream, which also
// cleans up.
func StartNATS(opts NATSOptions) (*NATS, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("testutil: NATSOptions.StoreDir is required")
	}
	if opts.Port < 0 {
		return nil, fmt.Errorf("testutil: NATSOptions.Port %d: want 0 (any) or a port", opts.Port)
	}
	if c := opts.Cluster; c != nil {
		if c.Name == "" {
			return nil, errors.New("testutil: ClusterOptions.Name is required")
		}
		if c.Port < 0 {
			return nil, fmt.Errorf("testutil: ClusterOptions.Port %d: want 0 (any) or a port", c.Port)
		}
		if opts.ServerName == "" {
			return nil, errors.New("testutil: a cluster node needs a ServerName")
		}
		// Our own copy: the caller may reuse its struct for the next node.
		cc := *c
		cc.Routes = append([]string(nil), c.Routes...)
		opts.Cluster = &cc
	}
	if opts.TLS != nil {
		if len(opts.TLS.Certificates) == 0 && opts.TLS.GetCertificate == nil {
			return nil, errors.New("testutil: NATSOptions.TLS has no certificate")
		}
		if opts.TLS.ClientAuth == tls.RequireAndVerifyClientCert && opts.TLS.ClientCAs == nil {
			return nil, errors.New("testutil: NATSOptions.TLS verifies client certificates but has no ClientCAs")
		}
		opts.TLS = opts.TLS.Clone()
	}
	opts.Users, opts.NKeys, opts.Permissions = maps.Clone(opts.Users), slices.Clone(opts.NKeys), maps.Clone(opts.Permissions)
	for name := range opts.Permissions {
		if _, ok := opts.Users[name]; !ok {
			return nil, fmt.Errorf("testutil: NATSOptions.Permissions for %q, who is not in Users", name)
		}
	}
	n := &NATS{opts: opts}
	srv, err := n.start()
	if err != nil {
		return nil, err
	}
	// Pin the ports the OS picked, so that Restart comes back where clients
	// and other nodes look for it.
	n.opts.Port = srv.Addr().(*net.TCPAddr).Port
	if n.opts.Cluster != nil && n.opts.Cluster.Port == 0 {
		n.opts.Cluster.Port = srv.ClusterAddr().Port
	}
	n.url = "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(n.opts.Port))
	n.srv = srv
	return n, nil
}

// URL is the client URL. It does not change across restarts.
func (n *NATS) URL() string { return n.url }

// Server is the running server (after Restart, the new one).
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Shutdown stops the server and returns once it is down: its goroutines have
// ended and its store is closed. Calling it again does nothing.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stop()
}

// Restart stops the server and starts a new one on the same port and store,
// as an operator's restart would. Connected clients see the connection drop
// and reconnect by themselves. It also starts a server that was shut down.
// On error the server stays down.
func (n *NATS) Restart() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stop()
	srv, err := n.start()
	if err != nil {
		return err
	}
	n.srv = srv
	return nil
}

// stop needs n.mu held.
func (n *NATS) stop() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

func (n *NATS) start() (*server.Server, error) {
	sopts := &server.Options{
		ServerName: n.opts.ServerName,
		Host:       "127.0.0.1",
		Port:       portOrRandom(n.opts.Port),
		JetStream:  true,
		StoreDir:   n.opts.StoreDir,
		// The process belongs to the test or the program, not to the server.
		NoSigs: true,
		NoLog:  true,
	}
	if n.opts.TLS != nil {
		// The server keeps what it is given: each start gets a copy.
		sopts.TLSConfig = n.opts.TLS.Clone()
		sopts.TLSVerify = n.opts.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		sopts.TLSTimeout = tlsTimeout.Seconds()
	}
	for name, password := range n.opts.Users {
		sopts.Users = append(sopts.Users, &server.User{Username: name, Password: password, Permissions: n.opts.Permissions[name]})
	}
	for _, key := range n.opts.NKeys {
		sopts.Nkeys = append(sopts.Nkeys, &server.NkeyUser{Nkey: key})
	}
	if c := n.opts.Cluster; c != nil {
		sopts.Cluster = server.ClusterOpts{Name: c.Name, Host: "127.0.0.1", Port: portOrRandom(c.Port)}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("testutil: route %q: want nats-route://host:port", r)
			}
			sopts.Routes = append(sopts.Routes, u)
		}
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("testutil: nats-server options: %w", err)
	}
	// Start returns once the listeners' goroutines are running; they belong
	// to srv and end with its Shutdown.
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("testutil: nats-server not ready after %s (port %d or route port in use? store %s unusable?)",
			readyTimeout, n.opts.Port, n.opts.StoreDir)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("testutil: nats-server started without JetStream (store %s)", n.opts.StoreDir)
	}
	return srv, nil
}

// portOrRandom maps our "0 means any" to nats-server's "-1 means any"
// (its 0 means the default port, 4222, which may well be taken).
func portOrRandom(p int) int {
	if p == 0 {
		return server.RANDOM_PORT
	}
	return p
}
