package worker

import "time"

// heartbeat resets the ack wait of every job held longer than a third of
// it, so a slow API or a long wait never lets the server hand the job to a
// second worker while the first still has it.
func (w *Worker) heartbeat(done <-chan struct{}) {
	every := max(w.cfg.AckWait/3, 100*time.Millisecond)
	tick := time.NewTicker(every / 2)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			w.tracked.Range(func(k, _ any) bool {
				t := k.(*task)
				if now.UnixNano()-t.lastTouch.Load() >= int64(every) {
					if err := t.msg.InProgress(); err == nil {
						t.lastTouch.Store(now.UnixNano())
					}
				}
				return true
			})
		}
	}
}
