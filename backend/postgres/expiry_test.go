package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/postgres"
)

// keyTTL is the TTL of keys these tests wait to expire: long enough for
// the calls a test makes before it on a loaded machine under -race.
const keyTTL = 300 * time.Millisecond

// waitPast sleeps until ttl and a margin have passed since committed, when
// the commit that set the TTL had returned (the server read its clock
// before that; same machine, same clock): time must pass, there is nothing
// to wait for.
func waitPast(committed time.Time, ttl time.Duration) {
	time.Sleep(time.Until(committed.Add(ttl + 20*time.Millisecond)))
}

func ttlBatch() backend.Batch {
	return backend.Batch{Codec: "json", Ops: []backend.Op{
		{Key: "k", Value: []byte(`"v"`), TTL: keyTTL}, {Key: "j", Value: []byte(`"v"`)}}}
}

// TestExpiryWhileNoInstanceRuns: a key expires while no Backend is open.
// Nothing deletes it then; the next commit of its context, by a Backend
// made later, first deletes it by a revision of its own (logged and
// notified, with no origin), and Expire does the same for another context.
func TestExpiryWhileNoInstanceRuns(t *testing.T) {
	ctx := t.Context()
	db := newDB(t)
	first, err := postgres.Open(ctx, db.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	h1, err := first.Commit(ctx, "a", ttlBatch())
	if err != nil {
		t.Fatal(err)
	}
	h1b, err := first.Commit(ctx, "b", ttlBatch())
	if err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	waitPast(committed, keyTTL)

	later := newBackend(t, db, nil)
	snap, err := later.Load(ctx, "a")
	if err != nil || snap.Revision != h1.Revision || len(snap.Entries) != 2 {
		t.Fatalf("Load before any commit = revision %d, %d entries, %v; want revision %d with k still there (no commit deleted it yet)", snap.Revision, len(snap.Entries), err, h1.Revision)
	}
	ch := backend.DefaultChannel("a")
	sub, err := later.Subscribe(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	h, err := later.CommitAndPublish(ctx, "a", backend.Batch{Codec: "json", Ops: []backend.Op{{Key: "x", Value: []byte(`"y"`)}}}, ch)
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
		m, err := nextMsg(ctx, sub)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := backend.DecodeEvent(m.Payload)
		if err != nil || ev.Revision != want {
			t.Fatalf("notified event %d: revision %d, %v; want %d", i, ev.Revision, err, want)
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

// commitV1SQL is the commit of releases before key expiry: their commit()
// function, which leaves the expiry columns alone.
const commitV1SQL = `SELECT r_epoch, r_rev, r_commit, r_parent FROM contextd.commit(
	$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)`

// commitV1 commits puts as a process of a release before key expiry does.
func commitV1(t *testing.T, pool *pgxpool.Pool, name, id string, kv ...string) backend.Head {
	t.Helper()
	var keys, values [][]byte
	var changes []backend.Change
	for i := 0; i+1 < len(kv); i += 2 {
		keys, values = append(keys, []byte(kv[i])), append(values, []byte(kv[i+1]))
		changes = append(changes, backend.Change{Key: kv[i], Value: []byte(kv[i+1])})
	}
	none := [][]byte{}
	var h backend.Head
	var rev int64
	err := pool.QueryRow(t.Context(), commitV1SQL, []byte(name), "json", "old-epoch", id,
		keys, values, none, keys, none, []int64{}, []string{}, true, none, []string{}, []int64{},
		backend.EncodeEventBody("old", changes), true, 1000, "", 7999).Scan(&h.Epoch, &rev, &h.Commit, &h.Parent)
	if err != nil {
		t.Fatalf("commit of release 1: %v", err)
	}
	h.Revision = uint64(rev)
	return h
}

// TestOldSchemaGainsExpiry: a schema made by a release before key expiry
// (version 1 without the expiry columns) is used as it is, keeps its data
// and version, and gains the columns and functions once; a commit by a
// process of that release, which calls its own commit() and does not know
// the columns, clears a key's expiry instead of leaving the key to expire.
func TestOldSchemaGainsExpiry(t *testing.T) {
	ctx := t.Context()
	db := newDB(t)
	pool, err := pgxpool.New(ctx, db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, postgres.SchemaV1SQL("contextd"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h0 := commitV1(t, pool, "c", "old1", "old", `"v"`)

	b := newBackend(t, db, nil)
	snap, err := b.Load(ctx, "c")
	if err != nil || snap.Head != h0 || len(snap.Entries) != 1 || snap.Entries[0].Key != "old" || !snap.Entries[0].Expires.IsZero() {
		t.Fatalf("Load of the old schema = %+v, %v; want key old at %+v, no expiry", snap, err, h0)
	}
	var version int
	// contract: takes nothing; returns the schema's version.
	if err := pool.QueryRow(ctx, `SELECT version FROM contextd.schema_version`).Scan(&version); err != nil || version != 1 {
		t.Errorf("the schema version after first use is %d (%v); want 1, kept", version, err)
	}
	// Another Backend finds the additions there.
	if _, err := newBackend(t, db, nil).Revision(ctx, "c"); err != nil {
		t.Fatal(err)
	}

	h, err := b.Commit(ctx, "c", backend.Batch{Codec: "json", Ops: []backend.Op{
		{Key: "rewritten", Value: []byte(`"1"`), TTL: keyTTL}, {Key: "gone", Value: []byte(`"1"`), TTL: keyTTL}}})
	if err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	if e, err := b.Get(ctx, "c", "rewritten"); err != nil || e.Expires.IsZero() {
		t.Fatalf("Get of a key put with a TTL = %+v, %v; want its expiry", e, err)
	}
	// A process of the old release rewrites the key.
	if old := commitV1(t, pool, "c", "old2", "rewritten", `"2"`); old.Revision != h.Revision+1 {
		t.Fatalf("the old release's commit made revision %d; want %d", old.Revision, h.Revision+1)
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

// TestEarlierCommitTTLReplaced: a schema made by a build whose commit_ttl
// raised a failed condition, and so returned no r_conflict, gets the
// current commit_ttl on first use (CREATE OR REPLACE cannot change a
// function's result columns: it is dropped and made again).
func TestEarlierCommitTTLReplaced(t *testing.T) {
	ctx := t.Context()
	db := newDB(t)
	if _, err := newBackend(t, db, nil).Revision(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// contract: takes nothing; returns nothing. commit_ttl with the
	// arguments and result columns of that build, and a body that fails.
	if _, err := pool.Exec(ctx, `
DROP FUNCTION contextd.commit_ttl(bytea, text, text, text, bytea[], bytea[], bytea[], bytea[],
	bytea[], bigint[], text[], bool, bytea[], text[], bigint[], bytea, bool, int, text, int, bigint[], text);
CREATE FUNCTION contextd.commit_ttl(
	p_name bytea, p_codec text, p_epoch text, p_commit text,
	p_put_keys bytea[], p_put_values bytea[], p_del_keys bytea[], p_op_keys bytea[],
	p_cond_keys bytea[], p_cond_revs bigint[], p_cond_commits text[],
	p_check_locks bool, p_lease_keys bytea[], p_lease_tokens text[], p_lease_fences bigint[],
	p_body bytea, p_log bool, p_log_len int, p_channel text, p_notify_max int,
	p_put_ttls bigint[], p_reap_commit text,
	OUT r_epoch text, OUT r_rev bigint, OUT r_commit text, OUT r_parent text)
LANGUAGE plpgsql AS $fn$
BEGIN
	RAISE EXCEPTION 'the earlier commit_ttl';
END
$fn$;`); err != nil {
		t.Fatal(err)
	}

	b := newBackend(t, db, nil)
	h1, err := b.Commit(ctx, "c", ttlBatch())
	if err != nil {
		t.Fatalf("a commit after first use of a schema with the earlier commit_ttl: %v", err)
	}
	committed := time.Now()
	waitPast(committed, keyTTL)
	refused := backend.Batch{Codec: "json", Ops: []backend.Op{{Key: "j", Value: []byte(`"w"`)}},
		Conditions: []backend.Condition{{Key: "k", Revision: h1.Revision}}}
	if _, err := b.Commit(ctx, "c", refused); !errors.Is(err, backend.ErrConflict) {
		t.Fatalf("a commit conditional on expired k = %v; want ErrConflict", err)
	}
	if h, err := b.Revision(ctx, "c"); err != nil || h.Revision != h1.Revision+1 {
		t.Errorf("the head after the refusal = %+v, %v; want revision %d, the reap of k", h, err, h1.Revision+1)
	}
}
