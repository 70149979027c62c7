package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// binary is the tallyfy-deleter built once for the tests that drive it as
// its users do.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tallyfy-deleter-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "tallyfy-deleter")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binary:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestRunRefusesBadSettings(t *testing.T) {
	base := []string{"TALLYFY_ACCESS_TOKEN", "tok", "TALLYFY_ORG_ID", "org1"}
	dir := t.TempDir()
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fileOf := func(kind, path string) []string {
		if kind == "token" {
			return []string{"TALLYFY_ACCESS_TOKEN_FILE", path, "TALLYFY_ORG_ID", "org1"}
		}
		return []string{"TALLYFY_CLIENT_ID", "c", "TALLYFY_CLIENT_SECRET_FILE", path, "TALLYFY_ORG_ID", "org1"}
	}
	tests := []struct {
		name  string
		env   []string
		args  []string
		names []string // settings the message must name
	}{
		{"no credentials", []string{"TALLYFY_ORG_ID", "org1"}, nil, []string{"TALLYFY_ACCESS_TOKEN"}},
		{"both credentials", append(base, "TALLYFY_ACCESS_TOKEN_FILE", "/x"), nil, []string{"TALLYFY_ACCESS_TOKEN_FILE"}},
		{"missing token file", fileOf("token", "/nonexistent/token"), nil, []string{"TALLYFY_ACCESS_TOKEN_FILE"}},
		{"token file is a directory", fileOf("token", dir), nil, []string{"TALLYFY_ACCESS_TOKEN_FILE", "is a directory"}},
		{"token file empty", fileOf("token", emptyFile), nil, []string{"TALLYFY_ACCESS_TOKEN_FILE", "empty"}},
		{"client secret file is a directory", fileOf("secret", dir), nil, []string{"TALLYFY_CLIENT_SECRET_FILE", "is a directory"}},
		{"client secret file empty", fileOf("secret", emptyFile), nil, []string{"TALLYFY_CLIENT_SECRET_FILE", "empty"}},
		{"bad token URL", []string{"TALLYFY_CLIENT_ID", "c", "TALLYFY_CLIENT_SECRET", "s", "TALLYFY_TOKEN_URL", "ftp://x", "TALLYFY_ORG_ID", "org1"}, nil, []string{"TALLYFY_TOKEN_URL"}},
		{"concurrency zero", append(base, "DELETER_CONCURRENCY", "0"), nil, []string{"DELETER_CONCURRENCY", "from 1 to 10000"}},
		{"concurrency negative", append(base, "DELETER_CONCURRENCY", "-3"), nil, []string{"DELETER_CONCURRENCY"}},
		{"concurrency too high", append(base, "DELETER_CONCURRENCY", "10001"), nil, []string{"DELETER_CONCURRENCY"}},
		{"max deliver zero", append(base, "DELETER_MAX_DELIVER", "0"), nil, []string{"DELETER_MAX_DELIVER"}},
		{"breaker failures zero", append(base, "DELETER_BREAKER_FAILURES", "0"), nil, []string{"DELETER_BREAKER_FAILURES"}},
		{"breaker timeout zero", append(base, "DELETER_BREAKER_TIMEOUT", "0s"), nil, []string{"DELETER_BREAKER_TIMEOUT"}},
		{"api timeout zero", append(base, "DELETER_API_TIMEOUT", "0s"), nil, []string{"DELETER_API_TIMEOUT"}},
		{"shutdown timeout zero", append(base, "DELETER_SHUTDOWN_TIMEOUT", "0s"), nil, []string{"DELETER_SHUTDOWN_TIMEOUT"}},
		{"ack wait zero", append(base, "DELETER_ACK_WAIT", "0s"), nil, []string{"DELETER_ACK_WAIT"}},
		{"replicas zero", append(base, "DELETER_STREAM_REPLICAS", "0"), nil, []string{"DELETER_STREAM_REPLICAS"}},
		{"burst zero", append(base, "DELETER_RATE_LIMIT", "5", "DELETER_RATE_BURST", "0"), nil, []string{"DELETER_RATE_BURST"}},
		{"no org and no allow-list", []string{"TALLYFY_ACCESS_TOKEN", "tok"}, nil, []string{"TALLYFY_ALLOWED_ORGS", "TALLYFY_ORG_ID"}},
		{"bad org", []string{"TALLYFY_ACCESS_TOKEN", "tok", "TALLYFY_ORG_ID", "a/b"}, nil, []string{"TALLYFY_ORG_ID"}},
		{"concurrency not a number", append(base, "DELETER_CONCURRENCY", "lots"), nil, []string{"DELETER_CONCURRENCY"}},
		{"concurrency zero by flag", base, []string{"--concurrency", "-1"}, []string{"DELETER_CONCURRENCY"}},
		{"bad backoff", append(base, "DELETER_BACKOFF", "1s,soon"), nil, []string{"DELETER_BACKOFF"}},
		{"backoff beyond the duplicate window", append(base, "DELETER_BACKOFF", "1h", "DELETER_DUPLICATE_WINDOW", "30m"), nil, []string{"DELETER_BACKOFF", "DELETER_DUPLICATE_WINDOW"}},
		{"bad duration", append(base, "DELETER_ACK_WAIT", "30"), nil, []string{"DELETER_ACK_WAIT"}},
		{"bad bool", append(base, "DELETER_PROVISION", "maybe"), nil, []string{"DELETER_PROVISION"}},
		{"bad log format", append(base, "LOG_FORMAT", "xml"), nil, []string{"LOG_FORMAT"}},
		{"bad log level", append(base, "LOG_LEVEL", "loud"), nil, []string{"LOG_LEVEL"}},
		{"bad API URL", append(base, "TALLYFY_API_URL", "ftp://x"), nil, []string{"TALLYFY_API_URL"}},
		{"wildcard subject", append(base, "DELETER_JOBS_SUBJECT", "a.*"), nil, []string{"DELETER_JOBS_SUBJECT"}},
		{"archive first not a mode", append(base, "DELETER_ARCHIVE_FIRST", "true"), nil, []string{"DELETER_ARCHIVE_FIRST", "never, job or always"}},
		{"archive first not a mode by flag", base, []string{"--archive-first", "sometimes"}, []string{"DELETER_ARCHIVE_FIRST"}},
		{"verify not found not a bool", append(base, "DELETER_VERIFY_NOT_FOUND", "perhaps"), nil, []string{"DELETER_VERIFY_NOT_FOUND"}},
		{"NATS CA missing", append(base, "NATS_TLS_CA", "/nonexistent/ca.pem"), nil, []string{"NATS_TLS_CA", "no such file"}},
		{"NATS CA is a directory", append(base, "NATS_TLS_CA", dir), nil, []string{"NATS_TLS_CA", "is a directory"}},
		{"NATS CA empty", append(base, "NATS_TLS_CA", emptyFile), nil, []string{"NATS_TLS_CA", "is empty"}},
		{"NATS CA by flag", base, []string{"--nats-tls-ca", emptyFile}, []string{"NATS_TLS_CA", "is empty"}},
		{"NATS cert without key", append(base, "NATS_TLS_CERT", emptyFile), nil, []string{"NATS_TLS_CERT", "NATS_TLS_KEY"}},
		{"NATS key without cert", append(base, "NATS_TLS_KEY", emptyFile), nil, []string{"NATS_TLS_KEY", "NATS_TLS_CERT"}},
		{"NATS nkey missing", append(base, "NATS_NKEY", "/nonexistent/user.nk"), nil, []string{"NATS_NKEY", "no such file"}},
		{"NATS creds empty", append(base, "NATS_CREDS", emptyFile), nil, []string{"NATS_CREDS", "is empty"}},
		{"NATS password file a directory", append(base, "NATS_USER", "u", "NATS_PASSWORD_FILE", dir), nil, []string{"NATS_PASSWORD_FILE", "is a directory"}},
		{"NATS password and password file", append(base, "NATS_USER", "u", "NATS_PASSWORD", "tok", "NATS_PASSWORD_FILE", emptyFile), nil, []string{"NATS_PASSWORD", "NATS_PASSWORD_FILE"}},
		{"NATS password without user", append(base, "NATS_PASSWORD", "tok"), nil, []string{"NATS_PASSWORD", "NATS_USER"}},
		{"NATS two kinds of credentials", append(base, "NATS_CREDS", emptyFile, "NATS_USER", "u", "NATS_PASSWORD", "tok"), nil, []string{"NATS_CREDS", "NATS_USER"}},
		{"NATS context missing", append(base, "NATS_CONTEXT", "/nonexistent/prod.json"), nil, []string{"NATS_CONTEXT", "no such file"}},
		{"NATS context a directory", append(base, "NATS_CONTEXT", dir+"/"), nil, []string{"NATS_CONTEXT", "is a directory"}},
		{"NATS URL not for NATS", append(base, "NATS_URL", "https://nats.example"), nil, []string{"NATS_URL"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(append([]string{"run"}, tc.args...), env(tc.env...), &out, &errOut)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, errOut.String())
			}
			for _, n := range tc.names {
				if !strings.Contains(errOut.String(), n) {
					t.Errorf("message does not name %s:\n%s", n, errOut.String())
				}
			}
			if strings.Contains(errOut.String(), "tok\"") || strings.Contains(errOut.String(), "=tok") {
				t.Errorf("message shows the token:\n%s", errOut.String())
			}
		})
	}
}

