package settings_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

// natsFixtures are the files the NATS settings name, made once per test.
type natsFixtures struct {
	dir            string
	ca, otherCA    *testutil.CA
	client, other  *testutil.Cert
	seedFile, seed string
	credsFile      string
	passwordFile   string
	empty, garbage string
	xdg            string // an XDG_CONFIG_HOME with nats/context/*.json
	contextDir     string
}

// password is in passwordFile; no error or log may show it.
const password = "pw-in-a-file-7"

func newNATSFixtures(t *testing.T) *natsFixtures {
	t.Helper()
	f := &natsFixtures{dir: t.TempDir(), ca: testutil.NewCA(t, "private CA"), otherCA: testutil.NewCA(t, "another CA")}
	f.client = f.ca.Issue(t, "deleter")
	f.other = f.otherCA.Issue(t, "stranger")
	f.seedFile, f.seed, _ = testutil.NKeyUser(t)
	f.credsFile = f.write(t, "user.creds", "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJVIn0.c2lnbmF0dXJl\n------END NATS USER JWT------\n\n"+
		"-----BEGIN USER NKEY SEED-----\n"+f.seed+"\n------END USER NKEY SEED------\n")
	f.passwordFile = f.write(t, "password", password+"\n")
	f.empty = f.write(t, "empty", "\n")
	f.garbage = f.write(t, "garbage.pem", "not a certificate\n")
	f.xdg = t.TempDir()
	f.contextDir = filepath.Join(f.xdg, "nats", "context")
	if err := os.MkdirAll(f.contextDir, 0o700); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *natsFixtures) write(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// context writes a context file named name, as the nats CLI writes one:
// every field, most of them empty.
func (f *natsFixtures) context(t *testing.T, name string, fields map[string]any) string {
	t.Helper()
	all := map[string]any{
		"description": "", "url": "", "socks_proxy": "", "token": "", "user": "", "password": "", "creds": "",
		"nkey": "", "cert": "", "key": "", "ca": "", "nsc": "", "jetstream_domain": "", "jetstream_api_prefix": "",
		"jetstream_event_prefix": "", "inbox_prefix": "", "user_jwt": "", "color_scheme": "", "tls_first": false,
		"windows_cert_store": "", "windows_cert_match_by": "", "windows_cert_match": "", "windows_ca_certs_match": nil,
	}
	for k, v := range fields {
		all[k] = v
	}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(f.contextDir, name+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkNATS parses env as `status` does and checks the NATS settings.
func checkNATS(t *testing.T, env map[string]string) (*settings.Tool, error) {
	t.Helper()
	var c settings.Tool
	getenv := func(k string) string { return env[k] }
	if _, err := settings.ToolSettings(&c).Parse("status", nil, getenv); err != nil {
		t.Fatalf("parse: %v", err)
	}
	return &c, errors.Join(c.NATS.Check(getenv)...)
}

// applied is what the options Check built set on a connection.
func applied(t *testing.T, n *settings.NATS) nats.Options {
	t.Helper()
	opts, err := n.Options()
	if err != nil {
		t.Fatalf("Options: %v", err)
	}
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			t.Fatalf("option: %v", err)
		}
	}
	return o
}

// auth is how a connection built from o authenticates, as a word.
func auth(t *testing.T, o nats.Options) string {
	t.Helper()
	switch {
	case o.UserJWT != nil:
		return "creds"
	case o.Nkey != "":
		return "nkey"
	case o.UserInfo != nil:
		u, p := o.UserInfo()
		return "user " + u + ":" + p
	case o.User != "":
		return "user " + o.User + ":" + o.Password
	}
	return "none"
}

// TestNATSMerge: the settings given override the context's fields; the
// context fills in the rest; NATS_URL's default gives way to the
// context's url.
func TestNATSMerge(t *testing.T) {
	f := newNATSFixtures(t)
	full := f.context(t, "full", map[string]any{
		"url": "tls://ctx.example:4222", "ca": f.ca.File, "cert": f.client.CertFile, "key": f.client.KeyFile,
		"user": "ctx-user", "password": "ctx-pw", "tls_first": true, "inbox_prefix": "_INBOX_deleter",
		"description": "production", "color_scheme": "nord",
	})
	f.context(t, "nkey", map[string]any{"nkey": f.seedFile})
	f.context(t, "home", map[string]any{"ca": "~/ca.pem", "creds": "file://$CREDS_DIR/user.creds"})
	if err := os.WriteFile(filepath.Join(f.dir, "ca.pem"), f.ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		env      map[string]string
		servers  string
		auth     string
		tls      bool // a CA or a client certificate is set
		tlsFirst bool
		inbox    string
	}{
		{"no context, defaults", nil, "nats://127.0.0.1:4222", "none", false, false, ""},
		{"context by name", map[string]string{"NATS_CONTEXT": "full"}, "tls://ctx.example:4222", "user ctx-user:ctx-pw", true, true, "_INBOX_deleter"},
		{"context by path", map[string]string{"NATS_CONTEXT": full}, "tls://ctx.example:4222", "user ctx-user:ctx-pw", true, true, "_INBOX_deleter"},
		{"NATS_URL given wins", map[string]string{"NATS_CONTEXT": "full", "NATS_URL": "nats://given:4222"}, "nats://given:4222", "user ctx-user:ctx-pw", true, true, "_INBOX_deleter"},
		{"NATS_PASSWORD_FILE overrides the context's password", map[string]string{"NATS_CONTEXT": "full", "NATS_PASSWORD_FILE": f.passwordFile}, "tls://ctx.example:4222", "user ctx-user:" + password, true, true, "_INBOX_deleter"},
		{"NATS_USER and NATS_PASSWORD override both", map[string]string{"NATS_CONTEXT": "full", "NATS_USER": "u2", "NATS_PASSWORD": "p2"}, "tls://ctx.example:4222", "user u2:p2", true, true, "_INBOX_deleter"},
		{"NATS_NKEY overrides the context's nkey", map[string]string{"NATS_CONTEXT": "nkey", "NATS_NKEY": f.seedFile}, "nats://127.0.0.1:4222", "nkey", false, false, ""},
		{"context nkey", map[string]string{"NATS_CONTEXT": "nkey"}, "nats://127.0.0.1:4222", "nkey", false, false, ""},
		{"context paths expanded", map[string]string{"NATS_CONTEXT": "home", "HOME": f.dir, "CREDS_DIR": f.dir}, "nats://127.0.0.1:4222", "creds", true, false, ""},
		{"creds", map[string]string{"NATS_CREDS": f.credsFile}, "nats://127.0.0.1:4222", "creds", false, false, ""},
		{"nkey", map[string]string{"NATS_NKEY": f.seedFile}, "nats://127.0.0.1:4222", "nkey", false, false, ""},
		{"user and password", map[string]string{"NATS_USER": "u", "NATS_PASSWORD": "p"}, "nats://127.0.0.1:4222", "user u:p", false, false, ""},
		{"user and password file", map[string]string{"NATS_USER": "u", "NATS_PASSWORD_FILE": f.passwordFile}, "nats://127.0.0.1:4222", "user u:" + password, false, false, ""},
		{"mutual TLS", map[string]string{"NATS_TLS_CA": f.ca.File, "NATS_TLS_CERT": f.client.CertFile, "NATS_TLS_KEY": f.client.KeyFile}, "nats://127.0.0.1:4222", "none", true, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"XDG_CONFIG_HOME": f.xdg}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := checkNATS(t, env)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got := c.NATS.Servers(); got != tc.servers {
				t.Errorf("Servers() = %q, want %q", got, tc.servers)
			}
			o := applied(t, &c.NATS)
			if got := auth(t, o); got != tc.auth {
				t.Errorf("auth %q, want %q", got, tc.auth)
			}
			if tls := o.RootCAsCB != nil || o.TLSCertCB != nil; tls != tc.tls || o.Secure != tc.tls {
				t.Errorf("TLS options %v (secure %v), want %v", tls, o.Secure, tc.tls)
			}
			if o.TLSHandshakeFirst != tc.tlsFirst || o.InboxPrefix != tc.inbox {
				t.Errorf("tls_first %v inbox %q, want %v %q", o.TLSHandshakeFirst, o.InboxPrefix, tc.tlsFirst, tc.inbox)
			}
		})
	}
}

