package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

// secureFixtures are what a deployment that secures NATS hands the worker
// and the tools: a private CA, a client certificate it issued (and one
// another CA issued), an NKey user, a password file, and a directory of
// nats CLI contexts (XDG_CONFIG_HOME).
type secureFixtures struct {
	ca, otherCA          *testutil.CA
	client, stranger     *testutil.Cert
	seedFile, seed, nkey string
	passwordFile, xdg    string
	contextDir, filesDir string
	secrets              []string // must never appear in any output
}

// filePassword is the password in secureFixtures.passwordFile.
const filePassword = "pw-from-a-file-1"

func newSecureFixtures(t *testing.T) *secureFixtures {
	t.Helper()
	f := &secureFixtures{ca: testutil.NewCA(t, "private CA"), otherCA: testutil.NewCA(t, "another CA"), xdg: t.TempDir(), filesDir: t.TempDir()}
	f.client = f.ca.Issue(t, "tallyfy-deleter")
	f.stranger = f.otherCA.Issue(t, "stranger")
	f.seedFile, f.seed, f.nkey = testutil.NKeyUser(t)
	f.passwordFile = filepath.Join(f.filesDir, "nats-password")
	if err := os.WriteFile(f.passwordFile, []byte(filePassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.contextDir = filepath.Join(f.xdg, "nats", "context")
	if err := os.MkdirAll(f.contextDir, 0o700); err != nil {
		t.Fatal(err)
	}
	f.secrets = []string{filePassword, f.seed, keyLine(f.client), keyLine(f.stranger)}
	return f
}

// keyLine is a line of the key's PEM body: enough to spot the key in a log.
func keyLine(c *testutil.Cert) string { return strings.Split(string(c.KeyPEM), "\n")[1] }

// context writes a nats CLI context named name and returns its path.
func (f *secureFixtures) context(t *testing.T, name string, fields map[string]any) string {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(f.contextDir, name+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kvEnv turns KEY, value pairs into KEY=value for a process.
func kvEnv(kv []string) []string {
	var out []string
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, kv[i]+"="+kv[i+1])
	}
	return out
}

func tlsURL(natsURL string) string { return strings.Replace(natsURL, "nats://", "tls://", 1) }

// noSecrets fails the test if any output shows one of the secrets.
func noSecrets(t *testing.T, secrets []string, outputs map[string]string) {
	t.Helper()
	for name, out := range outputs {
		for _, s := range secrets {
			if s != "" && strings.Contains(out, s) {
				t.Errorf("%s shows a secret (%.6s...)", name, s)
			}
		}
	}
}

// TestNATSSecuredEndToEnd: however a deployment secures NATS, the worker
// (the built binary) deletes a run end to end, and the tools connect with
// the same settings: enqueue publishes the job, results reads its outcome
// back, status reads the streams. No secret appears in any output.
func TestNATSSecuredEndToEnd(t *testing.T) {
	f := newSecureFixtures(t)
	const ctxPassword = "pw-in-the-context-2"
	const envPassword = "pw-in-the-env-3"
	f.secrets = append(f.secrets, ctxPassword, envPassword)
	tests := []struct {
		name   string
		server func(t *testing.T) testutil.NATSOptions
		// settings are KEY, value pairs for the worker and the tools.
		settings func(t *testing.T, natsURL string) []string
	}{
		{
			"TLS with a private CA",
			func(t *testing.T) testutil.NATSOptions { return testutil.NATSOptions{TLS: f.ca.ServerTLS(t, false)} },
			func(t *testing.T, u string) []string { return []string{"NATS_URL", u, "NATS_TLS_CA", f.ca.File} },
		},
		{
			"mutual TLS",
			func(t *testing.T) testutil.NATSOptions { return testutil.NATSOptions{TLS: f.ca.ServerTLS(t, true)} },
			func(t *testing.T, u string) []string {
				return []string{"NATS_URL", tlsURL(u), "NATS_TLS_CA", f.ca.File, "NATS_TLS_CERT", f.client.CertFile, "NATS_TLS_KEY", f.client.KeyFile}
			},
		},
		{
			"NKey",
			func(t *testing.T) testutil.NATSOptions { return testutil.NATSOptions{NKeys: []string{f.nkey}} },
			func(t *testing.T, u string) []string { return []string{"NATS_URL", u, "NATS_NKEY", f.seedFile} },
		},
		{
			"user and password",
			func(t *testing.T) testutil.NATSOptions {
				return testutil.NATSOptions{Users: map[string]string{"deleter": envPassword}}
			},
			func(t *testing.T, u string) []string {
				return []string{"NATS_URL", u, "NATS_USER", "deleter", "NATS_PASSWORD", envPassword}
			},
		},
		{
			"user and password file",
			func(t *testing.T) testutil.NATSOptions {
				return testutil.NATSOptions{Users: map[string]string{"deleter": filePassword}}
			},
			func(t *testing.T, u string) []string {
				return []string{"NATS_URL", u, "NATS_USER", "deleter", "NATS_PASSWORD_FILE", f.passwordFile}
			},
		},
		{
			"context by name: mutual TLS and a user",
			func(t *testing.T) testutil.NATSOptions {
				return testutil.NATSOptions{TLS: f.ca.ServerTLS(t, true), Users: map[string]string{"ctx-user": ctxPassword}}
			},
			func(t *testing.T, u string) []string {
				f.context(t, "prod", map[string]any{
					"description": "the team's context", "url": u, "ca": f.ca.File, "cert": f.client.CertFile, "key": f.client.KeyFile,
					"user": "ctx-user", "password": ctxPassword, "token": "", "nsc": "", "color_scheme": "",
				})
				// NATS_URL is not set: the context's url wins over its default.
				return []string{"XDG_CONFIG_HOME", f.xdg, "NATS_CONTEXT", "prod", "NATS_URL", ""}
			},
		},
		{
			"context by path, its password overridden by NATS_PASSWORD_FILE",
			func(t *testing.T) testutil.NATSOptions {
				return testutil.NATSOptions{TLS: f.ca.ServerTLS(t, false), Users: map[string]string{"ctx-user": filePassword}}
			},
			func(t *testing.T, u string) []string {
				path := f.context(t, "stale", map[string]any{"url": u, "ca": f.ca.File, "user": "ctx-user", "password": ctxPassword})
				return []string{"NATS_CONTEXT", path, "NATS_PASSWORD_FILE", f.passwordFile, "NATS_URL", ""}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := testutil.JetStreamWith(t, tc.server(t))
			api := testutil.NewFakeTallyfy(t)
			api.AddRun(poolOrg, "run1", true)
			kv := tc.settings(t, srv.URL())
			p := securePool(t, srv.URL(), api, kvEnv(kv)...)
			w := p.start("secured")
			getenv := env(append([]string{"TALLYFY_ORG_ID", poolOrg}, kv...)...)
			outputs := map[string]string{}
			tool := func(args ...string) (int, string) {
				var out, errOut bytes.Buffer
				code := run(args, getenv, &out, &errOut)
				outputs[strings.Join(args, " ")] = out.String() + errOut.String()
				return code, out.String()
			}

			// Until the worker has created the jobs stream, enqueue says so
			// and exits 1; the job's message ID makes a retry harmless.
			p.waitUntil(20*time.Second, "enqueue to publish the job", func() bool {
				code, _ := tool("enqueue", poolOrg+",run1,req-secured")
				return code == 0
			})
			p.waitUntil(20*time.Second, "run1 deleted", func() bool { return api.Deleted(poolOrg, "run1") })
			p.waitUntil(20*time.Second, "the result event", func() bool {
				code, out := tool("results", "--json", "--request-id", "req-secured")
				return code == 0 && strings.Contains(out, `"outcome":"deleted"`)
			})
			if code, out := tool("status", "--json"); code != 0 || !strings.Contains(out, `"backlog": 0`) {
				t.Errorf("status: exit %d\n%s", code, outputs["status --json"])
			}
			p.terminate(w)
			if code := p.exitWithin(w, 15*time.Second); code != 0 {
				t.Errorf("worker exit %d after SIGTERM", code)
			}
			outputs["worker log"] = w.logs.String()
			if !strings.Contains(outputs["worker log"], "effective configuration") {
				t.Errorf("no effective configuration logged")
			}
			noSecrets(t, f.secrets, outputs)
		})
	}
}

// securePool is newPool for a server that the test's own plain client
// cannot reach: only the worker and the tools connect, with settings.
func securePool(t *testing.T, natsURL string, api *testutil.FakeTallyfy, settings ...string) *pool {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(api.Token()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &pool{t: t, natsURL: natsURL, api: api, tokenFile: tokenFile, settings: settings}
}

// TestNATSConnectRefused: a connection the server refuses (a CA that did
// not sign its certificate, a client certificate it does not trust,
// credentials it rejects) ends the worker and the tools with exit status 1
// and a message that names the setting at fault, and no secret.
func TestNATSConnectRefused(t *testing.T) {
	f := newSecureFixtures(t)
	const wrongPassword = "pw-wrong-4"
	const rightPassword = "pw-right-5"
	f.secrets = append(f.secrets, wrongPassword, rightPassword)
	tlsServer := func(t *testing.T) testutil.NATSOptions { return testutil.NATSOptions{TLS: f.ca.ServerTLS(t, false)} }
	mtlsServer := func(t *testing.T) testutil.NATSOptions { return testutil.NATSOptions{TLS: f.ca.ServerTLS(t, true)} }
	otherHost := func(t *testing.T) testutil.NATSOptions {
		cert := f.ca.Issue(t, "elsewhere", "nats.example")
		return testutil.NATSOptions{TLS: &tls.Config{Certificates: []tls.Certificate{cert.TLS}, MinVersion: tls.VersionTLS12}}
	}
	users := func(t *testing.T) testutil.NATSOptions {
		return testutil.NATSOptions{Users: map[string]string{"deleter": rightPassword}}
	}
	tests := []struct {
		name     string
		server   func(t *testing.T) testutil.NATSOptions
		settings []string
		want     string
	}{
		{"a CA that did not sign the server's certificate", tlsServer, []string{"NATS_TLS_CA", f.otherCA.File},
			"NATS_TLS_CA: the server's certificate is not signed by this CA"},
		{"no CA for a server with a private one", tlsServer, nil,
			"the server's certificate is not signed by a CA this host trusts; set NATS_TLS_CA"},
		{"a server certificate for another host", otherHost, []string{"NATS_TLS_CA", f.ca.File},
			"NATS_URL: the server's certificate is not for the host in the URL"},
		{"mutual TLS without a client certificate", mtlsServer, []string{"NATS_TLS_CA", f.ca.File},
			"if it verifies clients, set NATS_TLS_CERT and NATS_TLS_KEY"},
		{"a client certificate of another CA", mtlsServer, []string{"NATS_TLS_CA", f.ca.File, "NATS_TLS_CERT", f.stranger.CertFile, "NATS_TLS_KEY", f.stranger.KeyFile},
			"NATS_TLS_CERT: the server refused the TLS handshake"},
		{"a wrong password", users, []string{"NATS_USER", "deleter", "NATS_PASSWORD", wrongPassword},
			"the server refused the credentials of NATS_USER and NATS_PASSWORD"},
		{"no credentials", users, nil,
			"the server wants credentials"},
		{"TLS asked of a server without it", func(*testing.T) testutil.NATSOptions { return testutil.NATSOptions{} }, []string{"NATS_TLS_CA", f.ca.File},
			"NATS_TLS_CA: TLS is wanted but the server does not offer it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := testutil.JetStreamWith(t, tc.server(t))
			api := testutil.NewFakeTallyfy(t)
			p := securePool(t, srv.URL(), api, kvEnv(tc.settings)...)
			w := p.start("refused")
			w.ending.Store(true) // it is meant to exit
			if code := p.exitWithin(w, 20*time.Second); code != 1 {
				t.Errorf("worker exit %d, want 1", code)
			}
			if !strings.Contains(w.logs.String(), tc.want) {
				t.Errorf("worker log does not say %q:\n%s", tc.want, w.logs.String())
			}
			var errOut bytes.Buffer
			code := run([]string{"status"}, env(append([]string{"NATS_URL", srv.URL()}, tc.settings...)...), &bytes.Buffer{}, &errOut)
			if code != 1 || !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("status: exit %d, want 1 saying %q:\n%s", code, tc.want, errOut.String())
			}
			noSecrets(t, f.secrets, map[string]string{"worker log": w.logs.String(), "status": errOut.String()})
		})
	}
}
