package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/codec"
	"github.com/contextd-go/contextd/locker"
)

const (
	// waitLimit bounds every wait for something that should happen
	// promptly (a message, a notification, a goroutine's result), so that a
	// broken backend fails a test instead of hanging the suite.
	waitLimit = 5 * time.Second

	// defaultShortTTL is the lease TTL of tests that wait for a lock to
	// expire, unless Harness.MinLockTTL is longer (see Harness.shortTTL).
	defaultShortTTL = 50 * time.Millisecond

	// longTTL is the TTL of locks that must not expire during a test.
	longTTL = time.Minute

	// defaultExpiryMargin is added to a TTL where a test must be sure it
	// has passed on the backend's clock too (Redis counts expiry in whole
	// milliseconds); it grows with Harness.MinLockTTL (see
	// Harness.expiryMargin).
	defaultExpiryMargin = 10 * time.Millisecond

	// pollInterval is the pause between checks while a TTL runs out.
	pollInterval = 5 * time.Millisecond

	// contenders is how many goroutines race for one outcome.
	contenders = 16
)

var (
	// testCodec is the codec name the suite's batches carry; otherCodec
	// is a different one.
	testCodec  = codec.JSON.Name()
	otherCodec = codec.Raw.Name()
)

func testStore(t *testing.T, h Harness) {
	t.Run("NeverWritten", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		ctx := t.Context()

		snap, err := s.Load(ctx, name)
		if err != nil {
			t.Fatalf("Load of a never-written context: %v", err)
		}
		if snap.Epoch != "" || snap.Revision != 0 || snap.Codec != "" || len(snap.Entries) != 0 {
			t.Errorf("Load of a never-written context = %+v, want empty epoch, revision 0, no codec, no entries", snap)
		}
		head, err := s.Revision(ctx, name)
		if err != nil {
			t.Fatalf("Revision of a never-written context: %v", err)
		}
		if head != (backend.Head{}) {
			t.Errorf("Revision of a never-written context = %+v, want the zero Head", head)
		}
		if e, err := s.Get(ctx, name, "k"); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Get in a never-written context = %s, %v; want an error matching backend.ErrNotFound", fmtEntry(e), err)
		}
	})

	t.Run("PutsAndDeletes", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)

		h1 := mustCommit(t, s, name, batch(put("a", "1"), put("b", "2"), put("c", "3")))
		if h1.Revision != 1 {
			t.Errorf("first Commit returned revision %d, want 1", h1.Revision)
		}
		snap := mustLoad(t, s, name)
		if snap.Head != h1 {
			t.Errorf("Load after first Commit: head %+v, want %+v (the Commit's)", snap.Head, h1)
		}
		wantEntries(t, "Load after putting a, b, c", snap.Entries,
			entry("a", "1", 1), entry("b", "2", 1), entry("c", "3", 1))

		h2 := mustCommit(t, s, name, batch(put("a", "10"), del("b"), put("d", "4")))
		if h2.Revision != 2 {
			t.Errorf("second Commit returned revision %d, want 2", h2.Revision)
		}
		snap = mustLoad(t, s, name)
		if snap.Head != h2 {
			t.Errorf("Load after second Commit: head %+v, want %+v (the Commit's)", snap.Head, h2)
		}
		wantEntries(t, "Load after putting a, d and deleting b", snap.Entries,
			entry("a", "10", 2), entry("c", "3", 1), entry("d", "4", 2))
		if e, err := s.Get(t.Context(), name, "b"); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Get of deleted key b = %s, %v; want an error matching backend.ErrNotFound", fmtEntry(e), err)
		}
	})

	t.Run("Revisions", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		ctx := t.Context()
		stores := []backend.Store{b1, b2}
		batches := []backend.Batch{
			batch(put("a", "1")),
			batch(put("b", "2"), put("c", "3")),
			batch(put("a", "4"), del("c")),
			batch(del("b")), // a batch of deletes only is a commit too
			batch(put("a", "5"), put("b", "6"), put("c", "7")),
		}
		var epoch string
		for i, b := range batches {
			rev := uint64(i + 1)
			s := stores[i%2]
			head := mustCommit(t, s, name, b)
			if head.Revision != rev {
				t.Errorf("Commit %d (%s) returned revision %d, want %d", rev, describeBatch(b), head.Revision, rev)
			}
			if i == 0 {
				epoch = head.Epoch
			}
			for _, op := range b.Ops {
				e, err := stores[(i+1)%2].Get(ctx, name, op.Key)
				switch {
				case op.Delete && !errors.Is(err, backend.ErrNotFound):
					t.Errorf("Get(%q) after Commit %d deleted it = %s, %v; want an error matching backend.ErrNotFound", op.Key, rev, fmtEntry(e), err)
				case !op.Delete && err != nil:
					t.Errorf("Get(%q) after Commit %d wrote it: %v", op.Key, rev, err)
				case !op.Delete && e.Revision != rev:
					t.Errorf("Get(%q) after Commit %d wrote it: revision %d, want %d (the commit's)", op.Key, rev, e.Revision, rev)
				}
			}
			for _, r := range stores {
				got, err := r.Revision(ctx, name)
				if err != nil {
					t.Fatalf("Revision after Commit %d: %v", rev, err)
				}
				if got != head {
					t.Errorf("Revision after Commit %d = %+v, want %+v (the Commit's head)", rev, got, head)
				}
				if snap := mustLoad(t, r, name); snap.Head != got {
					t.Errorf("after Commit %d: Load's head %+v differs from Revision's %+v", rev, snap.Head, got)
				}
			}
		}
		if head := mustLoad(t, b1, name).Head; head.Epoch != epoch || head.Revision != uint64(len(batches)) {
			t.Errorf("after %d commits Load's head = %+v, want epoch %q revision %d", len(batches), head, epoch, len(batches))
		}
	})

	t.Run("CommitChain", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		first := mustCommit(t, b1, name, batch(put("a", "1")))
		if first.Commit == "" {
			t.Skip("the store does not track commit ids (Head.Commit is empty)")
		}
		// Each commit names the one before it, through any client; the
		// heads of Load and Revision name the last one.
		seen := map[string]bool{first.Commit: true}
		prev := first
		for i, s := range []backend.Store{b2, b1, b2} {
			h := mustCommit(t, s, name, batch(put("a", fmt.Sprint(i))))
			if h.Parent != prev.Commit {
				t.Errorf("commit %d has parent %q, want the previous commit %q", h.Revision, h.Parent, prev.Commit)
			}
			if h.Commit == "" || seen[h.Commit] {
				t.Errorf("commit %d has id %q, want a new non-empty id", h.Revision, h.Commit)
			}
			seen[h.Commit] = true
			prev = h
		}
		if got := mustLoad(t, b2, name).Head; got != prev {
			t.Errorf("Load's head %+v, want the last commit's %+v", got, prev)
		}
		if got, err := b1.Revision(t.Context(), name); err != nil || got != prev {
			t.Errorf("Revision = %+v, %v; want the last commit's %+v", got, err, prev)
		}
	})

	t.Run("Get", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		ctx := t.Context()
		mustCommit(t, b1, name, batch(put("k", "v1"), put("other", "x")))
		mustCommit(t, b1, name, batch(put("k", "v2"), put("empty", "")))

		e, err := b2.Get(ctx, name, "k")
		if err != nil {
			t.Fatalf("Get(k): %v", err)
		}
		if want := entry("k", "v2", 2); !entryEqual(e, want) || e.Key != "k" {
			t.Errorf("Get(k) = key %q %s, want key %q %s", e.Key, fmtEntry(e), "k", fmtEntry(want))
		}
		e, err = b2.Get(ctx, name, "other")
		if err != nil || !entryEqual(e, entry("other", "x", 1)) {
			t.Errorf("Get(other) = %s, %v; want \"x\"@1 (written by the first commit only)", fmtEntry(e), err)
		}
		e, err = b2.Get(ctx, name, "empty")
		if err != nil || len(e.Value) != 0 || e.Revision != 2 {
			t.Errorf("Get of a key put with an empty value = %s, %v; want \"\"@2 (an empty value is a value, not a missing key)", fmtEntry(e), err)
		}
		if e, err := b2.Get(ctx, name, "missing"); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Get(missing) = %s, %v; want an error matching backend.ErrNotFound", fmtEntry(e), err)
		}
	})

	t.Run("SnapshotConsistency", func(t *testing.T) {
		t.Parallel()
		testSnapshotConsistency(t, h)
	})

	t.Run("Conditions", func(t *testing.T) {
		t.Parallel()
		testConditions(t, h)
	})

	t.Run("ConcurrentConflicts", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		stores := []backend.Store{b1, b2}
		mustCommit(t, b1, name, batch(put("other", "x")))
		base := mustCommit(t, b1, name, batch(put("k", "start")))

		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make([]error, contenders)
		for i := range contenders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				b := batch(put("k", fmt.Sprint("g", i)))
				b.Conditions = []backend.Condition{{Key: "k", Revision: base.Revision}}
				_, errs[i] = stores[i%2].Commit(t.Context(), name, b)
			}()
		}
		close(start)
		wg.Wait()

		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("goroutines %d and %d both committed on condition k@%d; want exactly one", winner, i, base.Revision)
			case err == nil:
				winner = i
			case !errors.Is(err, backend.ErrConflict):
				t.Errorf("goroutine %d lost the race with %v; want an error matching backend.ErrConflict", i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("none of %d goroutines committed on condition k@%d; want exactly one", contenders, base.Revision)
		}
		snap := mustLoad(t, b2, name)
		if snap.Revision != base.Revision+1 {
			t.Errorf("after the race the revision is %d, want %d (one commit)", snap.Revision, base.Revision+1)
		}
		wantEntries(t, "Load after the race", snap.Entries,
			entry("other", "x", 1), entry("k", fmt.Sprint("g", winner), base.Revision+1))
	})

	t.Run("Codec", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		mustCommit(t, b1, name, batch(put("k", "1")))
		before := mustLoad(t, b2, name)
		if before.Codec != testCodec {
			t.Errorf("Load after a commit with codec %q reports codec %q", testCodec, before.Codec)
		}

		b := batch(put("k", "2"), put("k2", "3"))
		b.Codec = otherCodec
		if head, err := b2.Commit(t.Context(), name, b); !errors.Is(err, backend.ErrCodecMismatch) {
			t.Errorf("Commit with codec %q to a context recorded with %q = %+v, %v; want an error matching backend.ErrCodecMismatch", otherCodec, testCodec, head, err)
		}
		assertUnchanged(t, b1, name, before, "a Commit with another codec")

		head := mustCommit(t, b2, name, batch(put("k", "4")))
		if head.Revision != before.Revision+1 {
			t.Errorf("Commit with the recorded codec returned revision %d, want %d", head.Revision, before.Revision+1)
		}
		if got := mustLoad(t, b1, name).Codec; got != testCodec {
			t.Errorf("Load after more commits reports codec %q, want %q (recorded by the first commit)", got, testCodec)
		}
	})

	t.Run("Epoch", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		ctx := t.Context()
		h1 := mustCommit(t, b1, name, batch(put("a", "1")))
		if h1.Epoch == "" {
			t.Fatalf("first Commit returned head %+v with an empty epoch, want a new random epoch", h1)
		}
		if len(h1.Epoch) > backend.MaxEpochLen {
			t.Errorf("epoch is %d bytes long; events can carry at most backend.MaxEpochLen = %d", len(h1.Epoch), backend.MaxEpochLen)
		}
		h2 := mustCommit(t, b2, name, batch(put("a", "2")))
		if h2.Epoch != h1.Epoch {
			t.Errorf("second Commit (other backend) returned epoch %q, want %q (the first commit's)", h2.Epoch, h1.Epoch)
		}
		h3 := mustCommit(t, b1, name, batch(del("a")))
		if h3.Epoch != h1.Epoch {
			t.Errorf("third Commit returned epoch %q, want %q (the first commit's)", h3.Epoch, h1.Epoch)
		}
		b3 := h.NewBackend(t)
		for i, s := range []backend.Store{b1, b2, b3} {
			if snap := mustLoad(t, s, name); snap.Epoch != h1.Epoch {
				t.Errorf("Load through backend %d reports epoch %q, want %q", i+1, snap.Epoch, h1.Epoch)
			}
			head, err := s.Revision(ctx, name)
			if err != nil {
				t.Fatalf("Revision through backend %d: %v", i+1, err)
			}
			if head.Epoch != h1.Epoch {
				t.Errorf("Revision through backend %d reports epoch %q, want %q", i+1, head.Epoch, h1.Epoch)
			}
		}
	})

	t.Run("SharedAcrossBackends", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		ctx := t.Context()
		h1 := mustCommit(t, b1, name, batch(put("k", "from b1")))
		snap := mustLoad(t, b2, name)
		if snap.Head != h1 {
			t.Errorf("Load through another backend after a Commit: head %+v, want %+v", snap.Head, h1)
		}
		wantEntries(t, "Load through another backend", snap.Entries, entry("k", "from b1", 1))
		if e, err := b2.Get(ctx, name, "k"); err != nil || !entryEqual(e, entry("k", "from b1", 1)) {
			t.Errorf("Get through another backend = %s, %v; want \"from b1\"@1", fmtEntry(e), err)
		}

		b := batch(put("k", "from b2"))
		b.Conditions = []backend.Condition{{Key: "k", Revision: 1}}
		h2 := mustCommit(t, b2, name, b)
		if got, err := b1.Revision(ctx, name); err != nil || got != h2 {
			t.Errorf("Revision through the first backend after a Commit through the second = %+v, %v; want %+v", got, err, h2)
		}
		wantEntries(t, "Load through the first backend", mustLoad(t, b1, name).Entries, entry("k", "from b2", 2))
	})

	t.Run("BadBatch", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			name string
			b    backend.Batch
		}{
			{"NoOps", batch()},
			{"EmptyKey", batch(put("a", "1"), put("", "2"))},
			{"EmptyKeyDelete", batch(put("a", "1"), del(""))},
			{"DuplicatePut", batch(put("a", "1"), put("b", "2"), put("a", "3"))},
			{"PutAndDelete", batch(put("a", "1"), del("a"))},
			{"DuplicateDelete", batch(del("x"), del("x"))},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				s := h.NewBackend(t)
				fresh, used := uniqueName(t), uniqueName(t)
				mustCommit(t, s, used, batch(put("a", "0"), put("x", "0")))
				for _, name := range []string{fresh, used} {
					before := mustLoad(t, s, name)
					if head, err := s.Commit(t.Context(), name, c.b); err == nil {
						t.Errorf("Commit of bad batch %s = %+v, nil; want an error", describeBatch(c.b), head)
					}
					assertUnchanged(t, s, name, before, "a bad batch "+describeBatch(c.b))
				}
			})
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		mustCommit(t, s, name, batch(put("k", "1")))
		before := mustLoad(t, s, name)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()

		if snap, err := s.Load(ctx, name); !errors.Is(err, context.Canceled) {
			t.Errorf("Load with a cancelled ctx = %+v, %v; want an error matching context.Canceled", snap, err)
		}
		if e, err := s.Get(ctx, name, "k"); !errors.Is(err, context.Canceled) {
			t.Errorf("Get with a cancelled ctx = %s, %v; want an error matching context.Canceled", fmtEntry(e), err)
		}
		if head, err := s.Revision(ctx, name); !errors.Is(err, context.Canceled) {
			t.Errorf("Revision with a cancelled ctx = %+v, %v; want an error matching context.Canceled", head, err)
		}
		if head, err := s.Commit(ctx, name, batch(put("k", "2"))); !errors.Is(err, context.Canceled) {
			t.Errorf("Commit with a cancelled ctx = %+v, %v; want an error matching context.Canceled", head, err)
		}
		assertUnchanged(t, s, name, before, "a Commit with a cancelled ctx")
	})

	t.Run("GetMany", func(t *testing.T) {
		t.Parallel()
		testGetMany(t, h)
	})

	if h.Capabilities.LockAwareCommit {
		t.Run("LockAwareCommit", func(t *testing.T) {
			t.Parallel()
			testLockAwareCommit(t, h)
		})
	}
	if h.Capabilities.ChangeLog {
		t.Run("ChangeLog", func(t *testing.T) {
			t.Parallel()
			testChangeLog(t, h)
		})
	}
	if h.Capabilities.AtomicPublish {
		t.Run("AtomicPublish", func(t *testing.T) {
			t.Parallel()
			testAtomicPublish(t, h)
		})
	}
}

