package redis_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// Tests of what waits behind a receiver's fetch of the values an event
// left out (issue 9, goal 3): within a context every later event does (the
// copy applies events in revision order), events of other contexts on the
// same Backend, which share its pub/sub connection, do not, and the
// connection keeps being read meanwhile.

// holdFetch is a Backend whose reads of context name's entries (Get,
// GetMany: what a receiver fetches when an event omits values) wait until
// the test releases them. Every other method is the Backend's own, so
// Contexts on it share the Backend's pub/sub connection and capabilities.
type holdFetch struct {
	*redis.Backend
	name    string
	entered chan struct{} // closed when the first held read begins
	release chan struct{} // closed by the test to let held reads go
	once    sync.Once
	held    atomic.Int32 // reads of name that began
}

func newHoldFetch(b *redis.Backend, name string) *holdFetch {
	return &holdFetch{Backend: b, name: name, entered: make(chan struct{}), release: make(chan struct{})}
}

func (h *holdFetch) hold(ctx context.Context, name string) error {
	if name != h.name {
		return nil
	}
	h.held.Add(1)
	h.once.Do(func() { close(h.entered) })
	select {
	case <-h.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *holdFetch) Get(ctx context.Context, name, key string) (backend.Entry, error) {
	if err := h.hold(ctx, name); err != nil {
		return backend.Entry{}, err
	}
	return h.Backend.Get(ctx, name, key)
}

func (h *holdFetch) GetMany(ctx context.Context, name string, keys []string) ([]backend.Entry, error) {
	if err := h.hold(ctx, name); err != nil {
		return nil, err
	}
	return h.Backend.GetMany(ctx, name, keys)
}

// letGoAtCleanup lets held reads go when the test ends, before the
// cleanups registered earlier (the Contexts' Close) run, so that a failed
// test does not hang in them.
func (h *holdFetch) letGoAtCleanup(t *testing.T) {
	t.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
	})
}

// awaitEntered waits until h holds its first read.
func (h *holdFetch) awaitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-h.entered:
	case <-time.After(faultWait):
		t.Fatalf("the receiver did not fetch %q's omitted values within %v", h.name, faultWait)
	}
}

// appliedRevs collects the revisions a Context applies from other
// instances, in order (Trace.EventApplied, called on its read loop).
type appliedRevs chan uint64

func (a appliedRevs) options(o contextd.Options) *contextd.Options {
	o.Trace = &contextd.Trace{EventApplied: func(rev, _ uint64) { a <- rev }}
	o.ResyncInterval = -1 // only the events under test move the copy
	return &o
}

// until returns the revisions applied up to and including rev, failing
// the test if rev is not applied within faultWait.
func (a appliedRevs) until(t *testing.T, what string, rev uint64) []uint64 {
	t.Helper()
	var got []uint64
	deadline := time.After(faultWait)
	for {
		select {
		case r := <-a:
			got = append(got, r)
			if r >= rev {
				return got
			}
		case <-deadline:
			t.Fatalf("%s: revision %d not applied within %v; applied %v", what, rev, faultWait, got)
		}
	}
}

// revRange is [from, to].
func revRange(from, to uint64) []uint64 {
	var r []uint64
	for v := from; v <= to; v++ {
		r = append(r, v)
	}
	return r
}

// receiverBackend returns a Backend with a client of its own, named
// "receiver-" and the test's name so that its pub/sub connections can be
// counted.
func receiverBackend(t *testing.T, srv *redistest.Server, opts *redis.Options) (*redis.Backend, string) {
	t.Helper()
	name := "receiver-" + clientName(t)
	return backendOn(t, goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Password: srv.Password(), ClientName: name}), opts), name
}

// wantValues fails the test unless c's copy holds exactly want.
func wantValues(t *testing.T, what string, c *contextd.Context[string], want map[string]string) {
	t.Helper()
	got, err := c.GetContext(context.Background())
	if err != nil {
		t.Fatalf("%s: GetContext: %v", what, err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: copy is %v, want %v", what, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: copy is %v, want %v", what, got, want)
		}
	}
}

