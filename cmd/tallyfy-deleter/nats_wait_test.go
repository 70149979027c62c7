package main

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// freePort is a TCP port nothing listens on, for a server to start on
// later.
func freePort(t *testing.T) int {
	t.Helper()
	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A worker started before NATS waits for it, live and unready, and works
// once it is there; one stopped while it waits exits 0 at once.
func TestRunWaitsForNATS(t *testing.T) {
	api := testutil.NewFakeTallyfy(t)
	start := func(t *testing.T, port int) (*exec.Cmd, *lockedBuffer, string) {
		addr := freeAddr(t)
		cmd, logs := startBinaryCmd(t, "NATS_URL=nats://127.0.0.1:"+strconv.Itoa(port), "TALLYFY_API_URL="+api.URL(),
			"TALLYFY_ACCESS_TOKEN="+api.Token(), "TALLYFY_ORG_ID=org1", "DELETER_HTTP_ADDR="+addr)
		waitFor(t, 10*time.Second, "a warning that NATS is unreachable", func() bool {
			return strings.Contains(logs.String(), "NATS unreachable; trying again")
		})
		return cmd, logs, "http://" + addr
	}

	t.Run("then NATS starts", func(t *testing.T) {
		port := freePort(t)
		cmd, _, base := start(t, port)
		if code, body := get(t, base+"/healthz"); code != 200 {
			t.Errorf("/healthz while waiting for NATS: %d %s", code, body)
		}
		if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "connecting to NATS") {
			t.Errorf("/readyz while waiting for NATS: %d %s, want 503 saying connecting to NATS", code, body)
		}

		srv := testutil.JetStreamWith(t, testutil.NATSOptions{Port: port})
		waitFor(t, 20*time.Second, "ready once NATS is up", func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })
		_, js := testutil.Connect(t, srv.URL())
		api.AddRun("org1", "late1", true)
		if _, err := js.Publish(context.Background(), worker.DefaultJobsSubject, []byte(`{"run_id":"late1"}`)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the job deleted", func() bool { return api.Deleted("org1", "late1") })
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	})

	t.Run("stopped while waiting", func(t *testing.T) {
		cmd, logs, _ := start(t, freePort(t))
		began := time.Now()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("exit after SIGTERM while waiting for NATS: %v", err)
		}
		// At most one connect attempt (2 s) to finish.
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("stopping while waiting for NATS took %s", took)
		}
		if !strings.Contains(logs.String(), "stopped before NATS could be reached") {
			t.Errorf("the log does not say the worker stopped before reaching NATS")
		}
	})
}
