package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/broadcaster"
)

// newBackend returns a Backend that is closed when the test ends.
func newBackend(t *testing.T, opts *memory.Options) *memory.Backend {
	t.Helper()
	b := memory.New(opts)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// put returns a batch that puts key=value pairs given as alternating
// strings.
func put(kv ...string) backend.Batch {
	var bt backend.Batch
	for i := 0; i+1 < len(kv); i += 2 {
		bt.Ops = append(bt.Ops, backend.Op{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return bt
}

func mustCommit(t *testing.T, b *memory.Backend, name string, bt backend.Batch) backend.Head {
	t.Helper()
	h, err := b.Commit(context.Background(), name, bt)
	if err != nil {
		t.Fatalf("Commit(%q): %v", name, err)
	}
	return h
}

func mustLoad(t *testing.T, b *memory.Backend, name string) (backend.Snapshot, map[string]backend.Entry) {
	t.Helper()
	snap, err := b.Load(context.Background(), name)
	if err != nil {
		t.Fatalf("Load(%q): %v", name, err)
	}
	m := make(map[string]backend.Entry, len(snap.Entries))
	for _, e := range snap.Entries {
		m[e.Key] = e
	}
	return snap, m
}

func mustSubscribe(t *testing.T, b *memory.Backend, channel string) broadcaster.Subscription {
	t.Helper()
	s, err := b.Subscribe(context.Background(), channel)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", channel, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// next reads one message, failing the test if none comes within a second.
func next(t *testing.T, s broadcaster.Subscription) broadcaster.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return m
}

// expectNothing checks that no message is pending: Next must still be
// waiting when a short deadline passes.
func expectNothing(t *testing.T, s broadcaster.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if m, err := s.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next = %+v, %v; want nothing pending", m, err)
	}
}
