package worker

import (
	"sync"
	"time"
)

// heartbeater resets the ack wait of every job held longer than a third of
// it, so a slow API or a long wait never lets the server hand the job to a
// second worker while the first still has it.
type heartbeater struct {
	every time.Duration // the longest a job goes without a reset
	tasks *sync.Map     // *task → struct{}: the jobs in the worker's hands
	done  chan struct{}
}

type heartbeaterParams struct {
	ackWait time.Duration
	tasks   *sync.Map
}

func newHeartbeater(p heartbeaterParams) *heartbeater {
	return &heartbeater{
		every: max(p.ackWait/3, 100*time.Millisecond),
		tasks: p.tasks,
		done:  make(chan struct{}),
	}
}

// start beats until shutdown; wg says when it has stopped.
func (h *heartbeater) start(wg *sync.WaitGroup) {
	wg.Go(func() {
		tick := time.NewTicker(h.every / 2)
		defer tick.Stop()
		for {
			select {
			case <-h.done:
				return
			case now := <-tick.C:
				h.beat(now)
			}
		}
	})
}

func (h *heartbeater) shutdown() { close(h.done) }

// beat resets the ack wait of the jobs whose last reset is due.
func (h *heartbeater) beat(now time.Time) {
	h.tasks.Range(func(k, _ any) bool {
		t := k.(*task)
		if now.UnixNano()-t.lastTouch.Load() >= int64(h.every) {
			if err := t.msg.InProgress(); err == nil {
				t.lastTouch.Store(now.UnixNano())
			}
		}
		return true
	})
}