// TestNATSRefusals: each setting that cannot work is refused at start,
// naming the setting (or the context's field), never showing a secret.
func TestNATSRefusals(t *testing.T) {
	f := newNATSFixtures(t)
	ctxCreds := f.context(t, "creds", map[string]any{"creds": f.credsFile})
	ctxToken := f.context(t, "token", map[string]any{"url": "nats://h:4222", "token": "tok-in-context-3"})
	ctxNSC := f.context(t, "nsc", map[string]any{"url": "nsc://operator/account/user"})
	ctxUnknown := f.context(t, "unknown", map[string]any{"teleport": "yes"})
	ctxHalf := f.context(t, "half", map[string]any{"cert": f.client.CertFile})
	ctxOp := f.context(t, "op", map[string]any{"user": "u", "password": "op://vault/nats/password"})
	ctxTwo := f.context(t, "two", map[string]any{"nkey": f.seedFile, "user": "u", "password": "p"})
	bad := f.write(t, "bad.json", "{not json")
	keyAsCA := f.client.KeyFile
	certAndKey := f.write(t, "bundle.pem", string(f.ca.PEM)+string(f.client.KeyPEM))
	tests := []struct {
		name  string
		env   map[string]string
		names []string // what the error must say
	}{
		{"CA missing", map[string]string{"NATS_TLS_CA": filepath.Join(f.dir, "none.pem")}, []string{"NATS_TLS_CA", "no such file"}},
		{"CA a directory", map[string]string{"NATS_TLS_CA": f.dir}, []string{"NATS_TLS_CA", "is a directory"}},
		{"CA empty", map[string]string{"NATS_TLS_CA": f.empty}, []string{"NATS_TLS_CA", "is empty"}},
		{"CA not PEM", map[string]string{"NATS_TLS_CA": f.garbage}, []string{"NATS_TLS_CA", "no PEM certificate"}},
		{"CA holds a key", map[string]string{"NATS_TLS_CA": certAndKey}, []string{"NATS_TLS_CA", "PRIVATE KEY block"}},
		{"a key for a CA", map[string]string{"NATS_TLS_CA": keyAsCA}, []string{"NATS_TLS_CA", "PRIVATE KEY block"}},
		{"cert without key", map[string]string{"NATS_TLS_CERT": f.client.CertFile}, []string{"NATS_TLS_CERT is set but NATS_TLS_KEY is not"}},
		{"key without cert", map[string]string{"NATS_TLS_KEY": f.client.KeyFile}, []string{"NATS_TLS_KEY is set but NATS_TLS_CERT is not"}},
		{"cert does not match key", map[string]string{"NATS_TLS_CERT": f.client.CertFile, "NATS_TLS_KEY": f.other.KeyFile}, []string{"NATS_TLS_CERT and NATS_TLS_KEY", "does not match"}},
		{"cert not PEM", map[string]string{"NATS_TLS_CERT": f.garbage, "NATS_TLS_KEY": f.client.KeyFile}, []string{"NATS_TLS_CERT", "no PEM certificate"}},
		{"key not PEM", map[string]string{"NATS_TLS_CERT": f.client.CertFile, "NATS_TLS_KEY": f.garbage}, []string{"NATS_TLS_KEY", "no PEM private key"}},
		{"key missing", map[string]string{"NATS_TLS_CERT": f.client.CertFile, "NATS_TLS_KEY": filepath.Join(f.dir, "none")}, []string{"NATS_TLS_KEY", "no such file"}},
		{"nkey missing", map[string]string{"NATS_NKEY": filepath.Join(f.dir, "none")}, []string{"NATS_NKEY", "no such file"}},
		{"nkey empty", map[string]string{"NATS_NKEY": f.empty}, []string{"NATS_NKEY", "is empty"}},
		{"nkey not a seed", map[string]string{"NATS_NKEY": f.garbage}, []string{"NATS_NKEY", "not an NKey user seed"}},
		{"creds a directory", map[string]string{"NATS_CREDS": f.dir}, []string{"NATS_CREDS", "is a directory"}},
		{"creds without JWT", map[string]string{"NATS_CREDS": f.seedFile}, []string{"NATS_CREDS", "no user JWT"}},
		{"password file missing", map[string]string{"NATS_USER": "u", "NATS_PASSWORD_FILE": filepath.Join(f.dir, "none")}, []string{"NATS_PASSWORD_FILE", "no such file"}},
		{"password file empty", map[string]string{"NATS_USER": "u", "NATS_PASSWORD_FILE": f.empty}, []string{"NATS_PASSWORD_FILE", "is empty"}},
		{"password and password file", map[string]string{"NATS_USER": "u", "NATS_PASSWORD": "pw-secret-9", "NATS_PASSWORD_FILE": f.passwordFile}, []string{"NATS_PASSWORD and NATS_PASSWORD_FILE are both set"}},
		{"password without user", map[string]string{"NATS_PASSWORD": "pw-secret-9"}, []string{"NATS_PASSWORD is set but NATS_USER is not"}},
		{"password file without user", map[string]string{"NATS_PASSWORD_FILE": f.passwordFile}, []string{"NATS_PASSWORD_FILE is set but NATS_USER is not"}},
		{"user without password", map[string]string{"NATS_USER": "u"}, []string{"NATS_USER is set but neither NATS_PASSWORD nor NATS_PASSWORD_FILE"}},
		{"creds and nkey", map[string]string{"NATS_CREDS": f.credsFile, "NATS_NKEY": f.seedFile}, []string{"more than one kind", "NATS_CREDS", "NATS_NKEY"}},
		{"nkey and user", map[string]string{"NATS_NKEY": f.seedFile, "NATS_USER": "u", "NATS_PASSWORD": "pw-secret-9"}, []string{"more than one kind", "NATS_NKEY", "NATS_USER"}},
		{"URL credentials and nkey", map[string]string{"NATS_URL": "nats://u:pw-secret-9@h:4222", "NATS_NKEY": f.seedFile}, []string{"NATS_URL holds credentials", "NATS_NKEY"}},
		{"URL not for NATS", map[string]string{"NATS_URL": "http://h:4222"}, []string{"NATS_URL", "not a nats://"}},
		{"context's creds and NATS_NKEY", map[string]string{"NATS_CONTEXT": ctxCreds, "NATS_NKEY": f.seedFile}, []string{"NATS_NKEY and NATS_CONTEXT", ctxCreds, "creds are two kinds"}},
		{"context with two kinds", map[string]string{"NATS_CONTEXT": ctxTwo}, []string{"NATS_CONTEXT (" + ctxTwo + ")", "more than one kind", "nkey and user"}},
		{"context missing by name", map[string]string{"NATS_CONTEXT": "nowhere"}, []string{"NATS_CONTEXT", filepath.Join(f.contextDir, "nowhere.json"), "no such file"}},
		{"context a directory", map[string]string{"NATS_CONTEXT": f.dir + "/"}, []string{"NATS_CONTEXT", "is a directory"}},
		{"context not JSON", map[string]string{"NATS_CONTEXT": bad}, []string{"NATS_CONTEXT", "not a context file"}},
		{"context token", map[string]string{"NATS_CONTEXT": ctxToken}, []string{"NATS_CONTEXT (" + ctxToken + "): token is set", "not supported"}},
		{"context nsc URL", map[string]string{"NATS_CONTEXT": ctxNSC}, []string{"NATS_CONTEXT (" + ctxNSC + "): url", "nsc://"}},
		{"context unknown field", map[string]string{"NATS_CONTEXT": ctxUnknown}, []string{"teleport is set", "not a field"}},
		{"context cert without key", map[string]string{"NATS_CONTEXT": ctxHalf}, []string{"NATS_CONTEXT (" + ctxHalf + "): cert is set but its key is not"}},
		{"context password a reference", map[string]string{"NATS_CONTEXT": ctxOp}, []string{"NATS_CONTEXT (" + ctxOp + "): password", "op:", "NATS_PASSWORD_FILE"}},
		{"no home for a context name", map[string]string{"NATS_CONTEXT": "prod", "XDG_CONFIG_HOME": "", "HOME": ""}, []string{"NATS_CONTEXT", "XDG_CONFIG_HOME", "HOME"}},
	}
	secrets := []string{"pw-secret-9", password, "tok-in-context-3", f.seed, "ctx-pw", strings.Split(string(f.client.KeyPEM), "\n")[1]}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"XDG_CONFIG_HOME": f.xdg, "HOME": f.dir}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := checkNATS(t, env)
			if err == nil {
				t.Fatalf("not refused")
			}
			for _, want := range tc.names {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not say %q:\n%v", want, err)
				}
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error shows a secret (%.8s...):\n%v", s, err)
				}
			}
			if _, oerr := c.NATS.Options(); oerr == nil {
				t.Errorf("Options() has no error after a refusal")
			}
		})
	}
}