// TestRunRefusesUnreadableTokenFile: a token file owned by someone else is
// refused at start, like a missing one.
func TestRunRefusesUnreadableTokenFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file: permissions cannot make one unreadable")
	}
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("tok"), 0o000); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run([]string{"run"}, env("TALLYFY_ACCESS_TOKEN_FILE", path, "TALLYFY_ORG_ID", "org1"), &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "TALLYFY_ACCESS_TOKEN_FILE") || !strings.Contains(errOut.String(), "permission denied") {
		t.Errorf("exit %d, want 2 naming TALLYFY_ACCESS_TOKEN_FILE and the permission; stderr:\n%s", code, errOut.String())
	}
}

func TestRunHelpListsSettings(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"run", "--help"}, env(), &out, &errOut); code != 0 {
		t.Fatalf("exit %d", code)
	}
	// Help is asked for: it goes to standard output, so `run --help | less` works.
	for _, want := range []string{"NATS_URL", "nats://127.0.0.1:4222", "TALLYFY_ACCESS_TOKEN_FILE", "DELETER_CONCURRENCY", "--concurrency", "DELETER_BACKOFF", "1s,5s,30s,2m", "DELETER_SHUTDOWN_TIMEOUT", "25s", "LOG_FORMAT"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not show %q on standard output", want)
		}
	}
	if errOut.Len() != 0 {
		t.Errorf("--help wrote to standard error:\n%s", errOut.String())
	}
}

