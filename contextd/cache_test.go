package contextd

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/contextd-go/contextd/backend"
)

// A snapshot load that started before the context existed can finish after
// the instance's own first commit created it. The empty snapshot is older
// than that commit and must not wipe it (a read-your-writes regression the
// Redis Cluster history scenario found); a snapshot without an epoch loaded
// after the copy knew one still means the store lost its data.
func TestSnapshotOlderThanContextCreation(t *testing.T) {
	own := []update[int]{{key: "k", value: 7}}
	created := backend.Head{Epoch: "e1", Revision: 3, Commit: "c3", Parent: "c2"}
	empty := backend.Head{}

	c := newCache[int]("me")
	if v := c.applyOwn(created, "me", own); v != applied {
		t.Fatalf("applyOwn = %v", v)
	}
	c.applySnapshot(empty, "", 0, nil, false) // load started with no epoch known
	if e, ok := c.lookup("k"); !ok || e.value != 7 || e.rev != 3 {
		t.Errorf("after a snapshot loaded before the context existed, k = %+v, %v; want the own write 7 at revision 3", e, ok)
	}
	if epoch, _ := c.head(); epoch != "e1" {
		t.Errorf("epoch = %q, want e1 kept", epoch)
	}

	// The same empty snapshot, loaded when the copy already knew the
	// epoch: the store lost the context, and the copy follows it.
	c.applySnapshot(empty, "e1", 0, nil, false)
	if _, ok := c.lookup("k"); ok {
		t.Error("a snapshot of a wiped store, loaded after the epoch was known, did not replace the copy")
	}
	if epoch, rev := c.head(); epoch != "" || rev != 0 {
		t.Errorf("head = %q, %d after a wiped store's snapshot; want empty", epoch, rev)
	}
}

// A snapshot at a revision the copy has already passed is normally old
// news. But after a failover that lost writes the copy had applied, the
// new master reuses their revisions: a snapshot whose commit at that
// revision is not the one the copy applied shows another history, and
// must replace the copy, or Sync would keep serving the lost writes (the
// Redis failover history with WAIT found this).
func TestSnapshotOfAnotherHistoryAtAPassedRevision(t *testing.T) {
	c := newCache[int]("me")
	parent := ""
	for r := uint64(1); r <= 5; r++ {
		commit := "c" + string(rune('0'+r))
		h := backend.Head{Epoch: "e1", Revision: r, Commit: commit, Parent: parent}
		if v := c.applyEvent(h, "other", []update[int]{{key: "k", value: int(r)}}); v != applied {
			t.Fatalf("applyEvent(%d) = %v", r, v)
		}
		parent = commit
	}

	// The same history at revision 3: nothing to do.
	same := backend.Head{Epoch: "e1", Revision: 3, Commit: "c3", Parent: "c2"}
	c.applySnapshot(same, "e1", 3, []snapshotEntry[int]{{update: update[int]{key: "k", value: 3}, rev: 3, commit: "c3"}}, false)
	if e := c.get("k"); e.value != 5 || c.applied != 5 {
		t.Fatalf("a snapshot of the copy's own past changed it: k=%d, applied %d", e.value, c.applied)
	}

	// Another history at revision 3 (the load began at 3, so the store
	// did not go back as far as the copy can tell from revisions).
	other := backend.Head{Epoch: "e1", Revision: 3, Commit: "x3", Parent: "c2"}
	c.applySnapshot(other, "e1", 3, []snapshotEntry[int]{{update: update[int]{key: "k", value: 30}, rev: 3, commit: "x3"}}, false)
	if e := c.get("k"); e.value != 30 || c.applied != 3 || c.commit != "x3" {
		t.Errorf("after a snapshot of another history: k=%d, applied %d, commit %q; want 30, 3, x3", e.value, c.applied, c.commit)
	}
}

// A snapshot ahead of the copy that shows an older write of a key than
// the copy holds (at a revision the snapshot covers) means the copy's
// write is not in the store's history: it must replace the copy, not be
// merged key by key on revision numbers (the Redis failover history with
// WAIT found a copy keeping a lost write over its own newer one).
func TestSnapshotMissingTheCopysWrite(t *testing.T) {
	c := newCache[int]("me")
	h := backend.Head{Epoch: "e1", Revision: 1, Commit: "c1"}
	c.applyEvent(h, "other", []update[int]{{key: "k", value: 1}})
	h = backend.Head{Epoch: "e1", Revision: 2, Commit: "lost2", Parent: "c1"}
	c.applyEvent(h, "other", []update[int]{{key: "k", value: 2}}) // lost in a failover
	// The store's history: revision 2 wrote another key, 3 this instance's.
	snap := backend.Head{Epoch: "e1", Revision: 3, Commit: "c3", Parent: "c2"}
	c.applySnapshot(snap, "e1", 2, []snapshotEntry[int]{
		{update: update[int]{key: "k", value: 1}, rev: 1, commit: "c1"},
		{update: update[int]{key: "j", value: 7}, rev: 2, commit: "c2"},
		{update: update[int]{key: "m", value: 9}, rev: 3, commit: "c3"},
	}, false)
	if e := c.get("k"); e.value != 1 || e.rev != 1 {
		t.Errorf("k = %d at revision %d after a snapshot without the copy's write of it; want the store's 1 at revision 1", e.value, e.rev)
	}
	if c.applied != 3 || c.commit != "c3" {
		t.Errorf("head = %d %q, want 3 c3", c.applied, c.commit)
	}
}

