package settings_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// TestDescribeNamesSettings: the worker's errors name its Config fields;
// an operator reads the environment variables that set them, also when
// the error is wrapped or joined with others.
func TestDescribeNamesSettings(t *testing.T) {
	cfg := worker.Config{DefaultOrg: "org1", Backoff: []time.Duration{time.Hour}, DuplicateWindow: 30 * time.Minute}
	cfg.JobsSubject = "a.*"
	err := fmt.Errorf("starting: %w", cfg.Validate())
	got := settings.Describe(err)
	for _, want := range []string{"DELETER_BACKOFF step 1h0m0s is longer than DELETER_DUPLICATE_WINDOW 30m0s", `DELETER_JOBS_SUBJECT "a.*"`} {
		if !strings.Contains(got, want) {
			t.Errorf("Describe does not say %q:\n%s", want, got)
		}
	}
	for _, field := range []string{"Backoff ", "DuplicateWindow", "JobsSubject"} {
		if strings.Contains(got, field) {
			t.Errorf("Describe still names the field %s:\n%s", field, got)
		}
	}
}

// usageRows are the rows of a Usage table by environment variable (or
// flag, for a flag without one): flag, default and meaning, the columns'
// padding left out.
func usageRows(t *testing.T, s *settings.Set, name string) map[string][]string {
	t.Helper()
	var b strings.Builder
	s.Usage(&b, name)
	rows := map[string][]string{}
	for _, line := range strings.Split(b.String(), "\n") {
		if !strings.HasPrefix(line, "--") {
			continue
		}
		var cols []string
		for _, c := range regexp.MustCompile(`\s{2,}`).Split(line, 4) {
			cols = append(cols, strings.TrimSpace(c))
		}
		if len(cols) != 4 {
			t.Fatalf("usage row %q", line)
		}
		key := cols[1]
		if key == "-" {
			key = cols[0]
		}
		rows[key] = []string{cols[0], cols[2], cols[3]}
	}
	return rows
}

// TestSweepSharesRunSettings: the settings sweep shares with run are the
// same settings, with the same flag, default and help, from one table.
func TestSweepSharesRunSettings(t *testing.T) {
	run := usageRows(t, settings.RunSettingsForTest(), "run")
	sweep := usageRows(t, settings.SweepSettings(&settings.Sweep{}), "sweep")
	shared := []string{
		"NATS_URL", "NATS_CONTEXT", "NATS_CREDS", "NATS_NKEY", "NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE",
		"NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY", "TALLYFY_API_URL", "TALLYFY_ACCESS_TOKEN", "TALLYFY_ACCESS_TOKEN_FILE",
		"TALLYFY_CLIENT_ID", "TALLYFY_CLIENT_SECRET", "TALLYFY_CLIENT_SECRET_FILE", "TALLYFY_TOKEN_URL",
		"TALLYFY_ORG_ID", "TALLYFY_ALLOWED_ORGS", "DELETER_RATE_LIMIT", "DELETER_RATE_BURST", "DELETER_API_TIMEOUT",
		"DELETER_JOBS_STREAM", "DELETER_JOBS_SUBJECT",
	}
	for _, env := range shared {
		r, s := run[env], sweep[env]
		if r == nil || s == nil || strings.Join(r, "|") != strings.Join(s, "|") {
			t.Errorf("%s: run has %q, sweep %q", env, r, s)
		}
	}
	for env := range sweep {
		if run[env] == nil && !strings.HasPrefix(env, "DELETER_") {
			t.Errorf("sweep has %s, which run does not", env)
		}
	}
}

func TestSweepCheck(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string // settings the error must name; none for no error
	}{
		{"token", map[string]string{"TALLYFY_ACCESS_TOKEN": "tok-123", "TALLYFY_ORG_ID": "org1"}, nil},
		{"token file", map[string]string{"TALLYFY_ACCESS_TOKEN_FILE": token, "TALLYFY_ORG_ID": "org1"}, nil},
		{"client credentials", map[string]string{"TALLYFY_CLIENT_ID": "c", "TALLYFY_CLIENT_SECRET": "s", "TALLYFY_ORG_ID": "org1"}, nil},
		{"no credentials", map[string]string{"TALLYFY_ORG_ID": "org1"}, []string{"TALLYFY_ACCESS_TOKEN"}},
		{"two kinds", map[string]string{"TALLYFY_ACCESS_TOKEN": "tok-123", "TALLYFY_ACCESS_TOKEN_FILE": token, "TALLYFY_ORG_ID": "org1"}, []string{"TALLYFY_ACCESS_TOKEN_FILE"}},
		{"missing token file", map[string]string{"TALLYFY_ACCESS_TOKEN_FILE": filepath.Join(dir, "none"), "TALLYFY_ORG_ID": "org1"}, []string{"TALLYFY_ACCESS_TOKEN_FILE"}},
		{"bad API URL", map[string]string{"TALLYFY_ACCESS_TOKEN": "tok-123", "TALLYFY_ORG_ID": "org1", "TALLYFY_API_URL": "ftp://x"}, []string{"TALLYFY_API_URL"}},
		{"bad org", map[string]string{"TALLYFY_ACCESS_TOKEN": "tok-123", "TALLYFY_ORG_ID": "a/b"}, []string{"TALLYFY_ORG_ID"}},
		{"bad allow-list", map[string]string{"TALLYFY_ACCESS_TOKEN": "tok-123", "TALLYFY_ALLOWED_ORGS": "org1,a b"}, []string{"TALLYFY_ALLOWED_ORGS"}},
		{"burst without rate", map[string]string{"TALLYFY_ACCESS_TOKEN": "tok-123", "TALLYFY_ORG_ID": "org1", "DELETER_RATE_BURST": "5"}, []string{"DELETER_RATE_BURST", "DELETER_RATE_LIMIT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c settings.Sweep
			if _, err := settings.SweepSettings(&c).Parse("sweep", nil, func(k string) string { return tc.env[k] }); err != nil {
				t.Fatal(err)
			}
			err := c.Check()
			if len(tc.wantErr) == 0 {
				if err != nil || c.Credentials() == nil {
					t.Errorf("error %v, credentials %v", err, c.Credentials())
				}
				return
			}
			for _, name := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), name) {
					t.Errorf("error %v does not name %s", err, name)
				}
			}
			if err != nil && strings.Contains(err.Error(), "tok-123") {
				t.Errorf("error shows the token: %v", err)
			}
		})
	}
}

