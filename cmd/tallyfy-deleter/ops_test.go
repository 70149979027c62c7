package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startBinary runs `tallyfy-deleter run` with env added to the process's.
func startBinary(t *testing.T, env ...string) *lockedBuffer {
	t.Helper()
	_, logs := startBinaryCmd(t, env...)
	return logs
}

// startBinaryCmd is startBinary, with the process to signal.
func startBinaryCmd(t *testing.T, env ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(binary, "run")
	cmd.Env = append(os.Environ(), env...)
	logs := &lockedBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	})
	return cmd, logs
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// TestMetricsAndProbes reads /metrics, /healthz and /readyz over HTTP from
// the built binary, through an outage and back.
func TestMetricsAndProbes(t *testing.T) {
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	addr := freeAddr(t)
	base := "http://" + addr
	logs := startBinary(t, "NATS_URL="+srv.URL(), "TALLYFY_API_URL="+api.URL(), "TALLYFY_ACCESS_TOKEN="+api.Token(),
		"TALLYFY_ORG_ID=org1", "DELETER_HTTP_ADDR="+addr, "DELETER_BREAKER_FAILURES=2", "DELETER_BREAKER_TIMEOUT=1s",
		"DELETER_BACKOFF=50ms")
	waitFor(t, 10*time.Second, "ready", func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz %d %s", code, body)
	}

	_, js := testutil.Connect(t, srv.URL())
	ctx := context.Background()
	api.AddRun("org1", "ok1", true)
	if _, err := js.Publish(ctx, worker.DefaultJobsSubject, []byte(`{"run_id":"ok1"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, worker.DefaultJobsSubject, []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "two jobs counted", func() bool {
		_, m := get(t, base+"/metrics")
		return strings.Contains(m, `tallyfy_deleter_jobs_total{outcome="deleted",reason=""} 1`) &&
			strings.Contains(m, `tallyfy_deleter_jobs_total{outcome="dead_lettered",reason="invalid_job"} 1`)
	})
	_, m := get(t, base+"/metrics")
	for _, name := range []string{
		`tallyfy_deleter_api_requests_total{code="200"} 1`,
		"tallyfy_deleter_api_request_duration_seconds_bucket",
		"tallyfy_deleter_job_duration_seconds_bucket",
		"tallyfy_deleter_breaker_state 0",
		"tallyfy_deleter_jobs_in_flight 0",
		`tallyfy_deleter_publish_failures_total{kind="result"} 0`,
		`tallyfy_deleter_unable{reason="credentials_unreadable"} 0`,
		`tallyfy_deleter_jobs_handed_back_total{why="unable"} 0`,
		"tallyfy_deleter_consumer_pending",
		"tallyfy_deleter_consumer_ack_pending",
		"tallyfy_deleter_consumer_redelivered",
		"go_goroutines",
	} {
		if !strings.Contains(m, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// Outage: unready while the breaker is open, ready again after.
	api.SetOutage(testutil.Response{Status: 503})
	for i := range 4 {
		api.AddRun("org1", fmt.Sprintf("out%d", i), true)
		if _, err := js.Publish(ctx, worker.DefaultJobsSubject, fmt.Appendf(nil, `{"run_id":"out%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "unready during the outage", func() bool {
		code, body := get(t, base+"/readyz")
		return code == 503 && strings.Contains(body, "breaker")
	})
	_, m = get(t, base+"/metrics")
	if !strings.Contains(m, "tallyfy_deleter_breaker_state 2") {
		t.Errorf("breaker_state is not 2 while open")
	}
	if !strings.Contains(m, `tallyfy_deleter_unable{reason="breaker"} 1`) {
		t.Errorf(`unable{reason="breaker"} is not 1 while the breaker is open`)
	}
	api.EndOutage()
	waitFor(t, 15*time.Second, "ready after the outage", func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })
	waitFor(t, 15*time.Second, "the outage's jobs deleted", func() bool {
		_, m := get(t, base+"/metrics")
		return strings.Contains(m, `tallyfy_deleter_jobs_total{outcome="deleted",reason=""} 5`)
	})
	if strings.Contains(logs.String(), api.Token()) {
		t.Errorf("the token appears in the log")
	}
}