func TestDemo(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"demo"}, env(), &out, &errOut); code != 0 {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"deleted", "not_found", "not_archived", "forbidden", "rejected", "retries_exhausted", "invalid_job", "org_not_allowed", "archived first", "3 due, 3 published", "complete: yes", "every job got exactly one outcome"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

// lockedBuffer is a bytes.Buffer a child process and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBinarySIGTERMWithJobsInFlight runs the built binary against a real
// NATS server: SIGTERM with jobs in flight exits 0 within the shutdown
// timeout, and a second worker finishes every job.
func TestBinarySIGTERMWithJobsInFlight(t *testing.T) {
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	const jobs = 20
	for i := range jobs {
		api.AddRun("org1", fmt.Sprintf("run%d", i), true)
	}
	api.SetLatency(time.Second)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(api.Token()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(id string) (*exec.Cmd, *lockedBuffer) {
		cmd := exec.Command(binary, "run")
		cmd.Env = append(os.Environ(),
			"NATS_URL="+srv.URL(), "TALLYFY_API_URL="+api.URL(), "TALLYFY_ACCESS_TOKEN_FILE="+tokenFile,
			"TALLYFY_ORG_ID=org1", "DELETER_CONCURRENCY=4", "DELETER_SHUTDOWN_TIMEOUT=300ms",
			"DELETER_API_TIMEOUT=5s", "DELETER_WORKER_ID="+id, "LOG_LEVEL=debug")
		logs := &lockedBuffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, logs
	}
	first, firstLogs := start("first")
	_, js := testutil.Connect(t, srv.URL())
	ctx := context.Background()
	waitFor(t, 10*time.Second, "the jobs stream", func() bool { _, err := js.Stream(ctx, worker.DefaultJobsStream); return err == nil })
	for i := range jobs {
		if _, err := js.Publish(ctx, worker.DefaultJobsSubject, fmt.Appendf(nil, `{"run_id":"run%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "jobs in flight", func() bool { return api.RequestCount() >= 4 })
	began := time.Now()
	if err := first.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := first.Wait()
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, firstLogs.String())
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("shutdown took %s", took)
	}
	if strings.Contains(firstLogs.String(), api.Token()) {
		t.Errorf("the token appears in the log")
	}

	api.SetLatency(0)
	start("second")
	cons, err := js.OrderedConsumer(ctx, worker.DefaultResultsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	deadline, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for len(seen) < jobs {
		m, err := cons.Next(jetstream.FetchContext(deadline))
		if err != nil {
			t.Fatalf("%d of %d results: %v", len(seen), jobs, err)
		}
		seen[m.Headers().Get("Nats-Msg-Id")]++
	}
	for i := range jobs {
		if !api.Deleted("org1", fmt.Sprintf("run%d", i)) {
			t.Errorf("run%d not deleted", i)
		}
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBinaryLinksNoTestCode: the binary that runs in production carries the
// embedded servers of demo and bench, but not the package testing.
func TestBinaryLinksNoTestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "testing" || strings.HasSuffix(pkg, "/testutil") {
			t.Errorf("the binary links %s", pkg)
		}
	}
}
