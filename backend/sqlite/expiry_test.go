package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/sqlite"
)

// keyTTL is the TTL of keys these tests wait to expire: long enough for
// the calls a test makes before it on a loaded machine under -race.
const keyTTL = 300 * time.Millisecond

// waitPast sleeps until ttl and a margin have passed since committed, when
// the commit that set the TTL had returned: time must pass, there is
// nothing to wait for.
func waitPast(committed time.Time, ttl time.Duration) {
	time.Sleep(time.Until(committed.Add(ttl + 20*time.Millisecond)))
}

// TestExpiryWhileNoProcessRuns: a key expires while no process has the
// file open. Nothing deletes it then; the next commit of its context, by a
// process opened later, first deletes it by a revision of its own (logged
// and published with no origin), and Expire does the same for another
// context.
func TestExpiryWhileNoProcessRuns(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ttl.db")
	first, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ttlPut := backend.Batch{Codec: "json", Ops: []backend.Op{
		{Key: "k", Value: []byte(`"v"`), TTL: keyTTL}, {Key: "j", Value: []byte(`"v"`)}}}
	h1 := mustCommit(t, first, "a", ttlPut)
	h1b := mustCommit(t, first, "b", ttlPut)
	committed := time.Now()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	waitPast(committed, keyTTL)

	later := openBackend(t, path, nil)
	snap, err := later.Load(ctx, "a")
	if err != nil || snap.Revision != h1.Revision || len(snap.Entries) != 2 {
		t.Fatalf("Load before any commit = revision %d, %d entries, %v; want revision %d with k still there (no commit deleted it yet)", snap.Revision, len(snap.Entries), err, h1.Revision)
	}
	ch := backend.DefaultChannel("a")
	sub := mustSubscribe(t, later, ch)
	h, err := later.CommitAndPublish(ctx, "a", put("x", `"y"`), ch)
	if err != nil {
		t.Fatal(err)
	}
	if h.Revision != h1.Revision+2 {
		t.Errorf("the commit after k expired is revision %d; want %d (the expiry's revision first)", h.Revision, h1.Revision+2)
	}
	evs, err := later.ChangesSince(ctx, "a", h1.Epoch, h1.Revision)
	if err != nil || len(evs) != 2 {
		t.Fatalf("ChangesSince = %d events, %v; want the expiry and the commit", len(evs), err)
	}
	if e := evs[0]; e.Revision != h1.Revision+1 || e.Origin != "" || e.Parent != h1.Commit || len(e.Changes) != 1 || e.Changes[0].Key != "k" || !e.Changes[0].Deleted {
		t.Errorf("the logged expiry = %+v; want the delete of k at revision %d, no origin, after commit %q", e, h1.Revision+1, h1.Commit)
	}
	if e := evs[1]; e.Parent != evs[0].Commit || e.Commit != h.Commit {
		t.Errorf("the logged commit = %+v; want commit %q after the expiry's %q", e.Head, h.Commit, evs[0].Commit)
	}
	for i, want := range []uint64{h1.Revision + 1, h1.Revision + 2} {
		m := next(t, sub)
		ev, err := backend.DecodeEvent(m.Payload)
		if err != nil || ev.Revision != want {
			t.Fatalf("published event %d: revision %d, %v; want %d", i, ev.Revision, err, want)
		}
	}
	snap, err = later.Load(ctx, "a")
	if err != nil || snap.Head != h || len(snap.Entries) != 2 {
		t.Errorf("Load after the commit = %+v, %v; want j and x at %+v", snap, err, h)
	}

	ev, next, now, err := later.Expire(ctx, "b", "")
	if err != nil || ev.Revision != h1b.Revision+1 || len(ev.Changes) != 1 || ev.Changes[0].Key != "k" || ev.Time.IsZero() {
		t.Fatalf("Expire of b = %+v, %v; want the delete of k at revision %d, with its time", ev, err, h1b.Revision+1)
	}
	if !next.IsZero() || now.Before(committed) {
		t.Errorf("Expire of b: next %v, now %v; want no next deadline, now after %v", next, now, committed)
	}
	if again, _, _, err := later.Expire(ctx, "b", ""); err != nil || again.Revision != 0 {
		t.Errorf("a second Expire = %+v, %v; want nothing", again.Head, err)
	}
}