// Replacing the copy (another history) keeps this instance's own commits
// above the snapshot: the store acknowledged them, so a read must still
// show them (read-your-writes through a failover's repair).
func TestReplaceKeepsOwnCommitsAboveTheSnapshot(t *testing.T) {
	c := newCache[int]("me")
	c.applyEvent(backend.Head{Epoch: "e1", Revision: 1, Commit: "c1"}, "other", []update[int]{{key: "k", value: 1}})
	if v := c.applyOwn(backend.Head{Epoch: "e1", Revision: 5, Commit: "c5", Parent: "c4"}, "me", []update[int]{{key: "mine", value: 5}}); v != applied {
		t.Fatalf("applyOwn = %v", v)
	}
	c.applySnapshot(backend.Head{Epoch: "e1", Revision: 3, Commit: "c3"}, "e1", 1,
		[]snapshotEntry[int]{{update: update[int]{key: "k", value: 3}, rev: 3, commit: "c3"}}, true)
	if e, ok := c.lookup("mine"); !ok || e.value != 5 || e.rev != 5 {
		t.Errorf("own write at revision 5 after a replacement at 3: %+v, %v; want 5", e, ok)
	}
	if e := c.get("k"); e.value != 3 {
		t.Errorf("k = %d, want the snapshot's 3", e.value)
	}
	if _, ok := c.ahead[5]; !ok {
		t.Error("own commit 5 no longer waits for revisions 4 and 5 to become contiguous")
	}
}

// A replacement asked for because the copy diverged can load a snapshot
// whose reply arrives after events beyond it: the copy already repaired
// itself (an earlier catch-up replaced it) and went on applying the
// store's history. If the copy applied the snapshot's very commit at its
// revision, the snapshot is old news; replacing would move every read
// back, losing writes the copy had shown, its own acknowledged ones among
// them (the Redis failover history with WAIT found this: a read-your-writes
// and a monotonic-reads violation).
func TestReplacementOlderThanEventsAppliedDuringTheLoad(t *testing.T) {
	c := newCache[int]("me")
	parent := ""
	for r := uint64(1); r <= 5; r++ {
		commit := "c" + string(rune('0'+r))
		origin := "other"
		if r == 5 {
			origin = "me"
		}
		if v := c.applyEvent(backend.Head{Epoch: "e1", Revision: r, Commit: commit, Parent: parent}, origin, []update[int]{{key: "k", value: int(r)}}); v != applied {
			t.Fatalf("applyEvent(%d) = %v", r, v)
		}
		parent = commit
	}
	// The load began at revision 2 and read the store at 3.
	c.applySnapshot(backend.Head{Epoch: "e1", Revision: 3, Commit: "c3", Parent: "c2"}, "e1", 2,
		[]snapshotEntry[int]{{update: update[int]{key: "k", value: 3}, rev: 3, commit: "c3"}}, true)
	if e := c.get("k"); e.value != 5 || c.applied != 5 {
		t.Errorf("after a replacement older than the copy's own chain: k=%d, applied %d; want 5, 5", e.value, c.applied)
	}
	// Another commit at 3 is another history: it replaces the copy.
	c.applySnapshot(backend.Head{Epoch: "e1", Revision: 3, Commit: "x3", Parent: "c2"}, "e1", 5,
		[]snapshotEntry[int]{{update: update[int]{key: "k", value: 30}, rev: 3, commit: "x3"}}, true)
	if e := c.get("k"); e.value != 30 || c.applied != 3 {
		t.Errorf("after a replacement of another history: k=%d, applied %d; want 30, 3", e.value, c.applied)
	}
}

// get returns a key's entry in the current view.
func (c *cache[T]) get(key string) entry[T] {
	e, _ := c.lookup(key)
	return e
}

// lookup returns a key's entry in the current view and whether it is there.
func (c *cache[T]) lookup(key string) (entry[T], bool) { return c.current().entries.Get(key) }

