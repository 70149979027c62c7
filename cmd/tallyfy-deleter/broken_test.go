package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

// TestFaultOneBrokenWorker: three workers share 600 jobs; one of them
// cannot call Tallyfy, broken in a way every rolling update meets sooner or
// later. The two healthy workers must finish every job in about the time
// two workers need on their own (measured first, on a pool of two), with
// nothing dead-lettered and one result per job, while the broken worker
// ends unready, saying why, and holding no job.
func TestFaultOneBrokenWorker(t *testing.T) {
	const (
		jobs           = 600
		concurrency    = 8
		breakerTimeout = 5 * time.Second
		latency        = 20 * time.Millisecond
	)
	settings := []string{
		"DELETER_CONCURRENCY=" + strconv.Itoa(concurrency),
		"DELETER_BREAKER_TIMEOUT=" + breakerTimeout.String(),
	}
	// run starts the healthy workers and, if broken is not nil, a third
	// one set up by it, publishes the jobs and returns how long the pool
	// took to give each its result.
	type brokenWorker struct {
		env []string
		// before runs after the workers are pulling, before any job.
		before func(t *testing.T)
	}
	run := func(t *testing.T, broken func(t *testing.T, p *pool) brokenWorker) (*pool, *workerProc, string, time.Duration) {
		srv := testutil.JetStream(t)
		api := testutil.NewFakeTallyfy(t)
		api.SetLatency(latency)
		api.RecordRequests(false)
		p := newPool(t, srv.URL(), api, settings...)
		p.start("healthy1")
		p.start("healthy2")
		n := 2
		var bw *workerProc
		var addr string
		if broken != nil {
			b := broken(t, p)
			addr = freeAddr(t)
			bw = p.start("broken", append(b.env, "DELETER_HTTP_ADDR="+addr)...)
			n++
			p.waitPulling(n)
			if b.before != nil {
				b.before(t)
			}
		} else {
			p.waitPulling(n)
		}
		runs, bodies := p.addJobs("broken", jobs)
		began := time.Now()
		seqs := p.publish(bodies)
		p.waitResults(jobs, 2*time.Minute)
		took := time.Since(began)
		o := p.settled(seqs)
		p.everyJobDeleted(o, runs, 0, "")
		if bw != nil {
			for _, r := range o.results {
				if r.Worker == bw.id {
					t.Errorf("job %d finished by the broken worker", r.JobSeq)
				}
			}
		}
		return p, bw, addr, took
	}

	// What two workers need alone is the reference.
	var alone time.Duration
	t.Run("two healthy workers alone", func(t *testing.T) {
		_, _, _, alone = run(t, nil)
		t.Logf("%d jobs in %s", jobs, alone.Round(time.Millisecond))
	})
	if alone == 0 {
		t.Fatal("no reference time")
	}

	tests := []struct {
		name   string
		broken func(t *testing.T, p *pool) brokenWorker
		reason string // what its /readyz must say
		metric string // its unable series that must be 1
	}{
		{"API URL refuses connections", func(t *testing.T, _ *pool) brokenWorker {
			return brokenWorker{env: []string{"TALLYFY_API_URL=http://" + freeAddr(t) + "/api"}}
		}, "circuit breaker", "breaker"},
		{"token rejected", func(t *testing.T, _ *pool) brokenWorker {
			path := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(path, []byte("revoked-token\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return brokenWorker{env: []string{"TALLYFY_ACCESS_TOKEN_FILE=" + path}}
		}, "Tallyfy rejected the credentials", "credentials_rejected"},
		{"token file unreadable after start", func(t *testing.T, p *pool) brokenWorker {
			path := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(path, []byte(p.api.Token()+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return brokenWorker{
				env: []string{"TALLYFY_ACCESS_TOKEN_FILE=" + path},
				// A rotation gone wrong: the secret is now a directory.
				before: func(t *testing.T) {
					if err := os.Remove(path); err != nil {
						t.Fatal(err)
					}
					if err := os.Mkdir(path, 0o700); err != nil {
						t.Fatal(err)
					}
				},
			}
		}, "credentials unreadable", "credentials_unreadable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, bw, addr, took := run(t, tt.broken)
			if limit := 2*alone + breakerTimeout; took > limit {
				t.Errorf("%d jobs took %s with one broken worker, more than %s (twice the %s two workers need alone, plus a breaker timeout): the broken one held the pool",
					jobs, took.Round(time.Millisecond), limit, alone.Round(time.Millisecond))
			}
			code, body := get(t, "http://"+addr+"/readyz")
			var ready struct {
				Ready   bool     `json:"ready"`
				Reasons []string `json:"reasons"`
			}
			_ = json.Unmarshal([]byte(body), &ready)
			if code != 503 || ready.Ready || !strings.Contains(strings.Join(ready.Reasons, "; "), tt.reason) {
				t.Errorf("broken worker's /readyz: %d %s; want 503 saying %q", code, body, tt.reason)
			}
			if tt.metric == "credentials_unreadable" && strings.Contains(body, "breaker") {
				t.Errorf("/readyz blames the breaker for a file that cannot be read: %s", body)
			}
			_, m := get(t, "http://"+addr+"/metrics")
			for _, want := range []string{
				`tallyfy_deleter_unable{reason="` + tt.metric + `"} 1`,
				"tallyfy_deleter_jobs_in_flight 0",
			} {
				if !strings.Contains(m, want) {
					t.Errorf("broken worker's /metrics lacks %s", want)
				}
			}
			handedBack := logLines(bw, "this worker cannot call Tallyfy: job handed back to the pool")
			if len(handedBack) == 0 {
				t.Errorf("the broken worker handed no job back: it took none, so this proved nothing")
			}
			said := logLines(bw, "this worker cannot call Tallyfy: its jobs go back to the pool, and it takes none but a probe until it can")
			if len(said) != 1 || said[0]["level"] != "error" {
				t.Errorf("the broken worker logged why %d times (%v), want once at error", len(said), said)
			}
			p.alive()
			t.Logf("%d jobs in %s (two workers alone: %s); the broken worker handed back %d jobs and says %q",
				jobs, took.Round(time.Millisecond), alone.Round(time.Millisecond), len(handedBack), ready.Reasons)
		})
	}
}
