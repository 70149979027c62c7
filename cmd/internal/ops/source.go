package ops

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// Source yields the lines Enqueue reads, one at a time. It need not be
// safe for concurrent use: Enqueue calls Next from one goroutine.
type Source interface {
	// Next returns the next line, valid until the following call, and
	// io.EOF after the last. tooLong says the line was longer than
	// worker.MaxJobSize and was skipped rather than read into memory;
	// Enqueue rejects it. Any other error ends the enqueue.
	Next() (line []byte, tooLong bool, err error)
}

// Args is a Source of the given lines, such as jobs given as command-line
// arguments, one job each.
func Args(lines []string) Source { return &argSource{lines: lines} }

type argSource struct {
	lines []string
	i     int
}

func (a *argSource) Next() ([]byte, bool, error) {
	if a.i == len(a.lines) {
		return nil, false, io.EOF
	}
	a.i++
	return []byte(a.lines[a.i-1]), false, nil
}

// sourceLine is one result of Source.Next, copied.
type sourceLine struct {
	line    []byte
	tooLong bool
	err     error // io.EOF at the end
}

// readLines reads src in a goroutine of its own, so that an interrupt is
// not held up by a read waiting for a terminal or a pipe. The goroutine
// ends after sending an error (io.EOF at the end) or when done is closed;
// a read that never returns is left behind, which only happens when the
// process is about to exit.
func readLines(done <-chan struct{}, src Source) <-chan sourceLine {
	ch := make(chan sourceLine, 64)
	go func() {
		for {
			line, tooLong, err := src.Next()
			select {
			case ch <- sourceLine{line: bytes.Clone(line), tooLong: tooLong, err: err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// CountLines counts the lines of a regular file, for a progress bar, and
// rewinds it. Anything else (a pipe, say) cannot be read twice: 0.
func CountLines(f *os.File) (int, error) {
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return 0, nil
	}
	br := bufio.NewReaderSize(f, 64<<10)
	n, last := 0, byte('\n')
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			last = chunk[len(chunk)-1]
			n += bytes.Count(chunk, []byte{'\n'})
		}
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return 0, err
		}
	}
	if last != '\n' {
		n++
	}
	_, err := f.Seek(0, io.SeekStart)
	return n, err
}

// LineReader is a Source of the lines of a reader, of up to about
// worker.MaxJobSize bytes; a longer line is reported as too long and
// skipped, not read into memory.
type LineReader struct{ r *bufio.Reader }

// NewLineReader reads the lines of r.
func NewLineReader(r io.Reader) *LineReader {
	return &LineReader{r: bufio.NewReaderSize(r, worker.MaxJobSize+2)} // + "\r\n"
}

// Next returns the next line, valid until the next call, or io.EOF.
func (lr *LineReader) Next() ([]byte, bool, error) {
	tooLong := false
	for {
		chunk, err := lr.r.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			tooLong = true
			continue
		case err == io.EOF:
			if len(chunk) == 0 && !tooLong {
				return nil, false, io.EOF
			}
		case err != nil:
			return nil, false, err
		}
		if tooLong {
			return nil, true, nil
		}
		return chunk, false, nil
	}
}
