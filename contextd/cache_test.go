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
