package redis_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// loadClock records when each instance loaded a snapshot, from the debug
// log line contextd writes then.
type loadClock struct {
	mu    sync.Mutex
	loads map[int][]time.Time
}

type loadHandler struct {
	clock    *loadClock
	instance int
}

func (h loadHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h loadHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "contextd: snapshot loaded" {
		h.clock.mu.Lock()
		h.clock.loads[h.instance] = append(h.clock.loads[h.instance], r.Time)
		h.clock.mu.Unlock()
	}
	return nil
}
func (h loadHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h loadHandler) WithGroup(string) slog.Handler      { return h }

// firstLoadsAfter returns each instance's first snapshot load after t, and
// whether every instance has one.
func (c *loadClock) firstLoadsAfter(t time.Time, n int) ([]time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for i := range n {
		j := slices.IndexFunc(c.loads[i], func(l time.Time) bool { return l.After(t) })
		if j < 0 {
			return nil, false
		}
		out = append(out, c.loads[i][j].Sub(t))
	}
	return out, true
}

// TestRestartDoesNotReloadInLockstep: 50 instances on one Redis lose their
// subscriptions at the same moment when the server dies. They retry with
// jittered backoff, so when it comes back they resubscribe and load their
// snapshots spread over a window rather than all at once (a thundering
// herd on a server that just restarted). Without jitter every instance
// retries on the same schedule and the loads bunch within milliseconds.
func TestRestartDoesNotReloadInLockstep(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const n, name = 50, "herd"
	clock := &loadClock{loads: map[int][]time.Time{}}
	cs := make([]*contextd.Context[int], n)
	for i := range cs {
		opts := &contextd.Options{ResyncInterval: -1, Logger: slog.New(loadHandler{clock: clock, instance: i})}
		cs[i] = openInstance[int](t, newBackend(t, srv, nil), name, opts)
	}
	if err := cs[0].UpdateContext(faultCtx(t), "k", 1); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	// An outage long enough for the reconnect backoff to grow to a second
	// or so: this sleep is the outage, not a wait for something to happen.
	time.Sleep(1500 * time.Millisecond)
	restarted := time.Now()
	srv.Restart(t)
	var loads []time.Duration
	eventuallyWithin(t, time.Minute, "every instance loads a snapshot after the restart", func() error {
		var ok bool
		if loads, ok = clock.firstLoadsAfter(restarted, n); !ok {
			return fmt.Errorf("not all %d instances have loaded", n)
		}
		return nil
	})
	slices.Sort(loads)
	q1, median, q3 := loads[n/4], loads[n/2], loads[3*n/4]
	t.Logf("snapshot loads after the restart: first %v, quartiles %v / %v / %v, last %v",
		loads[0].Round(time.Millisecond), q1.Round(time.Millisecond), median.Round(time.Millisecond), q3.Round(time.Millisecond), loads[n-1].Round(time.Millisecond))
	// The reconnect pauses are near a second by then, jittered over
	// [d/2, 3d/2): the middle half of the instances spans a few hundred
	// milliseconds. In lockstep it spans the time 50 loads take.
	if spread := q3 - q1; spread < 150*time.Millisecond {
		t.Errorf("the middle half of the instances loaded their snapshots within %v of each other: they reload in lockstep", spread)
	}
}
