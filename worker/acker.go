package worker

import (
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// acker double-acks jobs without a goroutine waiting for each
// confirmation: an ack is published with a reply subject of the acker's
// own, and the confirmation, arriving on the acker's one subscription,
// runs the ack's callback. An ack not confirmed within one to two ticks of
// its clock (see expire) fails with errNotConfirmed.
//
// jetstream.Msg.DoubleAck makes the same round trip as a request: a
// context and a timer for its deadline, a reply inbox and a channel, and a
// goroutine parked on it, per job. Without them the worker's CPU per job
// at latency 0 fell by 7% (`tallyfy-deleter bench`, concurrency 64).
type acker struct {
	nc     *nats.Conn
	prefix string // the reply subjects' prefix: <inbox>.
	body   []byte // a double ack's: +ACK, with a reply subject
	sub    *nats.Subscription

	mu     sync.Mutex
	next   uint64
	period uint64 // counts the clock's ticks
	waits  map[uint64]ackWait
}

type ackWait struct {
	done   func(error)
	period uint64 // when the ack was sent
}

// errAckerStopped fails the acks still waiting when the acker stops.
var errAckerStopped = errors.New("worker stopped before the ack was confirmed")

func newAcker(nc *nats.Conn) *acker {
	return &acker{nc: nc, prefix: nc.NewInbox() + ".", body: []byte("+ACK"), waits: map[uint64]ackWait{}}
}

// start subscribes to the confirmations. The confirmation clock calls
// expire every PublishTimeout (see Run).
func (a *acker) start() error {
	sub, err := a.nc.Subscribe(a.prefix+"*", a.confirmed)
	if err != nil {
		return err
	}
	// The confirmations of a burst of acks arrive together.
	_ = sub.SetPendingLimits(-1, -1)
	a.sub = sub
	return nil
}

// stop ends the subscription and fails what still waits. Called once
// every job has ended, so nothing does.
func (a *acker) stop() {
	if a.sub != nil {
		_ = a.sub.Unsubscribe()
	}
	a.mu.Lock()
	waits := a.waits
	a.waits = map[uint64]ackWait{}
	a.mu.Unlock()
	for _, w := range waits {
		w.done(errAckerStopped)
	}
}

// ack double-acks msg; done runs once, with nil once JetStream has
// confirmed it, or with why not. It never runs on the caller's goroutine
// but for a publish that fails at once.
func (a *acker) ack(msg jetstream.Msg, done func(error)) {
	reply := msg.Reply()
	if reply == "" {
		done(jetstream.ErrMsgNoReply)
		return
	}
	a.mu.Lock()
	a.next++
	id := a.next
	a.waits[id] = ackWait{done: done, period: a.period}
	a.mu.Unlock()
	if err := a.nc.PublishRequest(reply, a.prefix+strconv.FormatUint(id, 10), a.body); err != nil {
		if w, ok := a.take(id); ok {
			w.done(err)
		}
	}
}

func (a *acker) take(id uint64) (ackWait, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w, ok := a.waits[id]
	delete(a.waits, id)
	return w, ok
}

// confirmed is the subscription's handler: the server's answer to an ack.
// As for a request, any answer confirms it, but that no one listens on
// the ack's subject (the consumer is gone).
func (a *acker) confirmed(m *nats.Msg) {
	token, ok := strings.CutPrefix(m.Subject, a.prefix)
	if !ok {
		return
	}
	id, err := strconv.ParseUint(token, 10, 64)
	if err != nil {
		return
	}
	w, ok := a.take(id)
	if !ok {
		return // timed out already
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		w.done(nats.ErrNoResponders)
		return
	}
	w.done(nil)
}

// expire fails the acks sent two ticks ago or more: each has waited at
// least one period.
func (a *acker) expire() {
	a.mu.Lock()
	a.period++
	var late []ackWait
	for id, w := range a.waits {
		if a.period-w.period >= 2 {
			late = append(late, w)
			delete(a.waits, id)
		}
	}
	a.mu.Unlock()
	for _, w := range late {
		w.done(errNotConfirmed)
	}
}