// sqlPutV1 is the put of releases before key expiry: it leaves the expiry
// columns alone.
//
//	takes:   ?1 name, ?2 key, ?3 value, ?4 revision, ?5 commit id
//	returns: nothing
const sqlPutV1 = `INSERT INTO contextd_entries (name, key, value, revision, commit_id)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (name, key) DO UPDATE SET
  value = excluded.value,
  revision = excluded.revision,
  commit_id = excluded.commit_id`

// TestOldLayoutGainsExpiry: a file made by a release before key expiry
// (layout version 1 without the expiry columns) opens, keeps its data and
// version, gains the columns once; and a put by a process of that release,
// which does not know the columns, clears a key's expiry instead of leaving
// the key to expire.
func TestOldLayoutGainsExpiry(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	db := rawDB(t, path)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, ddl := range sqlite.LayoutV1 {
		if _, err := tx.Exec(ddl); err != nil {
			t.Fatal(err)
		}
	}
	// contract: takes nothing; the head of context c at revision 1, as an
	// old release's commit leaves it.
	if _, err := tx.Exec(`INSERT INTO contextd_contexts (name, epoch, revision, commit_id, codec) VALUES ('c', 'e1', 1, 'c1', 'json')`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(sqlPutV1, "c", "old", []byte(`"v"`), 1, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	b := openBackend(t, path, nil)
	snap, err := b.Load(ctx, "c")
	if err != nil || snap.Revision != 1 || len(snap.Entries) != 1 || snap.Entries[0].Key != "old" || !snap.Entries[0].Expires.IsZero() {
		t.Fatalf("Load of the old file = %+v, %v; want key old at revision 1, no expiry", snap, err)
	}
	var version int
	// contract: takes nothing; returns the layout version.
	if err := db.QueryRow(`SELECT version FROM contextd_schema`).Scan(&version); err != nil || version != 1 {
		t.Errorf("the layout version after Open is %d (%v); want 1, kept", version, err)
	}
	// A second Open finds the columns there and adds nothing.
	openBackend(t, path, nil)

	h := mustCommit(t, b, "c", backend.Batch{Codec: "json", Ops: []backend.Op{
		{Key: "rewritten", Value: []byte(`"1"`), TTL: keyTTL}, {Key: "gone", Value: []byte(`"1"`), TTL: keyTTL}}})
	committed := time.Now()
	if e, err := b.Get(ctx, "c", "rewritten"); err != nil || e.Expires.IsZero() {
		t.Fatalf("Get of a key put with a TTL = %+v, %v; want its expiry", e, err)
	}
	// An old process rewrites the key, as its release does, without
	// knowing of expiry.
	if _, err := db.Exec(`UPDATE contextd_contexts SET revision = ?1, commit_id = 'old2', parent_id = ?2 WHERE name = 'c'`, h.Revision+1, h.Commit); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(sqlPutV1, "c", "rewritten", []byte(`"2"`), h.Revision+1, "old2"); err != nil {
		t.Fatal(err)
	}
	if e, err := b.Get(ctx, "c", "rewritten"); err != nil || !e.Expires.IsZero() {
		t.Errorf("Get after an old release rewrote the key = %+v, %v; want no expiry", e, err)
	}
	waitPast(committed, keyTTL)
	ev, _, _, err := b.Expire(ctx, "c", "")
	if err != nil || len(ev.Changes) != 1 || ev.Changes[0].Key != "gone" {
		t.Fatalf("Expire = %+v, %v; want only gone deleted", ev, err)
	}
	snap, err = b.Load(ctx, "c")
	if err != nil || len(snap.Entries) != 2 {
		t.Errorf("Load after the expiry = %+v, %v; want old and rewritten", snap.Entries, err)
	}
}
