package contextd_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// open returns an initialized Context on b, closed when the test ends.
func open[T any](t testing.TB, b backend.Backend, name string, opts *contextd.Options) *contextd.Context[T] {
	t.Helper()
	c, err := contextd.New[T](b, name, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Initialize(context.Background()); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// newMemory returns a memory backend closed when the test ends.
func newMemory(t testing.TB, opts *memory.Options) *memory.Backend {
	b := memory.New(opts)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// eventually polls cond until it holds, failing the test after a deadline.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