// testSnapshotConsistency commits batches that always write keys a and b
// together with one value while other goroutines Load: every snapshot must
// show a and b equal and stamped with the snapshot's revision.
func testSnapshotConsistency(t *testing.T, h Harness) {
	const writers, commitsEach, readers = 4, 25, 2
	b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
	stores := []backend.Store{b1, b2}
	ctx := t.Context()

	var writing sync.WaitGroup
	for w := range writers {
		writing.Add(1)
		go func() {
			defer writing.Done()
			for i := range commitsEach {
				v := fmt.Sprintf("w%d.%d", w, i)
				if _, err := stores[w%2].Commit(ctx, name, batch(put("a", v), put("b", v))); err != nil {
					t.Errorf("writer %d, commit %d: %v", w, i, err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	var reading sync.WaitGroup
	for r := range readers {
		reading.Add(1)
		go func() {
			defer reading.Done()
			var last uint64
			for {
				select {
				case <-done:
					return
				default:
				}
				snap, err := stores[r%2].Load(ctx, name)
				if err != nil {
					t.Errorf("reader %d: Load: %v", r, err)
					return
				}
				if msg := inconsistency(snap, last); msg != "" {
					t.Errorf("reader %d: %s", r, msg)
					return
				}
				last = snap.Revision
			}
		}()
	}
	writing.Wait()
	close(done)
	reading.Wait()

	snap := mustLoad(t, b1, name)
	if msg := inconsistency(snap, 0); msg != "" {
		t.Errorf("after all writers: %s", msg)
	}
	if want := uint64(writers * commitsEach); snap.Revision != want {
		t.Errorf("after %d commits Load's revision is %d, want %d", want, snap.Revision, want)
	}
}

// inconsistency describes what is wrong with a snapshot of the context of
// testSnapshotConsistency, or returns "".
func inconsistency(snap backend.Snapshot, last uint64) string {
	if snap.Revision < last {
		return fmt.Sprintf("Load returned revision %d after an earlier Load returned %d; revisions must not go backwards", snap.Revision, last)
	}
	byKey := make(map[string]backend.Entry, len(snap.Entries))
	for _, e := range snap.Entries {
		if e.Revision > snap.Revision {
			return fmt.Sprintf("snapshot at revision %d holds %q@%d, newer than the snapshot", snap.Revision, e.Key, e.Revision)
		}
		byKey[e.Key] = e
	}
	if snap.Revision == 0 {
		if len(snap.Entries) != 0 {
			return fmt.Sprintf("snapshot at revision 0 holds %d entries", len(snap.Entries))
		}
		return ""
	}
	a, okA := byKey["a"]
	b, okB := byKey["b"]
	if !okA || !okB || len(byKey) != 2 {
		return fmt.Sprintf("snapshot at revision %d holds keys %v, want exactly a and b", snap.Revision, keysOf(snap.Entries))
	}
	if !bytes.Equal(a.Value, b.Value) {
		return fmt.Sprintf("snapshot at revision %d holds a=%q and b=%q; every commit writes them equal, so the snapshot mixes two states", snap.Revision, a.Value, b.Value)
	}
	if a.Revision != snap.Revision || b.Revision != snap.Revision {
		return fmt.Sprintf("snapshot at revision %d holds a@%d and b@%d; every commit writes both, so both must carry the snapshot's revision", snap.Revision, a.Revision, b.Revision)
	}
	return ""
}

func testConditions(t *testing.T, h Harness) {
	t.Run("MatchingRevision", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		mustCommit(t, s, name, batch(put("k", "1")))
		mustCommit(t, s, name, batch(put("other", "x")))
		b := batch(put("k", "2"))
		b.Conditions = []backend.Condition{{Key: "k", Revision: 1}}
		head := mustCommit(t, s, name, b)
		wantEntries(t, "Load after a Commit whose condition held", mustLoad(t, s, name).Entries,
			entry("k", "2", head.Revision), entry("other", "x", 2))
	})

	t.Run("StaleRevision", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		mustCommit(t, s, name, batch(put("k", "1")))
		mustCommit(t, s, name, batch(put("k", "2")))
		before := mustLoad(t, s, name)
		b := batch(put("k", "3"), put("new", "4"))
		b.Conditions = []backend.Condition{{Key: "k", Revision: 1}}
		expectConflict(t, s, name, b, before)
	})

	t.Run("MustBeAbsent", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		create := batch(put("k", "1"))
		create.Conditions = []backend.Condition{{Key: "k", Revision: 0}}
		mustCommit(t, s, name, create)
		before := mustLoad(t, s, name)
		again := batch(put("k", "2"))
		again.Conditions = []backend.Condition{{Key: "k", Revision: 0}}
		expectConflict(t, s, name, again, before)

		mustCommit(t, s, name, batch(del("k")))
		head := mustCommit(t, s, name, again)
		wantEntries(t, "Load after re-creating a deleted key on condition k@0", mustLoad(t, s, name).Entries,
			entry("k", "2", head.Revision))
	})

	t.Run("AbsentKeyWithRevision", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		mustCommit(t, s, name, batch(put("k", "1")))
		before := mustLoad(t, s, name)
		b := batch(put("missing", "2"))
		b.Conditions = []backend.Condition{{Key: "missing", Revision: 1}}
		expectConflict(t, s, name, b, before)
	})

	t.Run("KeyNotWritten", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		mustCommit(t, s, name, batch(put("x", "1")))
		b := batch(put("y", "2"))
		b.Conditions = []backend.Condition{{Key: "x", Revision: 1}}
		mustCommit(t, s, name, b)
		mustCommit(t, s, name, batch(put("x", "3")))
		before := mustLoad(t, s, name)
		b = batch(put("y", "4"))
		b.Conditions = []backend.Condition{{Key: "x", Revision: 1}}
		expectConflict(t, s, name, b, before)
	})

	// A store that names its commits reports, per entry, the commit that
	// last wrote it, and checks a condition's commit id: after a failover
	// a key can be at the revision a reader saw while holding another
	// write's value, which only the commit id tells apart.
	t.Run("WritingCommit", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		first := mustCommit(t, s, name, batch(put("k", "1")))
		second := mustCommit(t, s, name, batch(put("other", "x")))
		if first.Commit == "" {
			t.Skip("the store does not name its commits (Head.Commit is empty)")
		}
		snap := mustLoad(t, s, name)
		for _, e := range snap.Entries {
			want := map[string]string{"k": first.Commit, "other": second.Commit}[e.Key]
			if e.Commit != want {
				t.Errorf("Load: entry %q has commit %q, want %q (the commit that wrote it)", e.Key, e.Commit, want)
			}
		}
		if e, err := s.Get(t.Context(), name, "k"); err != nil || e.Commit != first.Commit {
			t.Errorf("Get(k) = commit %q, %v; want %q", e.Commit, err, first.Commit)
		}

		wrong := batch(put("k", "2"))
		wrong.Conditions = []backend.Condition{{Key: "k", Revision: first.Revision, Commit: second.Commit}}
		expectConflict(t, s, name, wrong, snap)

		right := batch(put("k", "2"))
		right.Conditions = []backend.Condition{{Key: "k", Revision: first.Revision, Commit: first.Commit}}
		head := mustCommit(t, s, name, right)
		// Without a commit id only the revision is compared.
		revOnly := batch(put("k", "3"))
		revOnly.Conditions = []backend.Condition{{Key: "k", Revision: head.Revision}}
		mustCommit(t, s, name, revOnly)
	})

	// ConflictError is optional; a store that returns it reports the key's
	// current entry, value, revision and writing commit included (checked
	// by expectConflict in every test above too).
	t.Run("ConflictReportsCurrent", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		mustCommit(t, s, name, batch(put("k", "1")))
		mustCommit(t, s, name, batch(put("k", "second value")))
		before := mustLoad(t, s, name)
		b := batch(put("k", "3"))
		b.Conditions = []backend.Condition{{Key: "k", Revision: 1}}
		_, err := s.Commit(t.Context(), name, b)
		var ce *backend.ConflictError
		if !errors.As(err, &ce) {
			if !errors.Is(err, backend.ErrConflict) {
				t.Fatalf("Commit with a stale condition = %v; want an error matching backend.ErrConflict", err)
			}
			t.Skip("the store returns a plain ErrConflict, not a backend.ConflictError")
		}
		if ce.Key != "k" || !ce.Exists {
			t.Fatalf("ConflictError = %+v; want key \"k\", existing", ce)
		}
		checkConflictError(t, b, before, ce)
	})

	t.Run("AllMustHold", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		mustCommit(t, s, name, batch(put("a", "1"), put("b", "1")))
		before := mustLoad(t, s, name)
		b := batch(put("a", "2"), put("b", "2"))
		b.Conditions = []backend.Condition{{Key: "a", Revision: 1}, {Key: "b", Revision: 7}}
		expectConflict(t, s, name, b, before)
	})
}

