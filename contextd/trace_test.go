package contextd_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/contextd"
)

// recorder is a Trace that records what it is told.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *recorder) has(prefix string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if len(e) >= len(prefix) && e[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}

type spanKey struct{}

func (r *recorder) trace() *contextd.Trace {
	return &contextd.Trace{
		WriteStart: func(ctx context.Context, keys int) (context.Context, func(uint64, error)) {
			r.add("write start %d", keys)
			ctx = context.WithValue(ctx, spanKey{}, "write")
			return ctx, func(rev uint64, err error) { r.add("write done rev=%d err=%v", rev, err != nil) }
		},
		LockWaitStart: func(ctx context.Context, key string) (context.Context, func(error)) {
			r.add("lock wait start %s", key)
			return ctx, func(err error) { r.add("lock wait done err=%v", err != nil) }
		},
		SnapshotStart: func(ctx context.Context) (context.Context, func(int, error)) {
			r.add("snapshot start")
			return ctx, func(n int, err error) { r.add("snapshot done entries=%d err=%v", n, err != nil) }
		},
		EventApplied: func(rev, lag uint64) { r.add("event applied %d", rev) },
		Gap:          func(reason string) { r.add("gap %s", reason) },
		CatchUp:      func(how string, err error) { r.add("catch-up %s err=%v", how, err != nil) },
		WatchReset:   func() { r.add("watch reset") },
	}
}

// TestTraceHooks drives every kind of work a Context does and checks the
// Trace is told about each: writes with their revisions, lock waits,
// snapshot loads, events from others, losses and catch-ups, watch resets.
func TestTraceHooks(t *testing.T) {
	b := newMemory(t, nil)
	r := &recorder{}
	c := open[int](t, b, "ctx", &contextd.Options{Trace: r.trace(), WatchBuffer: 1})
	other := open[int](t, b, "ctx", nil)
	ctx := context.Background()
	if !r.has("snapshot done entries=0 err=false") {
		t.Error("Initialize did not report its snapshot load")
	}
	if err := c.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if !r.has("write start 1") || !r.has("write done rev=1 err=false") {
		t.Errorf("UpdateContext was not traced with its revision: %v", r.events)
	}
	if err := c.Delete(ctx, ""); err == nil || !r.has("write done rev=0 err=true") {
		t.Errorf("a failed write was not traced as failed: %v", r.events)
	}
	// A lock wait.
	l, err := other.AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.UpdateContext(ctx, "k", 2) }()
	eventually(t, "the write waits for the lock", func() bool { return r.has("lock wait start k") })
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !r.has("lock wait done err=false") {
		t.Errorf("the end of the lock wait was not traced: %v", r.events)
	}
	// An event from another instance.
	if err := other.UpdateContext(ctx, "o", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "another instance's event is traced", func() bool { return r.has("event applied") })
	// A loss and the catch-up after it.
	b.BreakSubscriptions()
	if err := other.UpdateContext(ctx, "o", 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the loss and the catch-up are traced", func() bool { return r.has("gap loss") && r.has("catch-up") })
	// Sync loads a snapshot.
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.has("catch-up snapshot err=false") {
		t.Errorf("Sync's snapshot was not traced: %v", r.events)
	}
	// A watcher that falls behind is reset.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch := c.Watch(wctx)
	for i := range 5 {
		if err := c.UpdateContext(ctx, "w", i); err != nil {
			t.Fatal(err)
		}
	}
	for ch := range watch {
		if ch.Reset {
			break
		}
	}
	eventually(t, "the watch reset is traced", func() bool { return r.has("watch reset") })
}
