package worker

import (
	"sync"

	"github.com/rs/zerolog"
	"github.com/sony/gobreaker/v2"
)

// Inability says why a worker cannot call Tallyfy; the zero value means it
// can. Its String is the label of the tallyfy_deleter_unable metric.
type Inability int

// Inabilities, in the order an operator should look at them: a file that
// cannot be read hides whether Tallyfy would accept what it holds, and
// rejected credentials make every call fail, which may be what opened the
// breaker.
const (
	Able Inability = iota
	// BreakerNotClosed: this worker's calls to Tallyfy have been failing;
	// its breaker lets one probe through per DELETER_BREAKER_TIMEOUT.
	BreakerNotClosed
	// CredentialsRejected: Tallyfy (or its token endpoint) answered 401.
	CredentialsRejected
	// CredentialsUnreadable: the token or client secret file cannot be
	// read, or holds nothing usable.
	CredentialsUnreadable
)

// Inabilities lists every Inability but Able, for metrics.
var Inabilities = []Inability{BreakerNotClosed, CredentialsRejected, CredentialsUnreadable}

func (i Inability) String() string {
	switch i {
	case Able:
		return "able"
	case BreakerNotClosed:
		return "breaker"
	case CredentialsRejected:
		return "credentials_rejected"
	case CredentialsUnreadable:
		return "credentials_unreadable"
	}
	return "unknown"
}

// ability tracks whether this worker can call Tallyfy at all. One that
// cannot hands every job it holds back to the pool and pulls none but a
// probe, so that one broken replica never holds still jobs that the others
// could finish. It is this worker's alone: its breaker says that its own
// calls fail, which a typo in its API URL or a node's broken egress does
// as well as an outage of Tallyfy. Each change is logged once: at error
// when the worker becomes unable (or unable for another reason), at info
// when it is able again.
type ability struct {
	log     *zerolog.Logger
	metrics Observer
	// changed is called, under the lock, after every change: it must not
	// block.
	changed func()

	mu         sync.Mutex
	breaker    gobreaker.State
	rejected   bool
	unreadable string // why the credentials cannot be read
	reported   Inability
}

// state is why the worker cannot call Tallyfy, with the words /readyz and
// the log use; Able and "" when it can.
func (a *ability) state() (Inability, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stateLocked()
}

func (a *ability) stateLocked() (Inability, string) {
	switch {
	case a.unreadable != "":
		return CredentialsUnreadable, "credentials unreadable: " + a.unreadable
	case a.rejected:
		return CredentialsRejected, "Tallyfy rejected the credentials"
	case a.breaker == gobreaker.StateOpen:
		return BreakerNotClosed, "circuit breaker open: this worker's calls to Tallyfy are failing"
	case a.breaker == gobreaker.StateHalfOpen:
		return BreakerNotClosed, "circuit breaker half-open: this worker's calls to Tallyfy were failing, one probe is testing them"
	}
	return Able, ""
}

// why is the reason alone: "" when the worker can call Tallyfy.
func (a *ability) why() string {
	_, s := a.state()
	return s
}

func (a *ability) setBreaker(s gobreaker.State) {
	a.update(func() bool {
		if a.breaker == s {
			return false
		}
		a.breaker = s
		return true
	})
}

// credentialsAccepted says that a call got past authentication: the
// credentials were read, and Tallyfy took them. One lock per call, the
// common case.
func (a *ability) credentialsAccepted() {
	a.update(func() bool {
		changed := a.rejected || a.unreadable != ""
		a.rejected, a.unreadable = false, ""
		return changed
	})
}

func (a *ability) setRejected(r bool) {
	a.update(func() bool {
		if a.rejected == r {
			return false
		}
		a.rejected = r
		return true
	})
}

// setUnreadable records why the credentials cannot be read; "" says they
// can be again.
func (a *ability) setUnreadable(why string) {
	a.update(func() bool {
		if a.unreadable == why {
			return false
		}
		a.unreadable = why
		return true
	})
}

func (a *ability) update(change func() bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !change() {
		return
	}
	a.changed()
	now, why := a.stateLocked()
	if now == a.reported {
		return
	}
	was := a.reported
	a.reported = now
	a.metrics.AbilityChanged(now)
	if now == Able {
		a.log.Info().Str("was", was.String()).Msg("this worker can call Tallyfy again: pulling jobs")
		return
	}
	a.log.Error().Str("inability", now.String()).Str("reason", why).
		Msg("this worker cannot call Tallyfy: its jobs go back to the pool, and it takes none but a probe until it can")
}
