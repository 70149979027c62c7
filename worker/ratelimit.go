package worker

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Adaptive limiting. Tallyfy publishes no rate limits, so the configured
// rate (if any) is a ceiling, and each 429 halves the rate actually used.
// After recoveryQuiet without a 429 the rate grows by half again per step,
// back to the ceiling.
const (
	minRate       = 0.2 // requests per second: slow, never stopped
	recoveryQuiet = 5 * time.Second
	recoveryStep  = 1.5
)

// limiter spaces API requests: a token bucket (golang.org/x/time/rate) whose
// rate 429 answers lower and quiet periods raise again.
type limiter struct {
	lim *rate.Limiter

	mu      sync.Mutex
	ceiling rate.Limit // configured rate; rate.Inf when unlimited
	cur     rate.Limit
	// When unlimited, the rate seen before the first 429 is where halving
	// starts, and twice it is where limiting stops again.
	seen, seenCeiling float64
	winStart          time.Time
	winCount          int
	lastChange        time.Time
	last429           time.Time
}

func newLimiter(perSecond float64, burst int) *limiter {
	l := rate.Inf
	if perSecond > 0 {
		l = rate.Limit(perSecond)
	}
	if burst < 1 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	return &limiter{lim: rate.NewLimiter(l, burst), ceiling: l, cur: l, winStart: time.Now()}
}

// wait blocks until a request may go.
func (l *limiter) wait(ctx context.Context) error {
	return l.lim.Wait(ctx)
}

// answered records one API answer.
func (l *limiter) answered(rateLimited bool) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.winCount++
	if d := now.Sub(l.winStart); d >= time.Second {
		l.seen = float64(l.winCount) / d.Seconds()
		l.winStart, l.winCount = now, 0
	}
	if rateLimited {
		from := l.cur
		if from == rate.Inf {
			from = rate.Limit(max(l.seen, 1))
			l.seenCeiling = 2 * float64(from)
		}
		l.set(max(from/2, minRate), now)
		l.last429 = now
		return
	}
	if l.cur == l.ceiling || now.Sub(l.last429) < recoveryQuiet || now.Sub(l.lastChange) < recoveryQuiet {
		return
	}
	next := l.cur * recoveryStep
	if next >= l.ceiling || (l.ceiling == rate.Inf && float64(next) >= l.seenCeiling) {
		next = l.ceiling
	}
	l.set(next, now)
}

func (l *limiter) set(r rate.Limit, now time.Time) {
	l.cur = r
	l.lastChange = now
	l.lim.SetLimitAt(now, r)
}
