package cli_test

import (
	"testing"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
)

// TestRedactURLs: no password and no token of a NATS URL reaches a log.
func TestRedactURLs(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://u:pw-1@h:4222", "nats://u:xxxxx@h:4222"},
		{"nats://token-2@h:4222", "nats://xxxxx@h:4222"},
		{"u:pw-3@h:4222", "nats://u:xxxxx@h:4222"},
		{"h1:4222,h2:4222", "h1:4222,h2:4222"},
		{"nats://h1:4222, tls://u:pw-4@h2:4222", "nats://h1:4222,tls://u:xxxxx@h2:4222"},
	}
	for _, tc := range tests {
		if got := cli.RedactURLs(tc.in); got != tc.want {
			t.Errorf("RedactURLs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