// expectConflict commits b, which must fail with ErrConflict and leave the
// context as before. A store that reports the key's entry with the
// refusal (backend.ConflictError) must report the truth: a condition of b
// that does not hold, and the entry the key has in before.
func expectConflict(t *testing.T, s backend.Store, name string, b backend.Batch, before backend.Snapshot) {
	t.Helper()
	head, err := s.Commit(t.Context(), name, b)
	if !errors.Is(err, backend.ErrConflict) {
		t.Errorf("Commit of %s at revision %d = %+v, %v; want an error matching backend.ErrConflict", describeBatch(b), before.Revision, head, err)
	}
	var ce *backend.ConflictError
	if errors.As(err, &ce) {
		checkConflictError(t, b, before, ce)
	}
	assertUnchanged(t, s, name, before, "a conflicting Commit")
}

// checkConflictError checks what a ConflictError reports against the
// snapshot taken just before the refused commit.
func checkConflictError(t *testing.T, b backend.Batch, before backend.Snapshot, ce *backend.ConflictError) {
	t.Helper()
	var have backend.Entry
	exists := false
	for _, e := range before.Entries {
		if e.Key == ce.Key {
			have, exists = e, true
		}
	}
	failing := false
	for _, c := range b.Conditions {
		if c.Key == ce.Key && (c.Revision != have.Revision || c.Revision != 0 && c.Commit != "" && c.Commit != have.Commit) {
			failing = true
		}
	}
	switch {
	case !failing:
		t.Errorf("Commit of %s: the ConflictError names key %q, which has no condition that fails", describeBatch(b), ce.Key)
	case ce.Exists != exists:
		t.Errorf("Commit of %s: ConflictError.Exists = %v for key %q, but the key exists: %v", describeBatch(b), ce.Exists, ce.Key, exists)
	case exists && (!entryEqual(ce.Current, have) || ce.Current.Commit != have.Commit):
		t.Errorf("Commit of %s: ConflictError reports %q as %s (commit %q), but it is %s (commit %q)", describeBatch(b), ce.Key,
			fmtEntry(ce.Current), ce.Current.Commit, fmtEntry(have), have.Commit)
	}
}

