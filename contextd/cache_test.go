package contextd

import (
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
	if e, ok := c.entries["k"]; !ok || e.value != 7 || e.rev != 3 {
		t.Errorf("after a snapshot loaded before the context existed, k = %+v, %v; want the own write 7 at revision 3", e, ok)
	}
	if epoch, _ := c.head(); epoch != "e1" {
		t.Errorf("epoch = %q, want e1 kept", epoch)
	}

	// The same empty snapshot, loaded when the copy already knew the
	// epoch: the store lost the context, and the copy follows it.
	c.applySnapshot(empty, "e1", 0, nil, false)
	if _, ok := c.entries["k"]; ok {
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
	if e := c.entries["k"]; e.value != 5 || c.applied != 5 {
		t.Fatalf("a snapshot of the copy's own past changed it: k=%d, applied %d", e.value, c.applied)
	}

	// Another history at revision 3 (the load began at 3, so the store
	// did not go back as far as the copy can tell from revisions).
	other := backend.Head{Epoch: "e1", Revision: 3, Commit: "x3", Parent: "c2"}
	c.applySnapshot(other, "e1", 3, []snapshotEntry[int]{{update: update[int]{key: "k", value: 30}, rev: 3, commit: "x3"}}, false)
	if e := c.entries["k"]; e.value != 30 || c.applied != 3 || c.commit != "x3" {
		t.Errorf("after a snapshot of another history: k=%d, applied %d, commit %q; want 30, 3, x3", e.value, c.applied, c.commit)
	}
}
