package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNATSBadSettingsRefusedByEveryCommand: the worker and every tool
// take the same NATS settings, and refuse the same bad ones at start, with
// exit status 2, a message naming the setting, and no secret. Nothing
// connects: no server runs.
func TestNATSBadSettingsRefusedByEveryCommand(t *testing.T) {
	f := newSecureFixtures(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	garbage := write("garbage.pem", "not PEM at all\n")
	const envPassword = "pw-in-the-env-6"
	f.secrets = append(f.secrets, envPassword)
	tokenCtx := f.context(t, "token", map[string]any{"url": "nats://nats:4222", "token": "tok-in-a-context-7"})
	credsCtx := f.context(t, "creds", map[string]any{"creds": write("user.creds", "x")})
	f.secrets = append(f.secrets, "tok-in-a-context-7")
	tests := []struct {
		name  string
		env   []string
		names []string // what the message must say
	}{
		{"CA missing", []string{"NATS_TLS_CA", filepath.Join(dir, "none.pem")}, []string{"NATS_TLS_CA", "no such file"}},
		{"CA a directory", []string{"NATS_TLS_CA", dir}, []string{"NATS_TLS_CA", "is a directory"}},
		{"CA does not parse", []string{"NATS_TLS_CA", garbage}, []string{"NATS_TLS_CA", "no PEM certificate"}},
		{"cert without key", []string{"NATS_TLS_CA", f.ca.File, "NATS_TLS_CERT", f.client.CertFile}, []string{"NATS_TLS_CERT is set but NATS_TLS_KEY is not"}},
		{"key without cert", []string{"NATS_TLS_KEY", f.client.KeyFile}, []string{"NATS_TLS_KEY is set but NATS_TLS_CERT is not"}},
		{"cert that does not match its key", []string{"NATS_TLS_CERT", f.client.CertFile, "NATS_TLS_KEY", f.stranger.KeyFile}, []string{"NATS_TLS_CERT and NATS_TLS_KEY", "does not match"}},
		{"cert does not parse", []string{"NATS_TLS_CERT", garbage, "NATS_TLS_KEY", f.client.KeyFile}, []string{"NATS_TLS_CERT", "no PEM certificate"}},
		{"nkey not a seed", []string{"NATS_NKEY", garbage}, []string{"NATS_NKEY", "not an NKey user seed"}},
		{"password file empty", []string{"NATS_USER", "u", "NATS_PASSWORD_FILE", write("empty", "\n")}, []string{"NATS_PASSWORD_FILE", "is empty"}},
		{"password and password file", []string{"NATS_USER", "u", "NATS_PASSWORD", envPassword, "NATS_PASSWORD_FILE", f.passwordFile}, []string{"NATS_PASSWORD and NATS_PASSWORD_FILE"}},
		{"password without user", []string{"NATS_PASSWORD", envPassword}, []string{"NATS_PASSWORD is set but NATS_USER is not"}},
		{"nkey and user", []string{"NATS_NKEY", f.seedFile, "NATS_USER", "u", "NATS_PASSWORD", envPassword}, []string{"more than one kind", "NATS_NKEY", "NATS_USER"}},
		{"context's creds and NATS_NKEY", []string{"NATS_CONTEXT", credsCtx, "NATS_NKEY", f.seedFile}, []string{"NATS_NKEY and NATS_CONTEXT", "creds are two kinds"}},
		{"context with a token", []string{"NATS_CONTEXT", tokenCtx}, []string{"NATS_CONTEXT", "token is set", "not supported"}},
		{"context missing", []string{"XDG_CONFIG_HOME", f.xdg, "NATS_CONTEXT", "nowhere"}, []string{"NATS_CONTEXT", "nowhere.json", "no such file"}},
	}
	commands := [][]string{
		{"run"}, {"status"}, {"enqueue", "org1,r1"}, {"enqueue", "--check", "org1,r1"}, {"dlq", "ls"}, {"dlq", "replay", "--all"},
		{"results"}, {"sweep", "--archived-for", "720h"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			getenv := env(append([]string{"TALLYFY_ACCESS_TOKEN", "tok", "TALLYFY_ORG_ID", "org1"}, tc.env...)...)
			for _, args := range commands {
				var out, errOut bytes.Buffer
				code := run(args, getenv, &out, &errOut)
				if code != 2 {
					t.Errorf("%q: exit %d, want 2; stderr:\n%s", args, code, errOut.String())
				}
				for _, want := range tc.names {
					if !strings.Contains(errOut.String(), want) {
						t.Errorf("%q: message does not say %q:\n%s", args, want, errOut.String())
					}
				}
				noSecrets(t, f.secrets, map[string]string{strings.Join(args, " "): out.String() + errOut.String()})
			}
		})
	}
}