// TestFetchHoldsOnlyItsContext: while a receiver's fetch of the values a
// transaction of context "held" left out is held, another context on the
// same Backend (the same pub/sub connection) receives events, fetches the
// values its own events leave out and applies them; "held" applies
// nothing past the transaction meanwhile, and once the fetch is let go it
// applies the transaction and every later event, in revision order,
// without a loss or a catch-up.
func TestFetchHoldsOnlyItsContext(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	w := newBackend(t, srv, nil)
	// Writers whose events carry keys only: every receiver fetches.
	keysOnly := &contextd.Options{EventValueLimit: -1, ResyncInterval: -1}
	wHeld := openInstance[string](t, w, "held", keysOnly)
	wFree := openInstance[string](t, w, "free", keysOnly)

	rb, client := receiverBackend(t, srv, nil)
	hold := newHoldFetch(rb, "held")
	appliedHeld, appliedFree := make(appliedRevs, 1024), make(appliedRevs, 1024)
	rHeld := openInstance[string](t, hold, "held", appliedHeld.options(contextd.Options{}))
	rFree := openInstance[string](t, hold, "free", appliedFree.options(contextd.Options{}))
	hold.letGoAtCleanup(t)
	waitConns(t, srv, client, 1) // both share the receiver's one connection

	before := rHeld.Revision()
	if err := wHeld.TransactionalUpdate(ctx, map[string]string{"a": "1", "b": "1", "c": "1"}); err != nil {
		t.Fatal(err)
	}
	txn := wHeld.Revision()
	hold.awaitEntered(t)

	// Later events of "held", published while its fetch is held.
	if err := wHeld.UpdateContext(ctx, "a", "2"); err != nil {
		t.Fatal(err)
	}
	if err := wHeld.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := wHeld.TransactionalUpdate(ctx, map[string]string{"c": "3", "d": "3"}); err != nil {
		t.Fatal(err)
	}
	lastHeld := wHeld.Revision()

	// Events of "free", published after those: the connection delivers in
	// order, so once they are applied every event of "held" has been
	// received too.
	freeBase := rFree.Revision()
	for i := range 3 {
		if err := wFree.UpdateContext(ctx, "k", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := wFree.TransactionalUpdate(ctx, map[string]string{"x": "1", "y": "1"}); err != nil {
		t.Fatal(err)
	}
	lastFree := wFree.Revision()
	if got := appliedFree.until(t, "the free context, while the other's fetch is held", lastFree); !slices.Equal(got, revRange(freeBase+1, lastFree)) {
		t.Fatalf("the free context applied revisions %v, want %v", got, revRange(freeBase+1, lastFree))
	}
	wantValues(t, "the free context, while the other's fetch is held", rFree, map[string]string{"k": "2", "x": "1", "y": "1"})

	// "held" is still where it was: nothing after its transaction was
	// applied ahead of it, and no second fetch began.
	if got := rHeld.Revision(); got != before {
		t.Fatalf("the held context is at revision %d while its fetch of revision %d is held, want %d", got, txn, before)
	}
	wantValues(t, "the held context, while its fetch is held", rHeld, map[string]string{})
	if n := hold.held.Load(); n != 1 {
		t.Fatalf("%d fetches of the held context began, want 1", n)
	}

	close(hold.release)
	if got := appliedHeld.until(t, "the held context, once its fetch is let go", lastHeld); !slices.Equal(got, revRange(txn, lastHeld)) {
		t.Fatalf("the held context applied revisions %v, want %v in order", got, revRange(txn, lastHeld))
	}
	wantValues(t, "the held context, once its fetch is let go", rHeld, map[string]string{"a": "2", "c": "3", "d": "3"})
	for _, c := range []*contextd.Context[string]{rHeld, rFree} {
		if s := c.Stats(); s.Losses != 0 || s.Gaps != 0 || s.LogCatchUps != 0 || s.Snapshots != 1 {
			t.Errorf("context %q: stats %+v, want no loss, gap or catch-up", c.Name(), s)
		}
	}
}

// TestEventsQueuedBehindHeldFetch: events of a context that arrive while
// its receiver's fetch is held wait in its subscription, all of them, and
// are applied in revision order once the fetch is let go, with no loss
// while they fit in Options.SubscriberBuffer; one more is reported as a
// loss (and repaired from the change log), as the buffer's contract says.
func TestEventsQueuedBehindHeldFetch(t *testing.T) {
	t.Parallel()
	const buffer = 8
	for _, tc := range []struct {
		name   string
		queued int
		loss   bool
	}{
		{"buffer full", buffer, false},
		{"buffer overflows", buffer + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t, nil)
			ctx := faultCtx(t)
			w := newBackend(t, srv, nil)
			wTxn := openInstance[string](t, w, "held", &contextd.Options{EventValueLimit: -1, ResyncInterval: -1})
			wSmall := openInstance[string](t, w, "held", &contextd.Options{ResyncInterval: -1}) // values in the events
			wOther := openInstance[string](t, w, "other", &contextd.Options{ResyncInterval: -1})

			rb, _ := receiverBackend(t, srv, &redis.Options{SubscriberBuffer: buffer})
			hold := newHoldFetch(rb, "held")
			appliedHeld, appliedOther := make(appliedRevs, 1024), make(appliedRevs, 1024)
			rHeld := openInstance[string](t, hold, "held", appliedHeld.options(contextd.Options{}))
			rOther := openInstance[string](t, hold, "other", appliedOther.options(contextd.Options{}))
			hold.letGoAtCleanup(t)

			want := map[string]string{"t1": "1", "t2": "1"}
			if err := wTxn.TransactionalUpdate(ctx, want); err != nil {
				t.Fatal(err)
			}
			txn := wTxn.Revision()
			hold.awaitEntered(t)
			// The only writes of the context: revisions txn+1 to last.
			// (wSmall's Revision may lag: its copy waits for its own
			// fetch of the transaction.)
			last := txn + uint64(tc.queued)
			for i := range tc.queued {
				k, v := fmt.Sprint("k", i%3), fmt.Sprint(i)
				if err := wSmall.UpdateContext(ctx, k, v); err != nil {
					t.Fatal(err)
				}
				want[k] = v
			}
			// A barrier: once "other" applied its event, published after
			// all of "held"'s, those are in "held"'s subscription.
			if err := wOther.UpdateContext(ctx, "o", "1"); err != nil {
				t.Fatal(err)
			}
			appliedOther.until(t, "the other context", wOther.Revision())
			if got := rHeld.Revision(); got >= txn {
				t.Fatalf("the held context is at revision %d while its fetch of revision %d is held", got, txn)
			}

			close(hold.release)
			if got := appliedHeld.until(t, "the held context, once its fetch is let go", last); !slices.Equal(got, revRange(txn, last)) {
				t.Fatalf("the held context applied revisions %v, want %v in order", got, revRange(txn, last))
			}
			wantValues(t, "the held context", rHeld, want)
			s := rHeld.Stats()
			if got := s.Losses != 0; got != tc.loss {
				t.Fatalf("%d events queued behind the fetch with a buffer of %d: stats %+v, want a loss: %v", tc.queued, buffer, s, tc.loss)
			}
			if !tc.loss && (s.Gaps != 0 || s.LogCatchUps != 0 || s.Snapshots != 1) {
				t.Fatalf("stats %+v, want no gap or catch-up", s)
			}
			if s := rOther.Stats(); s.Losses != 0 || s.Gaps != 0 {
				t.Fatalf("the other context: stats %+v, want no loss or gap", s)
			}
		})
	}
}
