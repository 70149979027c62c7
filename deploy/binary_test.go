package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// binDir holds the binary the tests build; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tallyfy-deleter-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// binary is tallyfy-deleter built from ../cmd/tallyfy-deleter within the main module, with its
// own go.mod (not this module's dependency versions), once per test run. It is built as
// cmd/tallyfy-deleter's own tests build it, so that in CI, which runs those first, the build
// cache has every package of it.
func binary(t testing.TB) string {
	t.Helper()
	path := filepath.Join(binDir, "tallyfy-deleter")
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", path, ".")
		cmd.Dir = filepath.Join("..", "cmd", "tallyfy-deleter")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/tallyfy-deleter: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return path
}

// helpTable is what `tallyfy-deleter <sub> --help` lists: each flag and the environment variable
// that sets it, if any.
type helpTable struct {
	flags map[string]bool // "--nats-url"
	env   map[string]bool // "NATS_URL"
}

var helpRow = regexp.MustCompile(`^(--[a-z0-9-]+)\s+(\S+)\s`)

// help runs `tallyfy-deleter sub --help` and reads its table (FLAG ENV DEFAULT MEANING).
func help(t testing.TB, sub string) helpTable {
	t.Helper()
	out, err := exec.Command(binary(t), sub, "--help").Output()
	if err != nil {
		t.Fatalf("tallyfy-deleter %s --help: %v", sub, err)
	}
	h := helpTable{flags: map[string]bool{}, env: map[string]bool{}}
	for _, line := range strings.Split(string(out), "\n") {
		m := helpRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		h.flags[m[1]] = true
		if m[2] != "-" {
			h.env[m[2]] = true
		}
	}
	if len(h.env) < 5 {
		t.Fatalf("tallyfy-deleter %s --help: read only %d variables from:\n%s", sub, len(h.env), out)
	}
	return h
}

// hermeticEnviron is this process's environment without anything the binary reads, so that a
// developer's NATS_URL or LOG_LEVEL cannot leak into a test.
func hermeticEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NATS_") || strings.HasPrefix(k, "TALLYFY_") || strings.HasPrefix(k, "DELETER_") || strings.HasPrefix(k, "LOG_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// environ is env as KEY=value lines, sorted, after hermeticEnviron.
func environ(env map[string]string) []string {
	out := hermeticEnviron()
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// runBinary runs tallyfy-deleter with args and env to its end, within a minute.
func runBinary(t testing.TB, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = environ(env)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("tallyfy-deleter %s: still running after a minute\n%s", strings.Join(args, " "), e.String())
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return o.String(), e.String(), ee.ExitCode()
		}
		t.Fatalf("tallyfy-deleter %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), 0
}

// workerProc is a running `tallyfy-deleter run`.
type workerProc struct {
	addr string // of /metrics, /healthz and /readyz
	logs *lockedBuffer
}

// startWorker runs `tallyfy-deleter run` with env, which must set DELETER_HTTP_ADDR to
// 127.0.0.1:0, and returns once the worker has said where it serves its probes (its log line
// "serving /metrics, /healthz and /readyz"). The process is killed when the test ends; its log
// is shown if the test failed.
func startWorker(t *testing.T, env map[string]string) *workerProc {
	t.Helper()
	cmd := exec.Command(binary(t), "run")
	cmd.Env = environ(env)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	w := &workerProc{logs: &lockedBuffer{}}
	addr := make(chan string, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			w.logs.Write(append(line, '\n'))
			var l struct {
				Message string `json:"message"`
				Addr    string `json:"addr"`
			}
			if json.Unmarshal(line, &l) == nil && l.Message == "serving /metrics, /healthz and /readyz" {
				select {
				case addr <- l.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("worker log:\n%s", w.logs.String())
		}
	})
	select {
	case w.addr = <-addr:
	case <-exited:
		t.Fatalf("the worker exited before serving its probes:\n%s", w.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the worker did not serve its probes within 30s:\n%s", w.logs.String())
	}
	return w
}

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent readers.
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

// eventually calls cond every 50ms until it returns "" (done), failing with its last answer
// once within has passed.
func eventually(t testing.TB, within time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, why)
		}
		<-tick.C
	}
}
