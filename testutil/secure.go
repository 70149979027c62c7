package testutil

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil/servers"
)

// JetStreamWith is JetStream with opts: a server that requires TLS
// (NATSOptions.TLS, see CA.ServerTLS), or credentials (Users, NKeys). An
// empty StoreDir is a temporary directory. The server is shut down when the
// test ends.
func JetStreamWith(t testing.TB, opts NATSOptions) *NATS {
	t.Helper()
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	n, err := servers.StartNATS(opts)
	if err != nil {
		t.Fatalf("testutil.JetStreamWith: %v", err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

// NKeyUser makes an NKey user: the file holding its seed, as NATS_NKEY
// names it, the seed itself (to show it never leaks), and its public key,
// which goes in NATSOptions.NKeys.
func NKeyUser(t testing.TB) (seedFile, seed, public string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatalf("testutil.NKeyUser: %v", err)
	}
	s, err := kp.Seed()
	if err != nil {
		t.Fatalf("testutil.NKeyUser: %v", err)
	}
	if public, err = kp.PublicKey(); err != nil {
		t.Fatalf("testutil.NKeyUser: %v", err)
	}
	seedFile = filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, append(s, '\n'), 0o600); err != nil {
		t.Fatalf("testutil.NKeyUser: %v", err)
	}
	return seedFile, string(s), public
}
