package main

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBench runs the built binary's bench with tiny numbers (its children
// are the binary re-executed, so it cannot run in-process) and checks that
// the table has both loops with numbers that make sense.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two child processes against embedded servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, "bench", "--jobs", "200", "--concurrency", "4", "--api-latency", "0")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}

	rows := map[string][]string{}
	for line := range strings.Lines(out.String()) {
		f := strings.Fields(line)
		if len(f) >= 10 && f[0] == "0s" && f[1] == "4" {
			rows[f[2]] = f
		}
	}
	for _, loop := range []string{"bare", "worker"} {
		f, ok := rows[loop]
		if !ok {
			t.Fatalf("no %s row in the table:\n%s", loop, out.String())
		}
		// latency concurrency loop jobs jobs/s p50 p99 cpu rss allocs nats other [ratio]
		num := func(i int) float64 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				t.Fatalf("%s row, column %d %q: %v", loop, i, f[i], err)
			}
			return v
		}
		if f[3] != "200" {
			t.Errorf("%s row: jobs %s, want 200", loop, f[3])
		}
		if v := num(4); v < 10 || v > 1e6 {
			t.Errorf("%s row: %v jobs/s", loop, v)
		}
		p50, err1 := time.ParseDuration(f[5])
		p99, err2 := time.ParseDuration(f[6])
		if err1 != nil || err2 != nil || p50 <= 0 || p99 < p50 || p99 > time.Minute {
			t.Errorf("%s row: p50 %s, p99 %s", loop, f[5], f[6])
		}
		if v := num(7); v <= 0 || v > 1000 {
			t.Errorf("%s row: %v CPU s per 10k jobs", loop, v)
		}
		if v := num(8); v < 1 || v > 1024 {
			t.Errorf("%s row: peak RSS %v MiB", loop, v)
		}
		if v := num(9); v < 10 || v > 100000 {
			t.Errorf("%s row: %v allocs per job", loop, v)
		}
		// Every job is at least a publish and an ack in, and the job, the
		// publish ack and the ack confirmation out.
		in, out, ok := strings.Cut(f[10], "+")
		nin, err1 := strconv.ParseFloat(in, 64)
		nout, err2 := strconv.ParseFloat(out, 64)
		if !ok || err1 != nil || err2 != nil || nin < 2 || nin > 10 || nout < 3 || nout > 10 {
			t.Errorf("%s row: NATS messages per job %q", loop, f[10])
		}
	}
	// The worker/bare ratio is the worker row's last column; the bare row
	// has none.
	if f := rows["worker"]; len(f) != len(rows["bare"])+1 {
		t.Errorf("the worker row has no worker/bare ratio: %q", f)
	} else if r, err := strconv.ParseFloat(f[len(f)-1], 64); err != nil || r <= 0 {
		t.Errorf("worker/bare ratio %q", f[len(f)-1])
	}
	for _, want := range []string{"publish time", "target: latency 0, concurrency 4"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestBenchRefusesBadFlags: a bad command line is one line naming the
// flag and a hint, exit 2, whether the flag parser or the bench refuses it.
func TestBenchRefusesBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"concurrency not a number", []string{"--concurrency", "1,lots"}, "--concurrency"},
		{"concurrency zero", []string{"--concurrency", "0"}, "--concurrency"},
		{"bad latency", []string{"--api-latency", "50"}, "--api-latency"},
		{"negative latency", []string{"--api-latency", "0,-5ms"}, "--api-latency"},
		{"bad memory jobs", []string{"--memory", "--memory-jobs", "1000,"}, "--memory-jobs"},
		{"no jobs", []string{"--jobs", "0"}, "flag -jobs"},
		{"no repeat", []string{"--repeat", "0"}, "flag -repeat"},
		{"stray argument", []string{"now"}, "takes no arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(append([]string{"bench"}, tc.args...), env(), &out, &errOut)
			lines := strings.Split(strings.TrimRight(errOut.String(), "\n"), "\n")
			if code != 2 || len(lines) != 2 || !strings.Contains(lines[0], tc.want) || lines[1] != "see 'tallyfy-deleter bench --help'" || out.Len() != 0 {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 2, a line naming %s and the hint", code, errOut.String(), tc.want)
			}
		})
	}
}

// TestBenchChildRefusesBadArgs: a child started without what points it at
// the servers says what it needs, exit 2.
func TestBenchChildRefusesBadArgs(t *testing.T) {
	var errOut bytes.Buffer
	if code := run([]string{"bench", "--child", "worker"}, env(), &bytes.Buffer{}, &errOut); code != 2 || !strings.Contains(errOut.String(), "--nats-url") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 2 naming --nats-url", code, errOut.String())
	}
}

// TestBenchFlagsDefaults: --memory changes the defaults of --concurrency
// and --api-latency, never what they were given.
func TestBenchFlagsDefaults(t *testing.T) {
	tests := []struct {
		args      string
		conc      []int
		latencies []time.Duration
		memory    bool
		asJSON    bool
	}{
		{"", []int{1, 16, 64, 256}, []time.Duration{0, 50 * time.Millisecond}, false, false},
		{"--memory", []int{64}, []time.Duration{0}, true, false},
		{"--memory --concurrency 8,16 --api-latency 5ms --json", []int{8, 16}, []time.Duration{5 * time.Millisecond}, true, true},
		{"--concurrency 2 --api-latency 0", []int{2}, []time.Duration{0}, false, false},
	}
	for _, tc := range tests {
		t.Run("["+tc.args+"]", func(t *testing.T) {
			opts, asJSON, code, ok := parseBenchFlags(strings.Fields(tc.args), &bytes.Buffer{}, &bytes.Buffer{})
			if !ok {
				t.Fatalf("refused, exit %d", code)
			}
			if !slices.Equal(opts.Concurrency, tc.conc) || !slices.Equal(opts.Latencies, tc.latencies) ||
				opts.Memory != tc.memory || asJSON != tc.asJSON {
				t.Errorf("concurrency %v, latencies %v, memory %v, json %v", opts.Concurrency, opts.Latencies, opts.Memory, asJSON)
			}
			if opts.Jobs != 10000 || opts.Repeat != 1 || !slices.Equal(opts.MemoryJobs, []int{1000, 100000}) {
				t.Errorf("jobs %d, repeat %d, memory jobs %v", opts.Jobs, opts.Repeat, opts.MemoryJobs)
			}
		})
	}
}