func testLockAwareCommit(t *testing.T, h Harness) {
	// setup writes k, and takes the lock on k through one backend; the
	// test then writes through another.
	setup := func(t *testing.T) (writer backend.Backend, lease locker.Lease, name string, before backend.Snapshot) {
		holder, writer, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		mustCommit(t, writer, name, batch(put("k", "0"), put("free", "0")))
		lease = mustAcquire(t, holder, name, "k", longTTL)
		return writer, lease, name, mustLoad(t, writer, name)
	}

	t.Run("LockedByAnother", func(t *testing.T) {
		t.Parallel()
		s, _, name, before := setup(t)
		for _, b := range []backend.Batch{
			batch(put("k", "1")),
			batch(del("k")),
			batch(put("free", "1"), put("k", "1")),
		} {
			if head, err := s.Commit(t.Context(), name, b); !errors.Is(err, backend.ErrLocked) {
				t.Errorf("Commit of %s while another holder locks k = %+v, %v; want an error matching backend.ErrLocked", describeBatch(b), head, err)
			}
			assertUnchanged(t, s, name, before, "a Commit to a locked key")
		}
	})

	t.Run("CarryingTheLease", func(t *testing.T) {
		t.Parallel()
		s, lease, name, before := setup(t)
		b := batch(put("k", "1"))
		b.Leases = []locker.Lease{lease}
		head := mustCommit(t, s, name, b)
		wantEntries(t, "Load after a Commit carrying the lock's lease", mustLoad(t, s, name).Entries,
			entry("k", "1", before.Revision+1), entry("free", "0", 1))
		if head.Revision != before.Revision+1 {
			t.Errorf("Commit carrying the lease returned revision %d, want %d", head.Revision, before.Revision+1)
		}
	})

	t.Run("ReleasedLease", func(t *testing.T) {
		t.Parallel()
		s, lease, name, before := setup(t)
		if err := s.Release(t.Context(), lease); err != nil {
			t.Fatalf("Release: %v", err)
		}
		b := batch(put("k", "1"))
		b.Leases = []locker.Lease{lease}
		if head, err := s.Commit(t.Context(), name, b); !errors.Is(err, locker.ErrNotHeld) {
			t.Errorf("Commit carrying a released lease = %+v, %v; want an error matching locker.ErrNotHeld", head, err)
		}
		assertUnchanged(t, s, name, before, "a Commit carrying a released lease")
	})

	t.Run("ExpiredLease", func(t *testing.T) {
		t.Parallel()
		holder, s, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		mustCommit(t, s, name, batch(put("k", "0")))
		shortTTL := h.shortTTL()
		lease := mustAcquire(t, holder, name, "k", shortTTL)
		acquired := time.Now()
		before := mustLoad(t, s, name)
		time.Sleep(time.Until(acquired.Add(shortTTL + h.expiryMargin()))) // the lease's TTL must pass
		b := batch(put("k", "1"))
		b.Leases = []locker.Lease{lease}
		if head, err := s.Commit(t.Context(), name, b); !errors.Is(err, locker.ErrNotHeld) {
			t.Errorf("Commit carrying a lease whose TTL (%v) has passed = %+v, %v; want an error matching locker.ErrNotHeld", shortTTL, head, err)
		}
		assertUnchanged(t, s, name, before, "a Commit carrying an expired lease")
	})

	t.Run("UnrelatedLease", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		lease := mustAcquire(t, s, name, "locked", longTTL)
		b := batch(put("k", "1"))
		b.Leases = []locker.Lease{lease}
		head := mustCommit(t, s, name, b)
		wantEntries(t, "Load after a Commit carrying a live lease on another key", mustLoad(t, s, name).Entries,
			entry("k", "1", head.Revision))
	})

	t.Run("LockOfAnotherContext", func(t *testing.T) {
		t.Parallel()
		s, name, other := h.NewBackend(t), uniqueName(t), uniqueName(t)
		mustAcquire(t, s, other, "k", longTTL)
		head := mustCommit(t, s, name, batch(put("k", "1")))
		wantEntries(t, "Load after a Commit to k while k of another context is locked", mustLoad(t, s, name).Entries,
			entry("k", "1", head.Revision))
	})
}

