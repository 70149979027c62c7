package ops

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
)

// errScanEnd is the end of a scan: the server has nothing more to deliver.
var errScanEnd = errors.New("no more messages")

// waiter waits for the next message of a scan (of result events, or of
// dead letters). When none comes for a while, it asks the server whether
// any is left: those counted at the start may have expired, or been
// deleted by a replay running meanwhile, since. Its deadline is renewed once a scanIdle, not for
// every event: a context and a timer per event cost about as much as the
// event's decoding.
type waiter struct {
	ctx    context.Context // the scan's
	cons   jetstream.Consumer
	it     jetstream.MessagesContext
	idle   context.Context // ends scanIdle after it was made
	cancel context.CancelFunc
	last   time.Time // when an event last came
}

func newWaiter(ctx context.Context, cons jetstream.Consumer, it jetstream.MessagesContext) *waiter {
	w := &waiter{ctx: ctx, cons: cons, it: it, last: time.Now()}
	w.idle, w.cancel = context.WithTimeout(ctx, scanIdle)
	return w
}

func (w *waiter) stop() { w.cancel() }

// next returns the event after the one of stream sequence seen, or
// errScanEnd.
func (w *waiter) next(seen uint64) (jetstream.Msg, error) {
	for {
		m, err := w.it.Next(jetstream.NextContext(w.idle))
		if err == nil {
			w.last = time.Now()
			return m, nil
		}
		if !errors.Is(err, context.DeadlineExceeded) || w.ctx.Err() != nil {
			return nil, err
		}
		w.cancel()
		w.idle, w.cancel = context.WithTimeout(w.ctx, scanIdle)
		idle := time.Since(w.last)
		if idle < scanIdle {
			continue // the deadline passed while events were coming
		}
		if idle > cli.ToolTimeout {
			return nil, err
		}
		// Nothing came for scanIdle: done if the server has nothing left
		// to deliver and delivered nothing that has not come yet.
		ictx, icancel := context.WithTimeout(w.ctx, cli.ToolTimeout)
		info, err := w.cons.Info(ictx)
		icancel()
		if err != nil {
			return nil, err
		}
		if info.NumPending == 0 && info.Delivered.Stream <= seen {
			return nil, errScanEnd
		}
	}
}
