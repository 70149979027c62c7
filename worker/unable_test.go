package worker_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// refusedURL is an address where nothing listens.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/api"
}

// TestBrokenWorkerHandsJobsToThePool: a worker that cannot call Tallyfy
// gives back at once every job it took, without spending an attempt, so a
// healthy worker finishes them all; it ends unready, holding nothing.
func TestBrokenWorkerHandsJobsToThePool(t *testing.T) {
	tests := []struct {
		name string
		// client builds the broken worker's API client.
		client func(t *testing.T, e *env) *tallyfy.Client
		want   worker.Inability
		// maxDeliver is 1 where a nak would strand the job, so only a
		// hand-back copy keeps it; a broken URL's first failures, while the
		// breaker is still closed, are real attempts and need more.
		maxDeliver int
	}{
		{"API refuses connections", func(t *testing.T, e *env) *tallyfy.Client {
			c, err := tallyfy.New(refusedURL(t), tallyfy.WithToken(e.api.Token()), tallyfy.WithTimeout(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, worker.BreakerNotClosed, 3},
		{"token rejected", func(t *testing.T, e *env) *tallyfy.Client {
			c, err := tallyfy.New(e.api.URL(), tallyfy.WithToken("revoked-token"), tallyfy.WithTimeout(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, worker.CredentialsRejected, 1},
		{"token file unreadable", func(t *testing.T, e *env) *tallyfy.Client {
			dir := filepath.Join(t.TempDir(), "token") // a directory, not a file
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			c, err := tallyfy.New(e.api.URL(), tallyfy.WithTokenSource(tallyfy.FileTokenSource(dir)), tallyfy.WithTimeout(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, worker.CredentialsUnreadable, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const jobs = 40
			e := newEnv(t)
			cfg := testConfig()
			cfg.BreakerTimeout = time.Second
			cfg.MaxDeliver = tt.maxDeliver
			cfg.Backoff = []time.Duration{time.Millisecond}
			cfg.WorkerID = "broken"
			broken := e.startWith(cfg, tt.client(t, e))
			var seqs []uint64
			for i := range jobs {
				run := fmt.Sprintf("r%d", i)
				e.api.AddRun(testOrg, run, true)
				seqs = append(seqs, e.publish(job(testOrg, run)))
			}
			// The broken worker takes the first jobs alone.
			e.waitFor(10*time.Second, "the broken worker to find out", func() bool { return broken.w.Health().Unable == tt.want })
			cfg.WorkerID = "healthy"
			e.start(cfg)
			res := e.waitResults(jobs, 30*time.Second)
			if n := len(e.deadLetters()); n != 0 {
				t.Errorf("%d dead letters, want none", n)
			}
			perSeq := map[uint64]int{}
			retried := 0
			for _, r := range res {
				perSeq[r.JobSeq]++
				if r.Outcome != worker.OutcomeDeleted || r.Worker != "healthy" {
					t.Errorf("job %d: %s/%s by %s, want deleted by the healthy worker", r.JobSeq, r.Outcome, r.Reason, r.Worker)
				}
				if r.Attempts > 1 {
					retried++
				}
				if r.Attempts > 2 {
					t.Errorf("job %d: %d attempts: being handed back is not an attempt", r.JobSeq, r.Attempts)
				}
			}
			// A call that reached Tallyfy is a real attempt, even one that
			// failed; one refused for the credentials, or never sent, is not.
			if tt.want != worker.BreakerNotClosed && retried != 0 {
				t.Errorf("%d jobs report a second attempt, want none: being handed back is not an attempt", retried)
			}
			for _, s := range seqs {
				if perSeq[s] != 1 {
					t.Errorf("job %d has %d results, want 1", s, perSeq[s])
				}
			}
			h := broken.w.Health()
			if h.Unable != tt.want || h.Reason == "" {
				t.Errorf("broken worker: %v %q, want %v with a reason", h.Unable, h.Reason, tt.want)
			}
			e.waitFor(5*time.Second, "the broken worker to hold nothing", func() bool { return broken.w.Health().InFlight == 0 })
			logs := broken.logs.String()
			if n := strings.Count(logs, "this worker cannot call Tallyfy: its jobs go back to the pool"); n != 1 {
				t.Errorf("the broken worker logged its inability %d times, want once:\n%s", n, tail(logs, 20))
			}
			if !strings.Contains(logs, "job handed back to the pool") {
				t.Errorf("the broken worker handed no job back; the test proved nothing")
			}
			if tt.want == worker.CredentialsUnreadable {
				if h.BreakerState.String() != "closed" {
					t.Errorf("breaker %s: a file that cannot be read is not Tallyfy failing", h.BreakerState)
				}
				if !strings.HasPrefix(h.Reason, "credentials unreadable: ") {
					t.Errorf("reason %q, want it to say the credentials are unreadable", h.Reason)
				}
			}
		})
	}
}

// TestUnreadableTokenFileRecovers: a token file that becomes unreadable
// (a rotation gone wrong) makes the worker hand its job back, without an
// API call, a spent attempt or a breaker failure; once the file is right
// again the worker finds out by itself and deletes the job.
func TestUnreadableTokenFileRecovers(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(e.api.Token()), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := tallyfy.New(e.api.URL(), tallyfy.WithTokenSource(tallyfy.FileTokenSource(path)), tallyfy.WithTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.MaxDeliver = 1
	r := e.startWith(cfg, c)
	e.api.AddRun(testOrg, "rfile", true)

	if err := os.WriteFile(path, nil, 0o600); err != nil { // emptied
		t.Fatal(err)
	}
	seq := e.publish(job(testOrg, "rfile"))
	e.waitFor(10*time.Second, "credentials unreadable", func() bool { return r.w.Health().Unable == worker.CredentialsUnreadable })
	e.waitFor(5*time.Second, "the job to be handed back", func() bool {
		return strings.Contains(r.logs.String(), "job handed back to the pool") && r.w.Health().InFlight == 0
	})
	if n := e.api.RequestCount(); n != 0 {
		t.Errorf("Tallyfy got %d requests while the token could not be read", n)
	}
	if s := r.w.Health().BreakerState.String(); s != "closed" {
		t.Errorf("breaker %s after unreadable credentials, want closed", s)
	}

	if err := os.WriteFile(path, []byte(e.api.Token()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := e.result(seq, 10*time.Second)
	if res.Outcome != worker.OutcomeDeleted || res.Attempts != 1 {
		t.Errorf("after the file was fixed: %s/%s, attempts %d; want deleted on its first real attempt", res.Outcome, res.Reason, res.Attempts)
	}
	if h := r.w.Health(); h.Unable != worker.Able {
		t.Errorf("still unable after the file was fixed: %q", h.Reason)
	}
	if n := len(e.deadLetters()); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}
