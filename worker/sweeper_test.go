package worker

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

type nopSubscription struct{}

func (nopSubscription) Unsubscribe() error { return nil }

// TestSweeperShutdownWaitsForCallback: nats.go's Unsubscribe does not wait
// for a callback in progress, and one may still be delivered after it, so
// the sweeper's shutdown must: when it returns, no sweep runs or starts.
// The bubble makes it exact: synctest.Wait returns only once shutdown has
// either returned or blocked.
func TestSweeperShutdownWaitsForCallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var mu sync.Mutex
		var swept []uint64
		nop := zerolog.Nop()
		s := newAdvisorySweeper(sweeperParams{log: &nop, sweep: func(seq uint64, _ int) {
			<-release
			mu.Lock()
			defer mu.Unlock()
			swept = append(swept, seq)
		}})
		s.sub = nopSubscription{}
		advisory := func(seq string) *nats.Msg {
			return &nats.Msg{Data: []byte(`{"stream_seq":` + seq + `,"deliveries":3}`)}
		}

		go s.handle(advisory("1")) // as nats delivers it
		synctest.Wait()            // the sweep is in progress
		stopped := make(chan struct{})
		go func() {
			s.shutdown()
			close(stopped)
		}()
		synctest.Wait()
		select {
		case <-stopped:
			t.Error("shutdown returned while a sweep was in progress")
		default:
		}
		close(release)
		<-stopped

		s.handle(advisory("2")) // delivered late
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(swept, []uint64{1}) {
			t.Errorf("swept %v, want [1]: the sweep in progress, and none after shutdown", swept)
		}
	})
}