// TestNATSContextOverridesSkipRefusedFields: a context field that cannot
// be read (an op:// password) is no reason to refuse when a setting
// overrides it.
func TestNATSContextOverridesSkipRefusedFields(t *testing.T) {
	f := newNATSFixtures(t)
	ctx := f.context(t, "op", map[string]any{"user": "u", "password": "op://vault/nats/password"})
	c, err := checkNATS(t, map[string]string{"NATS_CONTEXT": ctx, "NATS_PASSWORD_FILE": f.passwordFile})
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if got := auth(t, applied(t, &c.NATS)); got != "user u:"+password {
		t.Errorf("auth %q", got)
	}
}

// TestNATSPasswordFileReadAtConnect: the password file is read again at
// each (re)connect, so a rotated password is used without a restart.
func TestNATSPasswordFileReadAtConnect(t *testing.T) {
	f := newNATSFixtures(t)
	c, err := checkNATS(t, map[string]string{"NATS_USER": "u", "NATS_PASSWORD_FILE": f.passwordFile})
	if err != nil {
		t.Fatal(err)
	}
	o := applied(t, &c.NATS)
	if err := os.WriteFile(f.passwordFile, []byte("rotated\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if u, p := o.UserInfo(); u != "u" || p != "rotated" {
		t.Errorf("after rotation %q:%q", u, p)
	}
	if err := os.Remove(f.passwordFile); err != nil {
		t.Fatal(err)
	}
	if _, p := o.UserInfo(); p != "rotated" {
		t.Errorf("a file gone keeps the last password; got %q", p)
	}
}

// TestNATSPasswordRedacted: the effective configuration that `run` logs
// shows neither NATS_PASSWORD nor a password in NATS_URL.
func TestNATSPasswordRedacted(t *testing.T) {
	env := map[string]string{
		"NATS_URL": "nats://a:url-pw-5@h1:4222,nats://token-6@h2:4222", "NATS_USER": "u", "NATS_PASSWORD": "pw-secret-9",
		"TALLYFY_ACCESS_TOKEN": "tok", "TALLYFY_ORG_ID": "org1",
	}
	cfg, err := settings.LoadRun(nil, func(k string) string { return env[k] }, nil)
	if cfg == nil {
		t.Fatalf("LoadRun: %v", err)
	}
	b, _ := json.Marshal(cfg.Effective)
	for _, s := range []string{"pw-secret-9", "url-pw-5", "token-6"} {
		if strings.Contains(string(b), s) {
			t.Errorf("effective configuration shows %s: %s", s, b)
		}
	}
	if cfg.Effective["NATS_PASSWORD"] != "[REDACTED] (NATS_PASSWORD)" {
		t.Errorf("NATS_PASSWORD shown as %q", cfg.Effective["NATS_PASSWORD"])
	}
	if err == nil || !strings.Contains(err.Error(), "NATS_URL holds credentials") {
		t.Errorf("URL credentials beside NATS_USER not refused: %v", err)
	}
}

// TestNATSEffectiveShowsContextURL: when the context gives the servers,
// the effective configuration says so rather than NATS_URL's default.
func TestNATSEffectiveShowsContextURL(t *testing.T) {
	f := newNATSFixtures(t)
	path := f.context(t, "prod", map[string]any{"url": "nats://u:ctx-pw-8@nats-0:4222"})
	env := map[string]string{"NATS_CONTEXT": path, "TALLYFY_ACCESS_TOKEN": "tok", "TALLYFY_ORG_ID": "org1"}
	cfg, err := settings.LoadRun(nil, func(k string) string { return env[k] }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Effective["NATS_URL"]; got != "nats://u:xxxxx@nats-0:4222 (NATS_CONTEXT)" {
		t.Errorf("NATS_URL shown as %q", got)
	}
}