// TestAllowedOrg is the worker's allow-list rule.
func TestAllowedOrg(t *testing.T) {
	tests := []struct {
		org, defaultOrg string
		allowed         []string
		want            bool
	}{
		{"org1", "org1", nil, true},
		{"org2", "org1", nil, false},
		{"org2", "org1", []string{"org2", "org3"}, true},
		{"org1", "org1", []string{"org2"}, false},
		{"anything", "", []string{"*"}, true},
		{"org1", "", nil, false},
	}
	for _, tc := range tests {
		if got := (worker.Config{DefaultOrg: tc.defaultOrg, AllowedOrgs: tc.allowed}).Allows(tc.org); got != tc.want {
			t.Errorf("Allows(%q) with default org %q, allowed %q = %v", tc.org, tc.defaultOrg, tc.allowed, got)
		}
	}
}

// TestRepeat: a repeatable flag collects every value, comma lists too.
func TestRepeat(t *testing.T) {
	var got []string
	s := &settings.Set{}
	s.Repeat(&got, "org", "organization")
	if _, err := s.Parse("x", []string{"--org", "a", "--org=b, c", "--org", ""}, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "a b c" {
		t.Errorf("%q", got)
	}
}

// TestArchiveFirstAndVerifyNotFound: a 404 is checked by default, and
// nothing is archived unless DELETER_ARCHIVE_FIRST says so; its value is
// read as the worker's mode, case aside.
func TestArchiveFirstAndVerifyNotFound(t *testing.T) {
	base := map[string]string{"TALLYFY_ACCESS_TOKEN": "tok", "TALLYFY_ORG_ID": "org1"}
	load := func(t *testing.T, kv ...string) *settings.Run {
		t.Helper()
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		c, err := settings.LoadRun(nil, func(k string) string { return env[k] }, io.Discard)
		if err != nil {
			t.Fatalf("LoadRun(%v): %v", kv, err)
		}
		return c
	}
	c := load(t)
	if !c.Worker.VerifyNotFound || c.Worker.ArchiveFirst != worker.ArchiveNever {
		t.Errorf("defaults: verify not found %v, archive first %q; want true, never", c.Worker.VerifyNotFound, c.Worker.ArchiveFirst)
	}
	if c := load(t, "DELETER_VERIFY_NOT_FOUND", "false"); c.Worker.VerifyNotFound {
		t.Error("DELETER_VERIFY_NOT_FOUND=false left the check on")
	}
	for v, want := range map[string]worker.ArchiveMode{"never": worker.ArchiveNever, "job": worker.ArchiveJob, "Always": worker.ArchiveAlways, " job ": worker.ArchiveJob} {
		if got := load(t, "DELETER_ARCHIVE_FIRST", v).Worker.ArchiveFirst; got != want {
			t.Errorf("DELETER_ARCHIVE_FIRST=%q: %q, want %q", v, got, want)
		}
	}
}

// TestEffectiveRedactsOnlyURLs: the start-up log hides passwords in NATS
// URLs, with or without a scheme, and leaves other values that hold an @
// as they are.
func TestEffectiveRedactsOnlyURLs(t *testing.T) {
	env := map[string]string{"TALLYFY_ACCESS_TOKEN": "tok", "TALLYFY_ORG_ID": "org1",
		"DELETER_WORKER_ID": "worker@node-1", "NATS_URL": "u:s3cret@nats-0:4222"}
	c, err := settings.LoadRun(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Effective["DELETER_WORKER_ID"]; !strings.HasPrefix(got, "worker@node-1") {
		t.Errorf("DELETER_WORKER_ID logged as %q, want worker@node-1", got)
	}
	if got := c.Effective["NATS_URL"]; strings.Contains(got, "s3cret") || !strings.Contains(got, "nats-0:4222") {
		t.Errorf("NATS_URL logged as %q: want the host, not the password", got)
	}
}
