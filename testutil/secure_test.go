package testutil_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

// TestJetStreamWithSecurity: a server started with TLS, mutual TLS, NKey
// users or users with passwords lets in only the clients that present
// them, and JetStream works for those it lets in, also after a restart.
func TestJetStreamWithSecurity(t *testing.T) {
	ca := testutil.NewCA(t, "test CA")
	client := ca.Issue(t, "client")
	seedFile, _, public := testutil.NKeyUser(t)
	nkeyOpt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	trustCA := nats.Secure(&tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12})
	withCert := nats.Secure(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client.TLS}, MinVersion: tls.VersionTLS12})
	tests := []struct {
		name    string
		opts    testutil.NATSOptions
		good    []nats.Option
		refused [][]nats.Option
	}{
		{"TLS", testutil.NATSOptions{TLS: ca.ServerTLS(t, false)}, []nats.Option{trustCA}, [][]nats.Option{nil}},
		{"TLS, CA from the file", testutil.NATSOptions{TLS: ca.ServerTLS(t, false)}, []nats.Option{nats.RootCAs(ca.File)}, nil},
		{"mutual TLS", testutil.NATSOptions{TLS: ca.ServerTLS(t, true)}, []nats.Option{withCert}, [][]nats.Option{{trustCA}}},
		{"mutual TLS, certificate from the files", testutil.NATSOptions{TLS: ca.ServerTLS(t, true)}, []nats.Option{nats.RootCAs(ca.File), nats.ClientCert(client.CertFile, client.KeyFile)}, nil},
		{"NKey", testutil.NATSOptions{NKeys: []string{public}}, []nats.Option{nkeyOpt}, [][]nats.Option{nil, {nats.UserInfo("u", "p")}}},
		{"users", testutil.NATSOptions{Users: map[string]string{"u": "p"}}, []nats.Option{nats.UserInfo("u", "p")}, [][]nats.Option{nil, {nats.UserInfo("u", "wrong")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := testutil.JetStreamWith(t, tc.opts)
			for i, opts := range tc.refused {
				if nc, err := nats.Connect(ns.URL(), opts...); err == nil {
					nc.Close()
					t.Errorf("client %d without what the server wants was let in", i)
				}
			}
			ctx := ctxTimeout(t, 20*time.Second)
			reconnected := make(chan struct{}, 1)
			_, js := testutil.Connect(t, ns.URL(), append(tc.good, nats.ReconnectWait(50*time.Millisecond), nats.ReconnectHandler(func(*nats.Conn) {
				select {
				case reconnected <- struct{}{}:
				default:
				}
			}))...)
			s := createJobs(t, ctx, js, 1)
			publish(t, ctx, js, 1)
			// Reconnecting presents the same TLS and credentials again.
			if err := ns.Restart(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-reconnected:
			case <-ctx.Done():
				t.Fatal("client did not reconnect")
			}
			publish(t, ctx, js, 1)
			if n := msgs(t, ctx, s); n != 2 {
				t.Errorf("%d messages, want 2", n)
			}
		})
	}
}

// TestCAOtherIsUnknown: a client trusting another CA is refused with the
// x509 error the worker explains.
func TestCAOtherIsUnknown(t *testing.T) {
	ca, other := testutil.NewCA(t, "test CA"), testutil.NewCA(t, "other CA")
	ns := testutil.JetStreamWith(t, testutil.NATSOptions{TLS: ca.ServerTLS(t, false)})
	_, err := nats.Connect(ns.URL(), nats.RootCAs(other.File))
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("connect trusting another CA: %v, want x509.UnknownAuthorityError", err)
	}
}

func TestStartNATSRefusesHalfTLS(t *testing.T) {
	ca := testutil.NewCA(t, "test CA")
	for name, cfg := range map[string]*tls.Config{
		"no certificate":     {},
		"verify without CAs": {Certificates: ca.ServerTLS(t, false).Certificates, ClientAuth: tls.RequireAndVerifyClientCert},
	} {
		if n, err := testutil.StartNATS(testutil.NATSOptions{StoreDir: t.TempDir(), TLS: cfg}); err == nil {
			n.Shutdown()
			t.Errorf("%s: started", name)
		}
	}
}
