package worker

import (
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// gate holds the breaker's timing, which gobreaker does not expose, the
// pull pause set by 429 and 401 answers, and a channel closed at every
// change of the worker's ability to call Tallyfy.
type gate struct {
	mu        sync.Mutex
	ch        chan struct{} // closed at the next change
	openTill  time.Time
	pauseTill time.Time
}

func (g *gate) breakerOpened(to gobreaker.State, timeout time.Duration) {
	if to != gobreaker.StateOpen {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.openTill = time.Now().Add(timeout)
}

func (g *gate) changed() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.ch)
	g.ch = make(chan struct{})
}

// changes is closed at the next change.
func (g *gate) changes() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ch
}

func (g *gate) openUntil() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.openTill
}

func (g *gate) pause(until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if until.After(g.pauseTill) {
		g.pauseTill = until
		close(g.ch)
		g.ch = make(chan struct{})
	}
}

func (g *gate) paused() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pauseTill
}
