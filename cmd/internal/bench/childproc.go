package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
)

// childProc is a started child and what it reports.
type childProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout bytes.Buffer
	stderr bytes.Buffer
	exited chan error // receives cmd.Wait's error, once
}

func (b *bencher) startChild(loop Loop, c int) (*childProc, error) {
	child := loop
	if loop == LoopWorkerTraced {
		child = LoopWorker
	}
	args := []string{"bench", "--child", string(child), "--nats-url", b.srv.URL(), "--api-url", b.api.URL(),
		"--concurrency", strconv.Itoa(c)}
	if b.profileDir != "" {
		args = append(args, "--cpuprofile", filepath.Join(b.profileDir, profileName(b.runs, loop, c, "child")))
	}
	// The OpenTelemetry SDK reads its settings from the environment: the
	// shell's must not change what is measured, and only the traced child
	// exports, to the bench's sink.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "OTEL_") })
	env = append(env, tokenEnv+"="+b.api.Token())
	if loop == LoopWorkerTraced {
		env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+b.sink.url)
	}
	p := &childProc{exited: make(chan error, 1)}
	p.cmd = exec.Command(b.exe, args...)
	p.cmd.Env = env
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the child: %w", err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	return p, nil
}

// childReport is what the parent learns from a child that has exited.
type childReport struct {
	childStats
	cpu       time.Duration
	maxRSSKiB int64
}

// waitResults waits until the results stream holds n events, then stops
// the child and collects its report. The child is always waited for.
func (p *childProc) waitResults(ctx context.Context, b *bencher, n int, what string) (childReport, error) {
	var rep childReport
	_, results, _ := b.cfg.StreamConfigs()
	stream, err := b.js.Stream(ctx, results.Name)
	if err != nil {
		p.kill()
		return rep, err
	}
	prog := cli.NewProgress(b.stderr, "bench: "+what, n)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var done uint64
	lastProgress := time.Now()
	for done < uint64(n) {
		select {
		case <-ctx.Done():
			p.kill()
			return rep, ctx.Err()
		case err := <-p.exited:
			p.exited <- err
			p.kill()
			return rep, fmt.Errorf("the child exited after %d of %d results (%v):\n%s", done, n, err, p.stderr.String())
		case <-tick.C:
		}
		info, err := stream.Info(ctx)
		if err != nil {
			p.kill()
			return rep, err
		}
		if got := info.State.Msgs; got > done {
			prog.Add(int(got - done))
			done = got
			lastProgress = time.Now()
		} else if time.Since(lastProgress) > stall {
			p.kill()
			return rep, fmt.Errorf("no result for %s after %d of %d:\n%s", stall, done, n, p.stderr.String())
		}
	}
	prog.Done()

	// Closing stdin is the child's signal to stop.
	p.stdin.Close()
	var exitErr error
	select {
	case exitErr = <-p.exited:
	case <-time.After(time.Minute):
		p.kill()
		return rep, fmt.Errorf("the child did not stop within a minute of being told to:\n%s", p.stderr.String())
	}
	if exitErr != nil {
		return rep, fmt.Errorf("the child failed (%v):\n%s", exitErr, p.stderr.String())
	}
	if err := json.Unmarshal(p.stdout.Bytes(), &rep.childStats); err != nil {
		return rep, fmt.Errorf("the child's report %q: %w", p.stdout.String(), err)
	}
	ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return rep, errors.New("no resource usage for the child on this system")
	}
	rep.cpu = time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
	rep.maxRSSKiB = rep.PeakRSS
	if rep.maxRSSKiB == 0 {
		// No /proc: maxrss (KiB on Linux, bytes on macOS) is an upper bound.
		rep.maxRSSKiB = ru.Maxrss
	}
	return rep, nil
}

// kill ends the child and waits for it.
func (p *childProc) kill() {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Kill()
	err := <-p.exited
	p.exited <- err
}