func testChangeLog(t *testing.T, h Harness) {
	b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
	log1, ok1 := b1.(backend.ChangeLog)
	log2, ok2 := b2.(backend.ChangeLog)
	if !ok1 || !ok2 {
		t.Fatalf("ChangeLog is declared but the backend (%T) does not implement backend.ChangeLog", b1)
	}
	ctx := t.Context()
	long := strings.Repeat("L", 64)
	batches := []backend.Batch{
		{Ops: []backend.Op{put("a", "alpha"), put("b", "beta")}, EventValueLimit: 100},
		{Ops: []backend.Op{put("a", long), del("b"), put("c", "c")}, EventValueLimit: 10},
		{Ops: []backend.Op{put("d", "0123456789"), put("e", "x")}, EventValueLimit: 10},
		{Ops: []backend.Op{del("a"), put("f", ""), put("g", "g")}},
	}
	var want []backend.Event
	for i, b := range batches {
		b.Codec = testCodec
		b.Origin = fmt.Sprint("origin-", i+1)
		head := mustCommit(t, []backend.Store{b1, b2}[i%2], name, b)
		want = append(want, backend.EventFromBatch(head, b))
	}
	head := want[len(want)-1].Head
	epoch := head.Epoch

	// Do not assume a log size: the log must reach back at least one
	// event, and once it does not reach back to some revision it must not
	// reach further back either.
	truncated := false
	for after := head.Revision; ; after-- {
		got, err := log2.ChangesSince(ctx, name, epoch, after)
		switch {
		case errors.Is(err, backend.ErrLogTruncated) && after+1 < head.Revision:
			truncated = true
		case err != nil:
			t.Errorf("ChangesSince(after %d) with head at %d: %v", after, head.Revision, err)
		case truncated:
			t.Errorf("ChangesSince(after %d) returned %d events although after %d was truncated", after, len(got), after+1)
		default:
			if msg := diffEvents(got, want[after:]); msg != "" {
				t.Errorf("ChangesSince(after %d): %s", after, msg)
			}
		}
		if after == 0 {
			break
		}
	}
	if got, err := log1.ChangesSince(ctx, name, epoch, head.Revision); err != nil || len(got) != 0 {
		t.Errorf("ChangesSince(the head) = %d events, %v; want none and no error", len(got), err)
	}
	// A caller ahead of the store (it went back in time) needs a snapshot.
	if got, err := log1.ChangesSince(ctx, name, epoch, head.Revision+1); !errors.Is(err, backend.ErrLogTruncated) {
		t.Errorf("ChangesSince(beyond the head) = %d events, %v; want ErrLogTruncated", len(got), err)
	}
	for _, after := range []uint64{0, head.Revision - 1} {
		if got, err := log1.ChangesSince(ctx, name, epoch+"x", after); !errors.Is(err, backend.ErrLogTruncated) {
			t.Errorf("ChangesSince(after %d) with another epoch = %d events, %v; want an error matching backend.ErrLogTruncated", after, len(got), err)
		}
	}
}

