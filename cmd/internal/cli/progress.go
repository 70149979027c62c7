package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
)

// Progress reports how far a long operation (enqueue, dlq replay, bench)
// has come. On a terminal it redraws one line in place, with a bar, at most
// ten times a second; anywhere else (a log file, CI output, a pipe) it
// writes a plain line at most every two seconds, and one at the end.
//
// It needs no goroutine of its own: Add redraws when enough time has passed.
// All methods are safe for concurrent use. Messages about single items go
// through Logf, so that on a terminal they appear above the bar instead of
// being overwritten by it.
type Progress struct {
	mu       sync.Mutex
	w        io.Writer
	label    string
	total    int // 0: unknown
	count    int
	start    time.Time
	drawn    time.Time // of the last line written
	every    time.Duration
	tty      bool
	finished bool
}

const (
	ttyRedraw   = 100 * time.Millisecond
	plainRedraw = 2 * time.Second
	barWidth    = 24
	// minRateWindow is how long a rate is measured before it is shown.
	minRateWindow = time.Second
)

// NewProgress starts reporting on w. total is the number of items
// expected, or 0 when unknown (stdin, say): then there is no bar, only a
// count and a rate.
func NewProgress(w io.Writer, label string, total int) *Progress {
	now := time.Now()
	p := &Progress{w: w, label: label, total: total, start: now, drawn: now, every: plainRedraw, tty: IsTerminal(w)}
	if p.tty {
		p.every = ttyRedraw
		p.drawLocked(now)
	}
	return p
}

// Add counts n more items done.
func (p *Progress) Add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count += n
	if p.finished {
		return
	}
	if now := time.Now(); now.Sub(p.drawn) >= p.every {
		p.drawLocked(now)
	}
}

// Logf writes one message line (a newline is added). On a terminal the bar
// is cleared first and redrawn below the message.
func (p *Progress) Logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && !p.finished {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
	if p.tty && !p.finished {
		p.drawLocked(time.Now())
	}
}

// Done writes the final line. Calling it again does nothing.
func (p *Progress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = true
	p.drawLocked(time.Now())
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

func (p *Progress) drawLocked(now time.Time) {
	p.drawn = now
	elapsed := now.Sub(p.start)
	var b strings.Builder
	if p.tty {
		b.WriteString("\r")
	}
	b.WriteString(p.label)
	if p.tty && p.total > 0 {
		filled := min(barWidth, p.count*barWidth/p.total)
		b.WriteString(" [" + strings.Repeat("=", filled) + strings.Repeat(" ", barWidth-filled) + "]")
	} else {
		b.WriteString(":")
	}
	if p.total > 0 {
		fmt.Fprintf(&b, " %d/%d (%d%%)", p.count, p.total, min(100, p.count*100/p.total))
	} else {
		fmt.Fprintf(&b, " %d", p.count)
	}
	fmt.Fprintf(&b, ", %s", elapsed.Round(100*time.Millisecond))
	// A rate over a few milliseconds says nothing.
	if elapsed >= minRateWindow && p.count > 0 {
		rate := float64(p.count) / elapsed.Seconds()
		fmt.Fprintf(&b, ", %.0f/s", rate)
		if left := p.total - p.count; left > 0 && !p.finished {
			fmt.Fprintf(&b, ", about %s left", time.Duration(float64(left)/rate*float64(time.Second)).Round(time.Second))
		}
	}
	if p.tty {
		b.WriteString("\x1b[K")
	} else {
		b.WriteString("\n")
	}
	io.WriteString(p.w, b.String())
}

// IsTerminal says whether w is a terminal, looking through a SyncWriter.
func IsTerminal(w io.Writer) bool {
	if s, ok := w.(*SyncWriter); ok {
		w = s.w
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

// SyncWriter makes each Write atomic, for a writer (standard error) that
// Progress lines, item messages and the NATS client's warnings share.
type SyncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func NewSyncWriter(w io.Writer) *SyncWriter {
	if s, ok := w.(*SyncWriter); ok {
		return s
	}
	return &SyncWriter{w: w}
}

func (s *SyncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}
