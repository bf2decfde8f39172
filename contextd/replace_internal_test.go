package contextd

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
)

// slowLoads wraps a memory backend so a test can hold the reply of a Load:
// the snapshot is read at once, and returned only when the test says, as a
// reply that is slow to arrive.
type slowLoads struct {
	*memory.Backend
	mu      sync.Mutex
	armed   bool
	read    chan struct{} // closed once the held Load has read the store
	release chan struct{} // closed by the test to return it
}

func (s *slowLoads) hold() (read <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.read, s.release = true, make(chan struct{}), make(chan struct{})
	return s.read, func() { close(s.release) }
}

func (s *slowLoads) Load(ctx context.Context, name string) (backend.Snapshot, error) {
	snap, err := s.Backend.Load(ctx, name)
	s.mu.Lock()
	armed, read, release := s.armed, s.read, s.release
	s.armed = false
	s.mu.Unlock()
	if armed {
		close(read)
		<-release
	}
	return snap, err
}

// TestReplacementDoesNotMoveReadsBack is the deterministic form of a
// failover history failure: a catch-up that replaces the copy (asked for
// by an own commit that did not follow the copy's history) reads the store
// at revision 3, its reply is slow, and meanwhile the copy applies
// revisions 4 and 5, the second its own write. Replacing the copy with the
// older snapshot lost the own write from reads (read-your-writes) and
// moved every key back (monotonic reads).
func TestReplacementDoesNotMoveReadsBack(t *testing.T) {
	mem := memory.New(nil)
	defer mem.Close()
	slow := &slowLoads{Backend: mem}
	ctx := context.Background()
	c, err := New[int](slow, "ctx", &Options{ResyncInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other, err := New[int](mem, "ctx", &Options{ResyncInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, x := range []*Context[int]{c, other} {
		if err := x.Initialize(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		if err := other.UpdateContext(ctx, "k", i); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the copy applies revision 3", func() bool { return c.Revision() == 3 })

	read, release := slow.hold()
	done := make(chan error, 1)
	go func() { done <- c.catchUp(ctx, replaceAll) }()
	<-read // the snapshot is at revision 3
	if err := other.UpdateContext(ctx, "k", 4); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the copy applies revision 4", func() bool { return c.Revision() == 4 })
	if err := c.UpdateContext(ctx, "mine", 5); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v, ok, err := c.Get(ctx, "mine"); !ok || v != 5 || err != nil {
		t.Errorf("after the slow replacement, own write mine = %d, %v, %v; want 5 (read-your-writes)", v, ok, err)
	}
	if v, _, _ := c.Get(ctx, "k"); v != 4 {
		t.Errorf("after the slow replacement, k = %d; want 4 as read before (monotonic reads)", v)
	}
	if rev := c.Revision(); rev != 5 {
		t.Errorf("revision %d after the slow replacement, want 5", rev)
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