func testAtomicPublish(t *testing.T, h Harness) {
	b1, b2, b3 := h.NewBackend(t), h.NewBackend(t), h.NewBackend(t)
	p1, ok1 := b1.(backend.AtomicPublisher)
	p2, ok2 := b2.(backend.AtomicPublisher)
	if !ok1 || !ok2 {
		t.Fatalf("AtomicPublish is declared but the backend (%T) does not implement backend.AtomicPublisher", b1)
	}
	// The context's default channel: on Redis Cluster it must share the
	// context's hash tag, and contextd uses it unless told otherwise.
	name := uniqueName(t)
	channel := backend.DefaultChannel(name)
	sub := mustSubscribe(t, b3, channel)
	ctx := t.Context()

	perWriter := 8
	if h.OverflowAfter > 0 {
		// Stay well below the point where the reader could overflow.
		perWriter = max(1, min(perWriter, (h.OverflowAfter-1)/4))
	}
	writers := []backend.AtomicPublisher{p1, p2}
	total := perWriter * len(writers)

	var mu sync.Mutex
	want := make(map[uint64]backend.Event)
	var wg sync.WaitGroup
	defer wg.Wait() // also when a check below ends the test early
	for w, p := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				v := fmt.Sprintf("w%d.%d", w, i)
				b := backend.Batch{
					Ops:             []backend.Op{put("last", v), put(fmt.Sprint("w", w), v)},
					Codec:           testCodec,
					Origin:          fmt.Sprint("writer-", w),
					EventValueLimit: 64,
				}
				head, err := p.CommitAndPublish(ctx, name, b, channel)
				if err != nil {
					t.Errorf("writer %d: CommitAndPublish %d: %v", w, i, err)
					return
				}
				mu.Lock()
				want[head.Revision] = backend.EventFromBatch(head, b)
				mu.Unlock()
			}
		}()
	}
	var got []backend.Event
	for len(got) < total && !t.Failed() {
		got = append(got, nextEvent(t, sub, fmt.Sprintf("event %d of %d", len(got)+1, total)))
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, e := range got {
		if e.Revision != uint64(i+1) {
			t.Fatalf("event %d of %d has revision %d, want %d: events must arrive one per commit in revision order", i+1, total, e.Revision, i+1)
		}
		if msg := diffEvents([]backend.Event{e}, []backend.Event{want[e.Revision]}); msg != "" {
			t.Errorf("published event of revision %d: %s", e.Revision, msg)
		}
	}

	// A commit that fails publishes nothing: the next event is the next
	// successful commit's.
	fail := backend.Batch{Ops: []backend.Op{put("last", "never")}, Codec: testCodec, Origin: "failing",
		Conditions: []backend.Condition{{Key: "last", Revision: 0}}}
	if head, err := p1.CommitAndPublish(ctx, name, fail, channel); !errors.Is(err, backend.ErrConflict) {
		t.Fatalf("CommitAndPublish with a failing condition = %+v, %v; want an error matching backend.ErrConflict", head, err)
	}
	ok := backend.Batch{Ops: []backend.Op{put("after", "1")}, Codec: testCodec, Origin: "after", EventValueLimit: 64}
	head, err := p2.CommitAndPublish(ctx, name, ok, channel)
	if err != nil {
		t.Fatalf("CommitAndPublish after the failing one: %v", err)
	}
	e := nextEvent(t, sub, "event after a failed CommitAndPublish")
	if msg := diffEvents([]backend.Event{e}, []backend.Event{backend.EventFromBatch(head, ok)}); msg != "" {
		t.Errorf("the event after a failed CommitAndPublish is not the next commit's (did the failed one publish?): %s", msg)
	}
}

