package service

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The connect failures run waits through are those where no server
// answered; one that answered and refused ends it.
func TestUnreachable(t *testing.T) {
	// A real dial that times out, as a blackholed address does.
	d := net.Dialer{Timeout: time.Nanosecond}
	_, dialTimeout := d.DialContext(context.Background(), "tcp", "10.255.255.1:4222")
	if dialTimeout == nil {
		t.Skip("a dial with a 1 ns timeout succeeded")
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nothing listening", nats.ErrNoServers, true},
		{"a dial that timed out", dialTimeout, true},
		{"a name that does not resolve", &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "nats", IsNotFound: true}}, true},
		{"no greeting in time", fmt.Errorf("explained: %w", nats.ErrTimeout), true},
		{"credentials refused", fmt.Errorf("the server refused the credentials of NATS_USER: %w", nats.ErrAuthorization), false},
		{"a certificate of an unknown CA", fmt.Errorf("NATS_TLS_CA: %w", x509.UnknownAuthorityError{}), false},
		{"TLS wanted, none offered", nats.ErrSecureConnWanted, false},
		{"a TLS alert", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, false},
	}
	for _, tc := range tests {
		if got := unreachable(tc.err); got != tc.want {
			t.Errorf("%s (%v): unreachable %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