// TestEffectiveConfigLogged: the configuration is logged once at start,
// secrets redacted.
func TestEffectiveConfigLogged(t *testing.T) {
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	logs := startBinary(t, "NATS_URL="+srv.URL(), "TALLYFY_API_URL="+api.URL(), "TALLYFY_ACCESS_TOKEN=sekrit-token-value",
		"TALLYFY_ORG_ID=org1", "DELETER_HTTP_ADDR=off", "DELETER_CONCURRENCY=3")
	waitFor(t, 10*time.Second, "the start-up line", func() bool { return strings.Contains(logs.String(), "effective configuration") })
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "effective configuration") {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatalf("log line is not JSON: %s", l)
			}
		}
	}
	cfg, _ := line["config"].(map[string]any)
	if cfg["TALLYFY_ACCESS_TOKEN"] != "[REDACTED] (TALLYFY_ACCESS_TOKEN)" || cfg["DELETER_CONCURRENCY"] != "3 (DELETER_CONCURRENCY)" || cfg["DELETER_MAX_DELIVER"] != "5" {
		t.Errorf("effective configuration %v", cfg)
	}
	if strings.Contains(logs.String(), "sekrit-token-value") {
		t.Errorf("the token appears in the log")
	}
}

// TestClientCredentials: the binary authenticates with OAuth client
// credentials, form-encoded, and fetches a new token once after a 401.
func TestClientCredentials(t *testing.T) {
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	api.SetToken("") // only OAuth-issued tokens work
	api.SetClient("client-1", "client-secret-1", time.Hour)
	secretFile := t.TempDir() + "/secret"
	if err := os.WriteFile(secretFile, []byte("client-secret-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := startBinary(t, "NATS_URL="+srv.URL(), "TALLYFY_API_URL="+api.URL(), "TALLYFY_TOKEN_URL="+api.TokenURL(),
		"TALLYFY_CLIENT_ID=client-1", "TALLYFY_CLIENT_SECRET_FILE="+secretFile, "TALLYFY_ORG_ID=org1", "DELETER_HTTP_ADDR=off",
		"DELETER_BREAKER_TIMEOUT=1s")
	_, js := testutil.Connect(t, srv.URL())
	ctx := context.Background()
	waitFor(t, 10*time.Second, "the jobs stream", func() bool { _, err := js.Stream(ctx, worker.DefaultJobsStream); return err == nil })
	publish := func(run string) {
		api.AddRun("org1", run, true)
		if _, err := js.Publish(ctx, worker.DefaultJobsSubject, fmt.Appendf(nil, `{"run_id":%q}`, run)); err != nil {
			t.Fatal(err)
		}
	}
	publish("cc1")
	waitFor(t, 10*time.Second, "cc1 deleted", func() bool { return api.Deleted("org1", "cc1") })
	if n := api.TokenRequests(); n != 1 {
		t.Errorf("%d token requests for one job, want 1", n)
	}
	publish("cc2")
	waitFor(t, 10*time.Second, "cc2 deleted with the cached token", func() bool { return api.Deleted("org1", "cc2") })
	api.RevokeTokens()
	publish("cc3")
	waitFor(t, 10*time.Second, "cc3 deleted after one refetch", func() bool { return api.Deleted("org1", "cc3") })
	if n := api.TokenRequests(); n != 2 {
		t.Errorf("%d token requests, want 2 (one more after the 401)", n)
	}
	if strings.Contains(logs.String(), "client-secret-1") {
		t.Errorf("the client secret appears in the log")
	}
}

// TestTakenHTTPAddressDoesNotStopTheWorker: a second worker on the same
// host with the same DELETER_HTTP_ADDR still deletes.
func TestTakenHTTPAddressDoesNotStopTheWorker(t *testing.T) {
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	addr := freeAddr(t)
	common := []string{"NATS_URL=" + srv.URL(), "TALLYFY_API_URL=" + api.URL(), "TALLYFY_ACCESS_TOKEN=" + api.Token(),
		"TALLYFY_ORG_ID=org1", "DELETER_HTTP_ADDR=" + addr}
	startBinary(t, append(common, "DELETER_WORKER_ID=first")...)
	waitFor(t, 10*time.Second, "the first worker's probes", func() bool { code, _ := get(t, "http://"+addr+"/readyz"); return code == 200 })
	second := startBinary(t, append(common, "DELETER_WORKER_ID=second")...)
	waitFor(t, 10*time.Second, "the second worker to start without its probes", func() bool {
		l := second.String()
		return strings.Contains(l, "cannot listen") && strings.Contains(l, "worker starting")
	})
}