// nextEvent reads one message from sub and decodes it as an event.
func nextEvent(t *testing.T, sub broadcaster.Subscription, what string) backend.Event {
	t.Helper()
	m := mustNext(t, sub, what)
	if m.Loss {
		t.Fatalf("%s: got a loss signal, want an event", what)
	}
	e, err := backend.DecodeEvent(m.Payload)
	if err != nil {
		t.Fatalf("%s: DecodeEvent: %v", what, err)
	}
	return e
}

// diffEvents describes how got differs from want, or returns "".
func diffEvents(got, want []backend.Event) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d events (%s), want %d (%s)", len(got), fmtEvents(got), len(want), fmtEvents(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Head != w.Head || g.Origin != w.Origin || !changesEqual(g.Changes, w.Changes) {
			return fmt.Sprintf("event %d is %s, want %s", i+1, fmtEvent(g), fmtEvent(w))
		}
	}
	return ""
}

func changesEqual(a, b []backend.Change) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || a[i].Deleted != b[i].Deleted || a[i].Omitted != b[i].Omitted || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func fmtEvents(es []backend.Event) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = fmtEvent(e)
	}
	return strings.Join(parts, ", ")
}

func fmtEvent(e backend.Event) string {
	parts := make([]string, len(e.Changes))
	for i, ch := range e.Changes {
		switch {
		case ch.Deleted:
			parts[i] = "delete " + ch.Key
		case ch.Omitted:
			parts[i] = "put " + ch.Key + " (value omitted)"
		default:
			parts[i] = fmt.Sprintf("put %s=%q", ch.Key, ch.Value)
		}
	}
	return fmt.Sprintf("{epoch %q rev %d origin %q: %s}", e.Epoch, e.Revision, e.Origin, strings.Join(parts, ", "))
}