// A copy that kept a write the store lost in an asynchronous failover — an
// own acknowledged write that the new history never wrote again — can
// reach the store's revision and commit id while holding it: a snapshot at
// exactly that revision then shows other contents, and must replace the
// copy (TestHistoryFailover/async found instances converged in revision
// but not in values). A snapshot that agrees changes nothing.
func TestSnapshotAtTheCopysRevisionWithOtherContents(t *testing.T) {
	c := newCache[int]("me")
	c.applyEvent(backend.Head{Epoch: "e1", Revision: 1, Commit: "c1"}, "other", []update[int]{{key: "k", value: 1}})
	c.applyEvent(backend.Head{Epoch: "e1", Revision: 2, Commit: "c2", Parent: "c1"}, "other", []update[int]{{key: "j", value: 2}})
	same := []snapshotEntry[int]{
		{update: update[int]{key: "k", value: 1}, rev: 1, commit: "c1"},
		{update: update[int]{key: "j", value: 2}, rev: 2, commit: "c2"},
	}
	if got := c.applySnapshot(backend.Head{Epoch: "e1", Revision: 2, Commit: "c2"}, "e1", 2, same, false); got != snapshotCovered {
		t.Fatalf("a snapshot equal to the copy: %s, want covered", got)
	}
	// A key the copy deleted at or below the snapshot's revision is not
	// one the snapshot lacks.
	c.applyEvent(backend.Head{Epoch: "e1", Revision: 3, Commit: "c3", Parent: "c2"}, "other", []update[int]{{key: "gone", value: 3}})
	c.applyEvent(backend.Head{Epoch: "e1", Revision: 4, Commit: "c4", Parent: "c3"}, "other", []update[int]{{key: "gone", deleted: true}})
	if got := c.applySnapshot(backend.Head{Epoch: "e1", Revision: 4, Commit: "c4"}, "e1", 4, same, false); got != snapshotCovered {
		t.Fatalf("a snapshot without a key the copy deleted: %s, want covered", got)
	}
	// The store's history at 4 never had the write of k at 1 the copy has.
	other := []snapshotEntry[int]{{update: update[int]{key: "j", value: 2}, rev: 2, commit: "c2"}}
	if got := c.applySnapshot(backend.Head{Epoch: "e1", Revision: 4, Commit: "c4"}, "e1", 4, other, false); got != replacedContradicted {
		t.Fatalf("a snapshot at the copy's revision without its k: %s, want a replacement", got)
	}
	if _, ok := c.lookup("k"); ok || c.applied != 4 {
		t.Errorf("after the replacement k is still there (applied %d)", c.applied)
	}
}

// TestHistoryGrowsAsAFullOneRemembers applies revisions one by one and in
// jumps, and checks after each that the growing history answers passed
// and appliedCommit for every revision around applied as a history of
// historyLength slots from the start would.
func TestHistoryGrowsAsAFullOneRemembers(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	c := newCache[int]("self")
	c.epoch = "e"
	var full [historyLength]historySlot
	rev := uint64(0)
	for i := range 5000 {
		switch r := rng.IntN(100); {
		case r < 90:
			rev++
		case r < 97:
			rev += uint64(rng.IntN(3 * historyLength))
		default:
			rev += uint64(rng.IntN(40))
		}
		commit := fmt.Sprintf("c%d", rev)
		c.setApplied(rev, commit)
		full[rev%historyLength] = historySlot{rev, commit}
		if i%50 != 0 {
			continue
		}
		for q := max(1, rev-min(rev, 2*historyLength)); q <= rev; q++ {
			known := full[q%historyLength].rev == q
			if got := c.passed(q, "other"); got != !known {
				t.Fatalf("after %d: passed(%d, other) = %v, want %v", rev, q, got, !known)
			}
			if got := c.appliedCommit("e", q, fmt.Sprintf("c%d", q)); got != known {
				t.Fatalf("after %d: appliedCommit(%d) = %v, want %v (history of %d slots)", rev, q, got, known, len(c.history))
			}
		}
	}
	if len(c.history) != historyLength {
		t.Errorf("history of %d slots after 5000 revisions, want %d", len(c.history), historyLength)
	}
	fresh := newCache[int]("self")
	fresh.setApplied(7, "c7")
	if len(fresh.history) > 16 {
		t.Errorf("history of %d slots after one revision, want at most 16", len(fresh.history))
	}
}

// TestHistoryKeepsWhatAFullRingKeeps: a catch-up that skips revisions
// must not make the growing history forget a revision that the full ring
// of historyLength slots would still hold.
func TestHistoryKeepsWhatAFullRingKeeps(t *testing.T) {
	c := newCache[int]("self")
	c.epoch = "e"
	c.setApplied(5, "c5")
	c.setApplied(1125, "c1125") // a catch-up that skips revisions; 1125%1024 != 5
	if !c.appliedCommit("e", 5, "c5") {
		t.Fatalf("rev 5 forgotten (history of %d slots); a full ring keeps it (slot 5 vs 101)", len(c.history))
	}
}
