package contextd

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestCacheAwait checks the wait of a Modify handed the turn by a commit:
// waiters that start before, during and after the views they wait for are
// published all see the copy get there, and a wait for a revision that
// never comes ends at its bound or with its ctx.
func TestCacheAwait(t *testing.T) {
	c := newCache[int]("self")
	const last = 200
	at := func(rev uint64) func(*view[int]) bool {
		return func(v *view[int]) bool { return v.applied >= rev }
	}
	var wg sync.WaitGroup
	results := make(chan bool, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A generous bound: the test is that the wake-up is not
			// missed, not how fast it comes.
			results <- c.await(t.Context(), time.Minute, at(uint64(1+i*last/16)))
		}()
	}
	for rev := uint64(1); rev <= last; rev++ {
		c.lock()
		c.applied = rev
		c.unlock()
	}
	wg.Wait()
	close(results)
	for ok := range results {
		if !ok {
			t.Fatal("await of a revision the copy reached returned false")
		}
	}
	if !c.await(t.Context(), time.Minute, at(last)) {
		t.Fatal("await of a revision the copy has returned false")
	}
	if c.await(t.Context(), time.Millisecond, at(last+1)) {
		t.Fatal("await of a revision never published returned true")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if c.await(ctx, time.Hour, at(last+1)) {
		t.Fatal("await with a cancelled ctx returned true")
	}
}

// TestTurnNotesKeepTheNewest checks that notes taken by concurrent
// wake-ups keep the highest revision, and that take consumes it.
func TestTurnNotesKeepTheNewest(t *testing.T) {
	var n turnNotes
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range uint64(100) {
				n.note(r*8 + uint64(i))
			}
		}()
	}
	wg.Wait()
	if got := n.take(); got != 99*8+7 {
		t.Fatalf("take = %d, want %d", got, 99*8+7)
	}
	if got := n.take(); got != 0 {
		t.Fatalf("second take = %d, want 0", got)
	}
	var none *turnNotes
	if got := none.take(); got != 0 {
		t.Fatalf("take of no notes = %d, want 0", got)
	}
}

// TestContention: a key counts as contended for contendedFor after its
// latest refusal, other keys do not, and the memory stays bounded.
func TestContention(t *testing.T) {
	var c contention
	if c.recent("k") {
		t.Fatal("a key never refused counts as contended")
	}
	c.mark("k")
	if !c.recent("k") || c.recent("other") {
		t.Fatalf("after a refusal of k: recent(k) %v, recent(other) %v; want true, false", c.recent("k"), c.recent("other"))
	}
	c.mu.Lock()
	c.keys["k"] -= int64(2 * contendedFor)
	c.mu.Unlock()
	if c.recent("k") {
		t.Fatal("a key refused longer than contendedFor ago counts as contended")
	}
	for i := range 3 * contentionKeys {
		c.mark(fmt.Sprint("key", i))
	}
	if n := len(c.keys); n > contentionKeys || !c.recent(fmt.Sprint("key", 3*contentionKeys-1)) {
		t.Fatalf("%d keys remembered (bound %d), latest remembered: %v", n, contentionKeys, c.recent(fmt.Sprint("key", 3*contentionKeys-1)))
	}
}