// Helpers for batches, entries and snapshots.

func put(key, value string) backend.Op { return backend.Op{Key: key, Value: []byte(value)} }

func del(key string) backend.Op { return backend.Op{Key: key, Delete: true} }

// batch returns a batch of ops with the suite's codec and origin.
func batch(ops ...backend.Op) backend.Batch {
	return backend.Batch{Ops: ops, Codec: testCodec, Origin: "conformance"}
}

func entry(key, value string, rev uint64) backend.Entry {
	return backend.Entry{Key: key, Value: []byte(value), Revision: rev}
}

func entryEqual(a, b backend.Entry) bool {
	return a.Key == b.Key && a.Revision == b.Revision && bytes.Equal(a.Value, b.Value)
}

func fmtEntry(e backend.Entry) string { return fmt.Sprintf("%q@%d", e.Value, e.Revision) }

func keysOf(es []backend.Entry) []string {
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = e.Key
	}
	return keys
}

func describeBatch(b backend.Batch) string {
	ops := make([]string, len(b.Ops))
	for i, op := range b.Ops {
		if op.Delete {
			ops[i] = fmt.Sprintf("delete %q", op.Key)
		} else {
			ops[i] = fmt.Sprintf("put %q=%q", op.Key, op.Value)
		}
	}
	s := "[" + strings.Join(ops, ", ") + "]"
	if len(b.Conditions) > 0 {
		conds := make([]string, len(b.Conditions))
		for i, c := range b.Conditions {
			conds[i] = fmt.Sprintf("%s@%d", c.Key, c.Revision)
		}
		s += " if [" + strings.Join(conds, ", ") + "]"
	}
	return s
}

func mustCommit(t *testing.T, s backend.Store, name string, b backend.Batch) backend.Head {
	t.Helper()
	head, err := s.Commit(t.Context(), name, b)
	if err != nil {
		t.Fatalf("Commit of %s: %v", describeBatch(b), err)
	}
	return head
}

func mustLoad(t *testing.T, s backend.Store, name string) backend.Snapshot {
	t.Helper()
	snap, err := s.Load(t.Context(), name)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return snap
}

// wantEntries checks that got holds exactly the entries of want, in any
// order.
func wantEntries(t *testing.T, what string, got []backend.Entry, want ...backend.Entry) {
	t.Helper()
	byKey := make(map[string]backend.Entry, len(got))
	for _, e := range got {
		if _, dup := byKey[e.Key]; dup {
			t.Errorf("%s: key %q appears twice", what, e.Key)
		}
		byKey[e.Key] = e
	}
	for _, w := range want {
		g, ok := byKey[w.Key]
		switch {
		case !ok:
			t.Errorf("%s: key %q is missing, want %s", what, w.Key, fmtEntry(w))
		case !entryEqual(g, w):
			t.Errorf("%s: key %q is %s, want %s", what, w.Key, fmtEntry(g), fmtEntry(w))
		}
		delete(byKey, w.Key)
	}
	for k, g := range byKey {
		t.Errorf("%s: unexpected key %q = %s", what, k, fmtEntry(g))
	}
}

// assertUnchanged checks that the context still is as before was loaded,
// after something that must not have written.
func assertUnchanged(t *testing.T, s backend.Store, name string, before backend.Snapshot, after string) {
	t.Helper()
	now := mustLoad(t, s, name)
	if now.Head != before.Head || now.Codec != before.Codec {
		t.Errorf("after %s: head %+v codec %q, want them unchanged: %+v codec %q", after, now.Head, now.Codec, before.Head, before.Codec)
	}
	wantEntries(t, "after "+after, now.Entries, before.Entries...)
}
