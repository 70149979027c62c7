package worker

import (
	"time"

	"github.com/sony/gobreaker/v2"
)

// Observer watches the worker, for metrics. Its methods are called from
// many goroutines at once and must not block.
type Observer interface {
	// JobStarted and JobEnded bracket the time a job is in the worker's hands.
	JobStarted()
	JobEnded()
	// JobFinished reports a job's one outcome; age runs from the job's
	// publish time.
	JobFinished(o Outcome, r Reason, age time.Duration)
	// BreakerChanged reports every breaker transition.
	BreakerChanged(to gobreaker.State)
	// AbilityChanged reports each change of whether this worker can call
	// Tallyfy; Able when it can again.
	AbilityChanged(now Inability)
	// HandedBack reports a job given back to the pool unfinished: "unable"
	// when this worker could not call Tallyfy, "shutdown" when it stopped.
	HandedBack(why string)
	// PublishFailed reports a result, dead letter or ack that could not be
	// confirmed; kind is "result", "dead_letter" or "ack".
	PublishFailed(kind string)
	// ConsumerBacklog reports the durable consumer's counts, read every
	// Config.BacklogInterval.
	ConsumerBacklog(pending, ackPending, redelivered uint64)
}

type nopObserver struct{}

func (nopObserver) JobStarted()                                {}
func (nopObserver) JobEnded()                                  {}
func (nopObserver) JobFinished(Outcome, Reason, time.Duration) {}
func (nopObserver) BreakerChanged(gobreaker.State)             {}
func (nopObserver) AbilityChanged(Inability)                   {}
func (nopObserver) HandedBack(string)                          {}
func (nopObserver) PublishFailed(string)                       {}
func (nopObserver) ConsumerBacklog(uint64, uint64, uint64)     {}
